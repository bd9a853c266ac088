"""C51 as one pure function: ``make_train(cfg) -> C51``; ``c51.train(key)`` runs the whole run.

Categorical DQN (reference §1.5 "N C51 Atari"; CleanRL ``c51_atari.py``) read top to bottom like ``ppo.py``: act
(epsilon-greedy on Q = sum_k p_k z_k, one transition per env step into the replay buffer), targets (the target
network's pmf of the greedy next action, projected onto the support, ``c51_losses``), loss (cross-entropy),
update, metrics. One unit, ``q``, with a target copy; Adam (eps 0.01/32), no clipping by default.

An *update* is ``steps_per_update`` env steps (per env), scanned in ``steps_per_update // train_frequency``
blocks; a block is ``train_frequency`` env steps followed by one gradient step on a replay batch (once learning
has started), then the hard target copy when due. Intervention schedules and heavy metrics count updates.

Schedules are functions of the (unbatched) update index and block index, never of per-seed arrays, so the
``lax.cond`` s that skip gradient steps before ``learning_starts`` and copy the target stay real branches under
``vmap`` over seeds. Every seed takes the same number of env steps per block, so these equal the global step
(``state.steps``) conditions exactly, and modular arithmetic keeps them exact past 2^31 env steps:

* gradient step after the block that brings the global step to >= ``learning_starts``;
* target copy after every block that brings it to a multiple of ``target_network_frequency`` (which must be a
  multiple of ``num_envs * train_frequency``), as CleanRL's ``global_step % target_network_frequency == 0``.

Deviations from the reference, both documented choices: actions are uniformly random while the global step is
below ``learning_starts`` (CleanRL's C51 already acts epsilon-greedily then, with epsilon still near 1; the
untrained network's greedy action carries no information); truncation bootstraps (the replay stores the
pre-reset ``final_obs`` as next observation and only ``terminated`` as done).

Heavy metrics (and the activations the interventions read) use ``metric_batch`` transitions drawn uniformly, with
replacement, from the filled part of the buffer after the update's last gradient step (reference N: encoder
output on 2048 replay samples). A static size keeps shapes fixed; early in a run the draw repeats transitions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from plasticine_jax.algos import learner as L
from plasticine_jax.algos import rng
from plasticine_jax.algos.c51_config import C51Config, validate
from plasticine_jax.algos.c51_losses import c51_loss, categorical_projection, make_support, q_values
from plasticine_jax.algos.pqn_losses import epsilon_greedy, linear_schedule
from plasticine_jax.algos.replay import replay_add, replay_init, replay_sample
from plasticine_jax.algos.state import RunState, StepCounter
from plasticine_jax.envs import Box, make_env
from plasticine_jax.envs.tasks import ContinualConfig, TaskSchedule
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention, apply_net_transforms
from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.nets.qnet import make_q_network

LEARNER_HPARAMS = ("learning_rate", "gamma", "eps_start", "eps_end")
UNIT = "q"


def take_action(x: jax.Array, action: jax.Array) -> jax.Array:
    """Entry ``action[b]`` of ``x[b]``: x [B, A, ...], action [B] int -> [B, ...]."""
    idx = action.astype(jnp.int32).reshape(action.shape[0], *([1] * (x.ndim - 1)))
    return jnp.take_along_axis(x, idx, axis=1)[:, 0]


def steps_below(steps: StepCounter, n: int) -> jax.Array:
    """Exact ``steps < n`` for a 64-bit step counter and a static ``0 <= n < 2^32``."""
    return (steps.hi == 0) & (steps.lo < jnp.uint32(n))


def mod_mul(x: jax.Array, c: int, k: int) -> jax.Array:
    """``(x * c) mod k`` exactly in uint32, for traced ``0 <= x < k`` and static ``c >= 0``, ``1 <= k < 2^31``
    (double-and-add over the bits of ``c``: every intermediate stays below 2^32)."""
    c %= k
    x = jnp.asarray(x, jnp.uint32) % jnp.uint32(k)
    r = jnp.zeros((), jnp.uint32)
    for bit in reversed(range(c.bit_length())):
        r = (r * jnp.uint32(2)) % jnp.uint32(k)
        if (c >> bit) & 1:
            r = (r + x) % jnp.uint32(k)
    return r


def block_count_mod(update_idx: jax.Array, block_idx: jax.Array, blocks_per_update: int, k: int) -> jax.Array:
    """``(update_idx * blocks_per_update + block_idx + 1) mod k``: the number of blocks completed after this
    block, modulo ``k``, without int32 overflow however long the run."""
    u = jnp.asarray(update_idx, jnp.uint32) % jnp.uint32(k)
    b = (jnp.asarray(block_idx, jnp.uint32) + jnp.uint32(1)) % jnp.uint32(k)
    return (mod_mul(u, blocks_per_update, k) + b) % jnp.uint32(k)


def blocks_reached(update_idx: jax.Array, block_idx: jax.Array, blocks_per_update: int, n: int) -> jax.Array:
    """``update_idx * blocks_per_update + block_idx + 1 >= n`` (static ``n``) without overflow."""
    need = n - 1 - jnp.asarray(block_idx, jnp.int32)  # update_idx * blocks_per_update >= need
    return jnp.asarray(update_idx, jnp.int32) >= -((-need) // blocks_per_update)


@dataclass(frozen=True)
class C51(L.UpdateLoop):
    """A compiled-run recipe (the ``Learner`` protocol). All methods are pure and vmappable."""

    cfg: C51Config
    env_id: str
    total_timesteps: int
    iv: Intervention
    metrics: MetricsConfig
    env: Any
    unit: L.UnitSpec
    num_updates: int
    warnings: tuple[str, ...] = ()
    algo: str = "c51"
    tasks: TaskSchedule | None = None
    continual: ContinualConfig | None = None
    HPARAMS: ClassVar[tuple[str, ...]] = LEARNER_HPARAMS

    @property
    def env_steps_per_update(self) -> int:
        return self.cfg.num_envs * self.cfg.steps_per_update

    @property
    def network(self):
        return self.unit.network

    @property
    def support(self) -> jax.Array:
        return make_support(self.cfg.v_min, self.cfg.v_max, self.cfg.n_atoms)

    @property
    def blocks_per_update(self) -> int:
        """Gradient steps (blocks of ``train_frequency`` env steps) per update."""
        return self.cfg.steps_per_update // self.cfg.train_frequency

    @property
    def block_env_steps(self) -> int:
        """Env steps (all envs) per block, i.e. per gradient step."""
        return self.cfg.num_envs * self.cfg.train_frequency

    @property
    def target_period_blocks(self) -> int:
        """Blocks between hard target copies."""
        return self.cfg.target_network_frequency // self.block_env_steps

    @property
    def learning_starts_blocks(self) -> int:
        """Blocks after which the global step first reaches ``learning_starts``."""
        return -(-self.cfg.learning_starts // self.block_env_steps)

    @property
    def eps_decay_steps(self) -> float:
        return max(self.cfg.eps_fraction * self.total_timesteps, 1.0)

    # ------------------------------------------------------------------ setup
    def _example_transition(self) -> dict:
        obs = jnp.zeros(self.env.observation_space.shape, self.env.observation_space.dtype)
        return {"obs": obs, "action": jnp.zeros((), jnp.int32), "reward": jnp.zeros((), jnp.float32),
                "next_obs": obs, "terminated": jnp.zeros((), jnp.float32)}

    def init(self, key: jax.Array, hparams: dict | None = None) -> RunState:
        """Fresh carry for one seed (empty replay buffer). ``hparams`` overrides ``default_hparams()``."""
        hp = L.resolve_hparams(self.default_hparams(), hparams)
        k_net, k_env, k_iv, k_run = rng.split(key, 4)  # hashed once, not in each init kernel
        unit = L.init_unit(self.unit, self.iv, k_net, hp, k_iv)
        obs, env_state = self.env.reset(k_env)
        return RunState({UNIT: unit}, env_state, obs, k_run, StepCounter.zero(), jnp.zeros((), jnp.int32),
                        jnp.zeros((), jnp.int32), buffer=replay_init(self.cfg.buffer_size, self._example_transition()))

    # ------------------------------------------------------------------ act
    def _q(self, params, unit, obs) -> jax.Array:
        """Q = sum_k softmax(logits)_k z_k, [B, A]."""
        return q_values(self.network.apply(params, unit.net_state, obs), self.support)

    def eval_action(self, units: dict, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Evaluation policy (``algos.evaluate``): epsilon-greedy with ``cfg.eval_epsilon``."""
        unit = units[UNIT]
        return epsilon_greedy(key, self._q(unit.params, unit, obs), self.cfg.eval_epsilon)

    def _epsilon(self, hp: dict, steps: StepCounter) -> jax.Array:
        """1 (uniform random) before ``learning_starts``, then the linear schedule at the global step."""
        eps = linear_schedule(hp["eps_start"], hp["eps_end"], self.eps_decay_steps, steps.as_float())
        return jnp.where(steps_below(steps, self.cfg.learning_starts), 1.0, eps)

    def _env_step(self, env, unit, carry, _):
        """One step of every env (epsilon evaluated at the global step before it, CleanRL), into the buffer."""
        env_state, obs, steps, buffer, key = carry
        key, k_act, k_env = jax.random.split(key, 3)
        eps = self._epsilon(unit.hp, steps)
        action = epsilon_greedy(k_act, self._q(unit.params, unit, obs), eps)
        next_obs, env_state, reward, terminated, _, info = env.step(k_env, env_state, action)
        buffer = replay_add(buffer, {"obs": obs, "action": action, "reward": reward, "next_obs": info["final_obs"],
                                     "terminated": terminated.astype(jnp.float32)})
        ep = (info["episode_done"], info["episode_return"], info["episode_length"])
        return (env_state, next_obs, steps.add(self.cfg.num_envs), buffer, key), (ep, eps)

    # ------------------------------------------------------------------ targets
    def _targets(self, unit, batch: dict) -> jax.Array:
        """Projected target pmf: the target network's pmf of its greedy next action (CleanRL c51)."""
        next_pmfs = jax.nn.softmax(self.network.apply(unit.target, unit.net_state, batch["next_obs"]), axis=-1)
        next_action = jnp.argmax(jnp.sum(next_pmfs * self.support, axis=-1), axis=-1)
        return categorical_projection(take_action(next_pmfs, next_action), batch["reward"], batch["terminated"],
                                      unit.hp["gamma"], self.support)

    # ------------------------------------------------------------------ loss
    def _loss(self, params, unit, batch, target_pmf):
        logits_taken = take_action(self.network.apply(params, unit.net_state, batch["obs"]), batch["action"])
        loss = c51_loss(logits_taken, target_pmf)
        return loss, {"losses/loss": loss, "losses/q_values": q_values(logits_taken, self.support).mean()}

    # ------------------------------------------------------------------ update
    def _train_step(self, unit, buffer, key):
        """One gradient step on a replay batch."""
        k_sample, k_step = jax.random.split(key)
        batch = replay_sample(buffer, k_sample, self.cfg.batch_size)
        target_pmf = self._targets(unit, batch)
        loss_fn = L.loss_with_interventions(self.unit, self.iv, self._loss)
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(unit.params, unit, batch, target_pmf)
        unit, norm = L.apply_grads(self.unit, self.iv, unit, grads, k_step)
        return unit, {**aux, L.gradient_norm_key(self.unit): norm}

    def _block(self, update_idx, carry, block_idx):
        """``train_frequency`` env steps, then one gradient step (once learning started), then the target copy
        (when due)."""
        unit, env_state, obs, steps, buffer, key = carry
        env = self.env_at(update_idx)
        (env_state, obs, steps, buffer, key), (ep, eps) = jax.lax.scan(
            lambda c, x: self._env_step(env, unit, c, x), (env_state, obs, steps, buffer, key), None,
            self.cfg.train_frequency)
        key, k_train = jax.random.split(key)
        nb = self.blocks_per_update
        learn = blocks_reached(update_idx, block_idx, nb, self.learning_starts_blocks)
        unit, aux = L.step_or_skip(learn, lambda u: self._train_step(u, buffer, k_train), unit)
        copy = block_count_mod(update_idx, block_idx, nb, self.target_period_blocks) == 0
        unit = jax.lax.cond(copy, lambda u: u.replace(target=u.params), lambda u: u, unit)
        return (unit, env_state, obs, steps, buffer, key), (aux, learn, ep, eps[-1])

    def _update(self, state: RunState, update_idx: jax.Array):
        """One update: blocks of (env steps, gradient step, target copy), interventions, metrics."""
        unit = state.units[UNIT]
        params_before = unit.params
        carry = (unit, state.env_state, state.obs, state.steps, state.buffer, state.key)
        carry, (aux, learned, ep, eps) = jax.lax.scan(
            lambda c, b: self._block(update_idx, c, b), carry, jnp.arange(self.blocks_per_update, dtype=jnp.int32))
        unit, env_state, obs, steps, buffer, key = carry

        # activations once, on a replay sample: read by interventions and metrics alike
        key, k_metric, k_iv = jax.random.split(key, 3)
        metric_obs = replay_sample(buffer, k_metric, self.cfg.metric_batch)["obs"]
        heavy_due = L.metrics_due(self.metrics, update_idx)
        acts = L.unit_activations(self.unit, unit, (metric_obs,), heavy_due | self.activations_due(update_idx))
        unit = L.after_update(self.unit, self.iv, unit, k_iv, update_idx, acts)

        # ------------------------------------------------------------------ metrics
        # means over the update's gradient steps; none yet (before learning_starts): NaN (no measurement, like a
        # heavy metric that is not due; the driver's divergence check reads parameters, not NaN losses)
        n = learned.sum()
        out = {k: jnp.where(n > 0, (v * learned).sum() / jnp.maximum(n, 1), jnp.nan) for k, v in aux.items()}
        out["charts/gradient_steps"] = n.astype(jnp.float32)
        out.update(L.unit_weight_metrics(self.unit, unit, params_before))
        out.update(L.episode_stats(*ep))
        out["charts/epsilon"] = eps[-1]
        out.update(L.unit_heavy_metrics(self.unit, self.metrics, acts, heavy_due))
        state = state.replace(units={UNIT: unit}, env_state=env_state, obs=obs, key=key, steps=steps,
                              update=state.update + 1, buffer=buffer)
        return state, out

    # ------------------------------------------------------------------ driver-facing description
    def config_dict(self) -> dict:
        return {"c51": asdict(self.cfg), "net_after_interventions": asdict(self.network.cfg)}


