"""PPO as one pure function: ``make_train(cfg) -> PPO``; ``ppo.train(key)`` runs the whole run.

Reads top to bottom like PureJaxRL's make_train: act (rollout), targets (GAE), loss (``ppo_losses``),
update (epochs x minibatches), metrics. One unit, ``agent``: the actor-critic network, trained by one
optimizer whose global-norm clip spans actor and critic (CleanRL). Interventions are one composed
``Intervention`` called at its hook points; the shared unit machinery lives in ``algos.learner``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from plasticine_jax.algos import learner as L
from plasticine_jax.algos import rng, shuffle
from plasticine_jax.algos.ppo_config import PPOConfig
from plasticine_jax.algos.ppo_losses import distribution, gae, ppo_loss
from plasticine_jax.algos.state import RunState, StepCounter
from plasticine_jax.envs import Box, make_env
from plasticine_jax.envs.normalize import wrap_env
from plasticine_jax.envs.tasks import ContinualConfig, TaskSchedule
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention, apply_net_transforms
from plasticine_jax.metrics.collect import feature_metrics, metric_prefix, torso_features
from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.nets import make_network

LEARNER_HPARAMS = ("learning_rate", "ent_coef", "vf_coef", "clip_coef", "gamma", "gae_lambda")
UNIT = "agent"


@struct.dataclass
class Transition:
    obs: jax.Array
    action: jax.Array
    logp: jax.Array
    value: jax.Array
    reward: jax.Array  # r + gamma * V(final_obs) where truncated (bootstrap_truncation)
    done: jax.Array
    ep_done: jax.Array
    ep_return: jax.Array
    ep_length: jax.Array
    achievements: Any = None  # Craftax: per-env achievement flags of the episode that ended at this step


@dataclass(frozen=True)
class PPO(L.UpdateLoop):
    """A compiled-run recipe (the ``Learner`` protocol). All methods are pure and vmappable."""

    cfg: PPOConfig
    env_id: str
    total_timesteps: int
    iv: Intervention
    metrics: MetricsConfig
    env: Any
    unit: L.UnitSpec
    continuous: bool
    num_updates: int
    warnings: tuple[str, ...] = ()
    algo: str = "ppo"
    tasks: TaskSchedule | None = None
    continual: ContinualConfig | None = None
    HPARAMS: ClassVar[tuple[str, ...]] = LEARNER_HPARAMS

    @property
    def env_steps_per_update(self) -> int:
        return self.cfg.num_envs * self.cfg.num_steps

    @property
    def network(self):
        return self.unit.network

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
    def _rollout(self, state: RunState, env):
        unit = state.units[UNIT]
        net = self.network
        box = env.action_space if self.continuous else None

        def env_step(carry, _):
            env_state, obs, key = carry
            key, k_act, k_env = jax.random.split(key, 3)
            policy_out, value = net.apply(unit.params, unit.net_state, obs)
            sample, log_prob, _ = distribution(policy_out, self.continuous)
            action = sample(k_act)
            logp = log_prob(action)
            env_action = jnp.clip(action, box.low_array, box.high_array) if self.continuous else action
            next_obs, env_state, reward, terminated, truncated, info = env.step(k_env, env_state, env_action)
            if self.cfg.bootstrap_truncation:  # truncated: bootstrap from V(final_obs), folded into the reward
                _, final_value = net.apply(unit.params, unit.net_state, info["final_obs"])
                reward = reward + unit.hp["gamma"] * jax.lax.stop_gradient(final_value) * truncated
            t = Transition(obs, action, logp, value, reward, jnp.logical_or(terminated, truncated),
                           info["episode_done"], info["episode_return"], info["episode_length"],
                           info.get("achievements"))
            return (env_state, next_obs, key), t

        (env_state, obs, key), traj = jax.lax.scan(
            env_step, (state.env_state, state.obs, state.key), None, self.cfg.num_steps)
        return traj, env_state, obs, key

    def eval_action(self, units: dict, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Evaluation policy (``algos.evaluate``): a sample from the policy, clipped to a Box's bounds."""
        unit = units[UNIT]
        policy_out, _ = self.network.apply(unit.params, unit.net_state, obs)
        action = distribution(policy_out, self.continuous)[0](key)
        if self.continuous:
            box = self.env.action_space
            action = jnp.clip(action, box.low_array, box.high_array)
        return action

    # ------------------------------------------------------------------ loss
    def _loss(self, params, unit, mb):
        hp = unit.hp
        policy_out, value = self.network.apply(params, unit.net_state, mb["obs"])
        _, log_prob, entropy = distribution(policy_out, self.continuous)
        return ppo_loss(log_prob(mb["action"]), mb["logp"], mb["adv"], value, mb["value"], mb["ret"], entropy(),
                        hp["clip_coef"], hp["ent_coef"], hp["vf_coef"], self.cfg.norm_adv, self.cfg.clip_vloss)

    # ------------------------------------------------------------------ update
    def _minibatch_features(self, unit, obs) -> dict:
        """The reference's cadence (§4.2): feature metrics on every minibatch before its step."""
        _, acts = self.network.apply_with_activations(unit.params, unit.net_state, obs)
        feats = torso_features(self.network, acts)
        groups = self.network.feature_groups()
        out = {}
        for t in self.network.torsos:
            act = next(g.activation for g in self.network.groups if g.name == groups[t.name])
            for k, v in feature_metrics(feats[t.name], act, self.metrics).items():
                out[metric_prefix(self.unit.tag, t.tag) + k] = v
        return out

    def _update_minibatch(self, unit, mb_and_key):
        mb, key = mb_and_key
        feats = self._minibatch_features(unit, mb["obs"]) if self.metrics.cadence == "minibatch" else {}
        loss_fn = L.loss_with_interventions(self.unit, self.iv, self._loss)
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(unit.params, unit, mb)
        unit, norm = L.apply_grads(self.unit, self.iv, unit, grads, key)
        return unit, {**aux, L.gradient_norm_key(self.unit): norm, **feats}

    def _update(self, state: RunState, update_idx: jax.Array):
        """One iteration: rollout, GAE, epochs x minibatches, interventions, metrics."""
        cfg = self.cfg
        traj, env_state, last_obs, key = self._rollout(state, self.env_at(update_idx))
        unit = state.units[UNIT]
        _, last_value = self.network.apply(unit.params, unit.net_state, last_obs)
        adv, ret = gae(traj.reward, traj.value, traj.done, last_value, unit.hp["gamma"], unit.hp["gae_lambda"])
        batch = {"obs": traj.obs, "action": traj.action, "logp": traj.logp, "value": traj.value,
                 "adv": adv, "ret": ret}
        batch_size = self.env_steps_per_update
        batch = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), batch)
        params_before = unit.params

        def epoch(carry, _):
            unit, key = carry
            key, k_perm, k_steps = jax.random.split(key, 3)
            shuffled = shuffle.minibatches(k_perm, batch, cfg.num_minibatches)
            keys = jax.random.split(k_steps, cfg.num_minibatches)
            unit, aux = jax.lax.scan(self._update_minibatch, unit, (shuffled, keys))
            return (unit, key), (aux, shuffled["obs"][-1])

        (unit, key), (aux, last_mb_obs) = jax.lax.scan(epoch, (unit, key), None, cfg.update_epochs)

        # activations once, on the update's last minibatch: read by interventions and metrics alike
        heavy_due = L.metrics_due(self.metrics, update_idx)
        acts = L.unit_activations(self.unit, unit, (last_mb_obs[-1],), heavy_due | self.activations_due(update_idx))
        key, k_iv = jax.random.split(key)
        unit = L.after_update(self.unit, self.iv, unit, k_iv, update_idx, acts)

        # ------------------------------------------------------------------ metrics
        out = {k: v.mean() for k, v in aux.items()}
        out["plasticity/policy_entropy"] = out["losses/entropy"]
        out.update(L.unit_weight_metrics(self.unit, unit, params_before))
        out["losses/explained_variance"] = 1.0 - jnp.var(ret.reshape(-1) - traj.value.reshape(-1)) / jnp.var(ret)
        out.update(L.episode_stats(traj.ep_done, traj.ep_return, traj.ep_length))
        if traj.achievements is not None:
            out.update(L.achievement_rates(self.env.achievement_names, traj.ep_done, traj.achievements))
        frac = 1.0 - update_idx.astype(jnp.float32) / self.num_updates if cfg.anneal_lr else 1.0
        out["charts/learning_rate"] = unit.hp["learning_rate"] * frac
        out.update(L.unit_heavy_metrics(self.unit, self.metrics, acts, heavy_due,
                                        features=self.metrics.cadence == "update"))
        state = state.replace(units={UNIT: unit}, env_state=env_state, obs=last_obs, key=key,
                              steps=state.steps.add(batch_size), update=state.update + 1)
        return state, out

    # ------------------------------------------------------------------ driver-facing description
    def config_dict(self) -> dict:
        return {"ppo": asdict(self.cfg), "net_after_interventions": asdict(self.network.cfg)}


