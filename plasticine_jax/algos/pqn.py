"""PQN as one pure function: ``make_train(cfg) -> PQN``; ``pqn.train(key)`` runs the whole run.

Parallel Q-learning (reference §1.3, ``S/pqn_atari_vanilla.py``; CleanRL ``pqn_atari_envpool.py``) read top to
bottom like ``ppo.py``: act (epsilon-greedy rollout of ``num_envs x num_steps``), targets (Q(lambda) on the
rollout, ``pqn_losses``), loss (MSE on Q(s, a)), update (epochs x minibatches), metrics. One unit, ``q``: the
Q-network, trained by RAdam behind a global-norm clip of 10, learning rate annealed linearly to 0. No target
network and no replay buffer. Interventions are one composed ``Intervention`` called at its hook points; the
shared unit machinery lives in ``algos.learner``.

Truncation (a documented fix, ``bootstrap_truncation``; the reference's envpool ``gym`` API folds time limits
into ``done``): a truncated step's next observation is already the reset one, so its bootstrap
``gamma * max_a Q(final_obs)`` is folded into the reward -- exactly as ``ppo.py`` folds ``V(final_obs)`` -- and
the step counts as done for the targets, which cuts the lambda-trace there. With the flag off, truncation is a
termination (the reference's behaviour).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from plasticine_jax.algos import learner as L
from plasticine_jax.algos import rng, shuffle
from plasticine_jax.algos.pqn_config import PQNConfig, validate
from plasticine_jax.algos.pqn_losses import epsilon_greedy, linear_schedule, pqn_loss, q_lambda_targets
from plasticine_jax.algos.state import RunState, StepCounter
from plasticine_jax.envs import Box, make_env
from plasticine_jax.envs.tasks import ContinualConfig, TaskSchedule
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention, apply_net_transforms
from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.nets.qnet import make_q_network

LEARNER_HPARAMS = ("learning_rate", "gamma", "q_lambda", "eps_start", "eps_end")
UNIT = "q"


@struct.dataclass
class Transition:
    obs: jax.Array
    action: jax.Array
    q_max: jax.Array  # max_a Q(s_t, a) of the pre-update network
    reward: jax.Array  # r + gamma * max_a Q(final_obs) where truncated (bootstrap_truncation)
    done: jax.Array  # cuts the Q(lambda) trace: terminated, or truncated (bootstrap already in the reward)
    ep_done: jax.Array
    ep_return: jax.Array
    ep_length: jax.Array


def take_action_values(q: jax.Array, action: jax.Array) -> jax.Array:
    """Q(s, a) of the taken actions: q [..., A], action [...] int -> [...]."""
    return jnp.take_along_axis(q, action[..., None].astype(jnp.int32), axis=-1)[..., 0]


def epsilon_at(hp: dict, steps: StepCounter, decay_steps: float) -> jax.Array:
    """The exploration rate at a global env step: linear from eps_start to eps_end over ``decay_steps``."""
    return linear_schedule(hp["eps_start"], hp["eps_end"], decay_steps, steps.as_float())


@dataclass(frozen=True)
class PQN(L.UpdateLoop):
    """A compiled-run recipe (the ``Learner`` protocol). All methods are pure and vmappable."""

    cfg: PQNConfig
    env_id: str
    total_timesteps: int
    iv: Intervention
    metrics: MetricsConfig
    env: Any
    unit: L.UnitSpec
    num_updates: int
    warnings: tuple[str, ...] = ()
    algo: str = "pqn"
    tasks: TaskSchedule | None = None
    continual: ContinualConfig | None = None
    HPARAMS: ClassVar[tuple[str, ...]] = LEARNER_HPARAMS

    @property
    def env_steps_per_update(self) -> int:
        return self.cfg.num_envs * self.cfg.num_steps

    @property
    def network(self):
        return self.unit.network

    @property
    def eps_decay_steps(self) -> float:
        """Env steps over which epsilon decays (eps_fraction of the run; at least one step)."""
        return max(self.cfg.eps_fraction * self.total_timesteps, 1.0)

    # ------------------------------------------------------------------ setup
    def init(self, key: jax.Array, hparams: dict | None = None) -> RunState:
        """Fresh carry for one seed. ``hparams`` overrides entries of ``default_hparams()``."""
        hp = L.resolve_hparams(self.default_hparams(), hparams)
        k_net, k_env, k_iv, k_run = rng.split(key, 4)  # hashed once, not in each init kernel
        unit = L.init_unit(self.unit, self.iv, k_net, hp, k_iv)
        obs, env_state = self.env.reset(k_env)
        return RunState({UNIT: unit}, env_state, obs, k_run, StepCounter.zero(), jnp.zeros((), jnp.int32),
                        jnp.zeros((), jnp.int32))

    # ------------------------------------------------------------------ act
    def _q(self, params, unit, obs) -> jax.Array:
        return self.network.apply(params, unit.net_state, obs)

    def eval_action(self, units: dict, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Evaluation policy (``algos.evaluate``): epsilon-greedy with ``cfg.eval_epsilon``."""
        unit = units[UNIT]
        return epsilon_greedy(key, self._q(unit.params, unit, obs), self.cfg.eval_epsilon)

    def _rollout(self, state: RunState, env):
        """``num_steps`` epsilon-greedy steps of every env; epsilon is evaluated at the global env step after
        the step (CleanRL increments ``global_step`` before computing it), one coin per env."""
        unit = state.units[UNIT]
        hp = unit.hp

        def env_step(carry, _):
            env_state, obs, steps, key = carry
            key, k_act, k_env = jax.random.split(key, 3)
            q = self._q(unit.params, unit, obs)
            steps = steps.add(self.cfg.num_envs)
            eps = epsilon_at(hp, steps, self.eps_decay_steps)
            action = epsilon_greedy(k_act, q, eps)
            next_obs, env_state, reward, terminated, truncated, info = env.step(k_env, env_state, action)
            if self.cfg.bootstrap_truncation:  # truncated: bootstrap from max_a Q(final_obs), folded into r
                final_q = self._q(unit.params, unit, info["final_obs"]).max(-1)
                reward = reward + hp["gamma"] * jax.lax.stop_gradient(final_q) * truncated
            t = Transition(obs, action, q.max(-1), reward, jnp.logical_or(terminated, truncated),
                           info["episode_done"], info["episode_return"], info["episode_length"])
            return (env_state, next_obs, steps, key), (t, eps)

        (env_state, obs, _, key), (traj, eps) = jax.lax.scan(
            env_step, (state.env_state, state.obs, state.steps, state.key), None, self.cfg.num_steps)
        return traj, env_state, obs, key, eps[-1]

    # ------------------------------------------------------------------ targets
    def _targets(self, unit, traj: Transition, last_obs: jax.Array) -> jax.Array:
        """Q(lambda) returns of the rollout, bootstrapped from a fresh max_a Q(s_T) (reference :270-284)."""
        last_q_max = self._q(unit.params, unit, last_obs).max(-1)
        return q_lambda_targets(traj.reward, traj.done, traj.q_max, last_q_max, unit.hp["gamma"],
                                unit.hp["q_lambda"])

    # ------------------------------------------------------------------ loss
    def _loss(self, params, unit, mb):
        q_taken = take_action_values(self._q(params, unit, mb["obs"]), mb["action"])
        loss = pqn_loss(q_taken, mb["target"])
        return loss, {"losses/td_loss": loss, "losses/q_values": q_taken.mean()}

    # ------------------------------------------------------------------ update
    def _update_minibatch(self, unit, mb_and_key):
        mb, key = mb_and_key
        loss_fn = L.loss_with_interventions(self.unit, self.iv, self._loss)
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(unit.params, unit, mb)
        unit, norm = L.apply_grads(self.unit, self.iv, unit, grads, key)
        return unit, {**aux, L.gradient_norm_key(self.unit): norm}

    def _update(self, state: RunState, update_idx: jax.Array):
        """One iteration: rollout, Q(lambda), epochs x minibatches, interventions, metrics."""
        cfg = self.cfg
        traj, env_state, last_obs, key, eps = self._rollout(state, self.env_at(update_idx))
        unit = state.units[UNIT]
        targets = self._targets(unit, traj, last_obs)
        batch_size = self.env_steps_per_update
        batch = {"obs": traj.obs, "action": traj.action, "target": targets}
        batch = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), batch)
        params_before = unit.params

        def epoch(carry, _):
            unit, key = carry
            key, k_perm, k_steps = jax.random.split(key, 3)
            shuffled = shuffle.minibatches(k_perm, batch, cfg.num_minibatches)
            keys = jax.random.split(k_steps, cfg.num_minibatches)
            unit, aux = jax.lax.scan(self._update_minibatch, unit, (shuffled, keys))
            return (unit, key), aux

        (unit, key), aux = jax.lax.scan(epoch, (unit, key), None, cfg.update_epochs)

        # activations once, on the whole rollout batch (reference §4.2: PQN's metrics use the full batch)
        heavy_due = L.metrics_due(self.metrics, update_idx)
        acts = L.unit_activations(self.unit, unit, (batch["obs"],), heavy_due | self.activations_due(update_idx))
        key, k_iv = jax.random.split(key)
        unit = L.after_update(self.unit, self.iv, unit, k_iv, update_idx, acts)

        # ------------------------------------------------------------------ metrics
        out = {k: v.mean() for k, v in aux.items()}
        out.update(L.unit_weight_metrics(self.unit, unit, params_before))
        out.update(L.episode_stats(traj.ep_done, traj.ep_return, traj.ep_length))
        out["charts/epsilon"] = eps
        frac = 1.0 - update_idx.astype(jnp.float32) / self.num_updates if cfg.anneal_lr else 1.0
        out["charts/learning_rate"] = unit.hp["learning_rate"] * frac
        out.update(L.unit_heavy_metrics(self.unit, self.metrics, acts, heavy_due))
        state = state.replace(units={UNIT: unit}, env_state=env_state, obs=last_obs, key=key,
                              steps=state.steps.add(batch_size), update=state.update + 1)
        return state, out

    # ------------------------------------------------------------------ driver-facing description
    def config_dict(self) -> dict:
        return {"pqn": asdict(self.cfg), "net_after_interventions": asdict(self.network.cfg)}