def make_train(
    cfg: C51Config,
    env_id: str = "gymnax:CartPole-v1",
    total_timesteps: int = 100_000,
    interventions: list[Intervention] | tuple[Intervention, ...] | Intervention = (),
    metrics: MetricsConfig | None = None,
    continual: ContinualConfig | None = None,
) -> C51:
    """Build a ``C51``: ``jax.jit(jax.vmap(c51.train))(keys)`` trains independent seeds."""
    validate(cfg)
    iv = L.compose_interventions(interventions)
    metrics = metrics or MetricsConfig()
    per_update = cfg.num_envs * cfg.steps_per_update
    tasks = L.task_schedule(continual, per_update, total_timesteps)
    env = make_env(env_id, cfg.num_envs, continual)
    if isinstance(env.action_space, Box):
        raise ConfigError(f"c51 needs a discrete action space; use td3 or sac for {env_id}")
    num_updates = total_timesteps // per_update
    if num_updates < 1:
        raise ConfigError(f"--total-timesteps {total_timesteps} is less than one update ({per_update} env steps); "
                          f"raise it or lower --c51.steps-per-update")
    network = make_q_network(apply_net_transforms(cfg.net, iv), env.observation_space.shape, env.action_space.n,
                             cfg.n_atoms)
    steps = cfg.steps_per_update // cfg.train_frequency
    hp0 = L.learner_hparams(cfg, LEARNER_HPARAMS, iv)
    unit = L.make_unit_spec(UNIT, network, iv, hp0, learning_rate=_constant_lr, max_grad_norm=cfg.max_grad_norm,
                            adam_eps=cfg.adam_eps, num_updates=num_updates, steps_per_update=steps,
                            env_steps_per_update=per_update, target=True, clip=cfg.clip,
                            task_updates=tasks.task_updates if tasks else 0)
    warns = L.schedule_warnings(iv, metrics, num_updates, tasks)
    run_steps = num_updates * per_update
    if cfg.learning_starts >= run_steps:
        warns += (f"--c51.learning-starts {cfg.learning_starts} is never reached in this run of {run_steps} env "
                  f"steps, so no gradient step is taken; lower it below {run_steps}",)
    if cfg.target_network_frequency > run_steps:
        warns += (f"--c51.target-network-frequency {cfg.target_network_frequency} never fires in this run of "
                  f"{run_steps} env steps (the target keeps its initial params); lower it to at most {run_steps}",)
    return C51(cfg, env_id, total_timesteps, iv, metrics, env, unit, num_updates, warns, tasks=tasks,
               continual=continual if tasks else None)


def _constant_lr(hp):
    """No annealing (CleanRL c51); a schedule so the learning rate stays a vmappable hyperparameter."""
    lr = hp["learning_rate"]
    return lambda count: lr * jnp.ones_like(count, jnp.float32)