def make_train(
    cfg: PPOConfig,
    env_id: str = "gymnax:CartPole-v1",
    total_timesteps: int = 500_000,
    interventions: list[Intervention] | tuple[Intervention, ...] | Intervention = (),
    metrics: MetricsConfig | None = None,
    continual: ContinualConfig | None = None,
) -> PPO:
    """Build a ``PPO``: ``jax.jit(jax.vmap(ppo.train))(keys)`` trains independent seeds."""
    iv = L.compose_interventions(interventions)
    metrics = metrics or MetricsConfig()
    batch = cfg.num_envs * cfg.num_steps
    if batch % cfg.num_minibatches:
        raise ConfigError(f"num_envs*num_steps={batch} is not divisible by num_minibatches={cfg.num_minibatches}")
    num_updates = total_timesteps // batch
    if num_updates < 1:
        raise ConfigError(f"--total-timesteps {total_timesteps} is less than one rollout ({batch} steps); raise it")
    tasks = L.task_schedule(continual, batch, total_timesteps)
    env = wrap_env(make_env(env_id, cfg.num_envs, continual), cfg.normalize_obs, cfg.normalize_reward, cfg.gamma)
    continuous = isinstance(env.action_space, Box)
    action_dim = env.action_space.shape[0] if continuous else env.action_space.n
    network = make_network(apply_net_transforms(cfg.net, iv), env.observation_space.shape, action_dim, continuous)
    steps = cfg.update_epochs * cfg.num_minibatches
    hp0 = L.learner_hparams(cfg, LEARNER_HPARAMS, iv)
    unit = L.make_unit_spec(UNIT, network, iv, hp0, learning_rate=L.linear_lr(cfg.anneal_lr, steps, num_updates),
                            max_grad_norm=cfg.max_grad_norm, adam_eps=cfg.adam_eps, num_updates=num_updates,
                            steps_per_update=steps, env_steps_per_update=batch, clip=cfg.clip,
                            task_updates=tasks.task_updates if tasks else 0)
    warns = L.schedule_warnings(iv, metrics, num_updates, tasks)
    return PPO(cfg, env_id, total_timesteps, iv, metrics, env, unit, continuous, num_updates, warns,
               tasks=tasks, continual=continual if tasks else None)