def make_train(
    cfg: PQNConfig,
    env_id: str = "gymnax:CartPole-v1",
    total_timesteps: int = 500_000,
    interventions: list[Intervention] | tuple[Intervention, ...] | Intervention = (),
    metrics: MetricsConfig | None = None,
    continual: ContinualConfig | None = None,
) -> PQN:
    """Build a ``PQN``: ``jax.jit(jax.vmap(pqn.train))(keys)`` trains independent seeds."""
    validate(cfg)
    iv = L.compose_interventions(interventions)
    metrics = metrics or MetricsConfig()
    batch = cfg.num_envs * cfg.num_steps
    tasks = L.task_schedule(continual, batch, total_timesteps)
    env = make_env(env_id, cfg.num_envs, continual)
    if isinstance(env.action_space, Box):
        raise ConfigError(f"pqn needs a discrete action space; use td3 or sac for {env_id}")
    num_updates = total_timesteps // batch
    if num_updates < 1:
        raise ConfigError(f"--total-timesteps {total_timesteps} is less than one rollout ({batch} steps); raise it")
    network = make_q_network(apply_net_transforms(cfg.net, iv), env.observation_space.shape, env.action_space.n)
    steps = cfg.update_epochs * cfg.num_minibatches
    hp0 = L.learner_hparams(cfg, LEARNER_HPARAMS, iv)
    unit = L.make_unit_spec(UNIT, network, iv, hp0, learning_rate=L.linear_lr(cfg.anneal_lr, steps, num_updates),
                            max_grad_norm=cfg.max_grad_norm, adam_eps=cfg.adam_eps, num_updates=num_updates,
                            steps_per_update=steps, env_steps_per_update=batch, optimizer=cfg.optimizer, clip=cfg.clip,
                            task_updates=tasks.task_updates if tasks else 0)
    warns = L.schedule_warnings(iv, metrics, num_updates, tasks)
    return PQN(cfg, env_id, total_timesteps, iv, metrics, env, unit, num_updates, warns, tasks=tasks,
               continual=continual if tasks else None)
