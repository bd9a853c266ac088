"""TD3 as one pure function: ``make_train(cfg) -> TD3``; ``td3.train(key)`` runs the whole run.

Reads top to bottom like PPO: act (uniform random warm-up, then the actor plus Gaussian exploration noise),
targets (smoothed clipped double-Q, ``td3_losses``), loss, update, metrics. Reference §1.4 (CleanRL's
td3_continuous_action). Two units, each with its own Adam (eps 1e-8, no clipping by default) and a target
network: ``actor`` (deterministic tanh policy) and ``critic`` (twin Q towers). One update =
``steps_per_update`` env steps (per env); once ``learning_starts`` env steps have been taken, each env step
is followed by one critic step on a replay batch, and every ``policy_frequency``-th critic step by one actor
step and the Polyak updates of both targets. The replay buffer lives in ``RunState.buffer``.

Every branch on "has learning started" / "is an actor step due" depends only on the (unbatched) update index
and the scan index, so the ``lax.cond``s stay real branches under ``vmap`` over seeds.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from plasticine_jax.algos import learner as L
from plasticine_jax.algos import rng
from plasticine_jax.algos.replay import replay_add, replay_init, replay_sample
from plasticine_jax.algos.state import RunState, StepCounter, Unit
from plasticine_jax.algos.td3_config import TD3Config, validate
from plasticine_jax.algos.td3_losses import polyak, td3_actor_loss, td3_critic_loss, td3_target
from plasticine_jax.envs import Box, make_env
from plasticine_jax.envs.tasks import ContinualConfig, TaskSchedule
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention, apply_net_transforms
from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.nets.continuous import make_deterministic_actor, make_twin_critic

LEARNER_HPARAMS = ("actor_lr", "critic_lr", "gamma", "tau", "policy_noise", "noise_clip", "exploration_noise")
ACTOR, CRITIC = "actor", "critic"
TRAINED = "_trained"  # per-step mask in the scanned aux: 1 where that optimizer step happened


@struct.dataclass
class Transition:
    """One replay record. ``next_obs`` is the pre-reset observation where the episode ended; ``done`` is
    true termination only (truncation bootstraps) unless ``bootstrap_truncation`` is off."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    done: jax.Array


# ---------------------------------------------------------------------------------------------------------
# helpers shared with SAC
# ---------------------------------------------------------------------------------------------------------


def continuous_space(env: Any, env_id: str, algo: str) -> Box:
    """The env's Box action space, or a one-line ConfigError for a discrete one."""
    space = env.action_space
    if not isinstance(space, Box):
        raise ConfigError(f"{algo} needs a continuous (Box) action space but {env_id} has {space.n} discrete "
                          f"actions; use --algo pqn, c51 or ppo")
    if len(space.shape) != 1:
        raise ConfigError(f"{algo} needs a 1-D Box action space; {env_id} has shape {space.shape}")
    return space


class ActionBounds:
    """Static (numpy) action bounds of a Box env, shared by TD3 and SAC: scale and bias map a tanh output in
    [-1, 1] onto [low, high]."""

    @property
    def action_low(self) -> np.ndarray:
        return self.env.action_space.low_array

    @property
    def action_high(self) -> np.ndarray:
        return self.env.action_space.high_array

    @property
    def action_scale(self) -> np.ndarray:
        return (self.action_high - self.action_low) / 2.0

    @property
    def action_bias(self) -> np.ndarray:
        return (self.action_high + self.action_low) / 2.0


def constant_lr(name: str):
    """``learning_rate(hp) -> schedule(count)``: a constant (vmappable) learning rate from ``hp[name]``."""
    return lambda hp: (lambda count: hp[name] * jnp.ones_like(count, jnp.float32))


def maybe(pred: jax.Array | bool, fn, operand):
    """``fn(operand) -> (operand', aux)`` when ``pred``, else ``(operand, zeros like aux)`` (a real branch when
    ``pred`` is unbatched; ``pred is True`` = always due, no branch). ``aux`` carries ``TRAINED`` = 1 so masked
    means can skip the zero branch."""
    def run(x):
        out, aux = fn(x)
        return out, {**aux, TRAINED: jnp.ones((), jnp.float32)}

    return run(operand) if pred is True else L.step_or_skip(pred, run, operand)


def masked_mean(aux: dict) -> dict:
    """Mean over the steps where ``TRAINED`` (NaN where none did)."""
    m = aux[TRAINED]
    n = m.sum()
    return {k: jnp.where(n > 0, (v * m).sum() / jnp.maximum(n, 1.0), jnp.nan)
            for k, v in aux.items() if k != TRAINED}


def rename_intervention_loss(aux: dict, unit: str) -> dict:
    """Both units may add ``losses/intervention_loss``; keep them apart as ``losses/<unit>_intervention_loss``."""
    return {(f"losses/{unit}_intervention_loss" if k == "losses/intervention_loss" else k): v for k, v in aux.items()}


def first_training_step(learning_starts: int, num_envs: int) -> int:
    """Per-env step index s from which training runs: the first s with s * num_envs >= learning_starts."""
    return -(-learning_starts // num_envs)


def env_transition(env, key, env_state, obs, action, bootstrap_truncation: bool):
    """One env step -> (next_obs, env_state, replay Transition, episode info)."""
    next_obs, env_state, reward, terminated, truncated, info = env.step(key, env_state, action)
    done = jnp.logical_or(terminated, truncated)
    real_next = jnp.where(done.reshape(-1, *[1] * (obs.ndim - 1)), info["final_obs"], next_obs)
    stored_done = terminated if bootstrap_truncation else done
    t = Transition(obs, action, reward, real_next, stored_done.astype(jnp.float32))
    ep = (info["episode_done"], info["episode_return"], info["episode_length"])
    return next_obs, env_state, t, ep


def init_buffer(capacity: int, obs_shape, action_dim: int):
    example = Transition(jnp.zeros(obs_shape, jnp.float32), jnp.zeros((action_dim,), jnp.float32),
                         jnp.zeros((), jnp.float32), jnp.zeros(obs_shape, jnp.float32), jnp.zeros((), jnp.float32))
    return replay_init(capacity, example)


@dataclass(frozen=True)
class TD3(ActionBounds, L.UpdateLoop):
    """A compiled-run recipe (the ``Learner`` protocol). All methods are pure and vmappable."""

    cfg: TD3Config
    env_id: str
    total_timesteps: int
    iv: Intervention
    metrics: MetricsConfig
    env: Any
    actor: L.UnitSpec
    critic: L.UnitSpec
    num_updates: int
    warnings: tuple[str, ...] = ()
    algo: str = "td3"
    tasks: TaskSchedule | None = None
    continual: ContinualConfig | None = None
    HPARAMS: ClassVar[tuple[str, ...]] = LEARNER_HPARAMS

    @property
    def env_steps_per_update(self) -> int:
        return self.cfg.num_envs * self.cfg.steps_per_update

    # ------------------------------------------------------------------ setup
    def init(self, key: jax.Array, hparams: dict | None = None) -> RunState:
        """Fresh carry for one seed: both units (targets = copies of the online nets), env, empty replay."""
        hp = L.resolve_hparams(self.default_hparams(), hparams)
        k_actor, k_critic, k_env, k_iva, k_ivc, k_run = rng.split(key, 6)
        actor = L.init_unit(self.actor, self.iv, k_actor, hp, k_iva)
        critic = L.init_unit(self.critic, self.iv, k_critic, hp, k_ivc)
        obs, env_state = self.env.reset(k_env)
        buffer = init_buffer(self.cfg.buffer_size, self.env.observation_space.shape, self.action_low.shape[0])
        return RunState({ACTOR: actor, CRITIC: critic}, env_state, obs, k_run, StepCounter.zero(),
                        jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), buffer)

    # ------------------------------------------------------------------ act
    def _policy(self, params: dict, net_state: dict, obs: jax.Array) -> jax.Array:
        """Deterministic action in the env's bounds."""
        return self.actor.network.apply(params, net_state, obs) * self.action_scale + self.action_bias

    def eval_action(self, units: dict, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Evaluation policy (``algos.evaluate``): the deterministic actor, no exploration noise."""
        actor = units[ACTOR]
        return self._policy(actor.params, actor.net_state, obs)

    def _act(self, actor: Unit, obs: jax.Array, key: jax.Array, warmup: jax.Array) -> jax.Array:
        """Uniform random actions during warm-up, else pi(s) + N(0, (exploration_noise * scale)^2), clipped."""
        k_rand, k_noise = rng.split(key)
        shape = (self.cfg.num_envs, self.action_low.shape[0])
        rand = jax.random.uniform(k_rand, shape, minval=self.action_low, maxval=self.action_high)
        noise = jax.random.normal(k_noise, shape) * actor.hp["exploration_noise"] * self.action_scale
        explore = jnp.clip(self._policy(actor.params, actor.net_state, obs) + noise, self.action_low, self.action_high)
        return jnp.where(warmup, rand, explore)

    # ------------------------------------------------------------------ targets
    def _target(self, actor: Unit, critic: Unit, batch: Transition, key: jax.Array) -> jax.Array:
        hp = critic.hp
        return td3_target(key, lambda o: self._policy(actor.target, actor.net_state, o),
                          lambda o, a: self.critic.network.apply(critic.target, critic.net_state, o, a),
                          batch.next_obs, batch.reward, batch.done, hp["gamma"], hp["policy_noise"],
                          hp["noise_clip"], self.action_low, self.action_high, self.action_scale)

    # ------------------------------------------------------------------ loss
    def _critic_loss(self, params, unit: Unit, batch: Transition, y: jax.Array):
        q1, q2 = self.critic.network.apply(params, unit.net_state, batch.obs, batch.action)
        return td3_critic_loss(q1, q2, y)

    def _actor_loss(self, params, unit: Unit, critic: Unit, obs: jax.Array):
        action = self._policy(params, unit.net_state, obs)
        q1, _ = self.critic.network.apply(critic.params, critic.net_state, obs, action)
        loss = td3_actor_loss(q1)
        return loss, {"losses/actor_loss": loss}

    # ------------------------------------------------------------------ update
    def _critic_step(self, units, batch: Transition, key: jax.Array):
        actor, critic = units
        k_target, k_step = rng.split(key)
        y = self._target(actor, critic, batch, k_target)
        loss_fn = L.loss_with_interventions(self.critic, self.iv, self._critic_loss)
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(critic.params, critic, batch, y)
        critic, norm = L.apply_grads(self.critic, self.iv, critic, grads, k_step)
        return (actor, critic), {**rename_intervention_loss(aux, CRITIC), L.gradient_norm_key(self.critic): norm}

    def _actor_step(self, units, obs: jax.Array, key: jax.Array):
        """One actor step (its after_step hooks, e.g. SnP, fire here), then Polyak updates of both targets."""
        actor, critic = units
        loss_fn = L.loss_with_interventions(self.actor, self.iv, self._actor_loss)
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(actor.params, actor, critic, obs)
        actor, norm = L.apply_grads(self.actor, self.iv, actor, grads, key)
        tau = actor.hp["tau"]
        actor = actor.replace(target=polyak(actor.target, actor.params, tau))
        critic = critic.replace(target=polyak(critic.target, critic.params, tau))
        return (actor, critic), {**rename_intervention_loss(aux, ACTOR), L.gradient_norm_key(self.actor): norm}

    def _train_step(self, units, buffer, key: jax.Array, actor_due: jax.Array | bool):
        """One critic step on a replay batch; the delayed actor step (and target updates) when due."""
        k_batch, k_critic, k_actor = rng.split(key, 3)
        batch = replay_sample(buffer, k_batch, self.cfg.batch_size)
        units, caux = self._critic_step(units, batch, k_critic)
        units, aaux = maybe(actor_due, lambda u: self._actor_step(u, batch.obs, k_actor), units)
        return units, {CRITIC: caux, ACTOR: aaux}

    def _env_step(self, env, carry, s: jax.Array):
        """Env step ``s`` (per-env global index, unbatched): act, step, store, then train once learning started."""
        units, env_state, obs, buffer, key = carry
        key, k_act, k_env, k_train = rng.split(key, 4)
        s0 = first_training_step(self.cfg.learning_starts, self.cfg.num_envs)
        action = self._act(units[0], obs, k_act, s < s0)
        next_obs, env_state, t, ep = env_transition(env, k_env, env_state, obs, action,
                                                    self.cfg.bootstrap_truncation)
        buffer = replay_add(buffer, t)
        # every policy_frequency-th critic step (every step: statically due, no branch)
        actor_due = True if self.cfg.policy_frequency == 1 else (s - s0 + 1) % self.cfg.policy_frequency == 0
        units, aux = maybe(s >= s0, lambda u: self._train_step(u, buffer, k_train, actor_due), units)
        caux, aaux = {**aux[CRITIC], TRAINED: aux[TRAINED]}, aux[ACTOR]
        return (units, env_state, next_obs, buffer, key), (caux, aaux, ep)

    def _update(self, state: RunState, update_idx: jax.Array):
        """One update: steps_per_update env steps (each with its train step), interventions, metrics."""
        cfg = self.cfg
        actor, critic = state.units[ACTOR], state.units[CRITIC]
        before = {ACTOR: actor.params, CRITIC: critic.params}
        s = update_idx * cfg.steps_per_update + jnp.arange(cfg.steps_per_update, dtype=jnp.int32)
        ((actor, critic), env_state, obs, buffer, key), (caux, aaux, ep) = jax.lax.scan(
            functools.partial(self._env_step, self.env_at(update_idx)),
            ((actor, critic), state.env_state, state.obs, state.buffer, state.key), s)

        # activations once per unit, on a static metric batch from replay: read by interventions and metrics
        key, k_mb, k_iva, k_ivc = rng.split(key, 4)
        mb = replay_sample(buffer, k_mb, cfg.metric_batch)
        heavy_due = L.metrics_due(self.metrics, update_idx)
        due = heavy_due | self.activations_due(update_idx)
        acts_a = L.unit_activations(self.actor, actor, (mb.obs,), due)
        acts_c = L.unit_activations(self.critic, critic, (mb.obs, mb.action), due)  # the critic's own features
        # scheduled interventions sit inside the training branch (reference §3.0): none before learning starts
        started = s[-1] >= first_training_step(cfg.learning_starts, cfg.num_envs)
        actor, critic = jax.lax.cond(
            started,
            lambda u: (L.after_update(self.actor, self.iv, u[0], k_iva, update_idx, acts_a),
                       L.after_update(self.critic, self.iv, u[1], k_ivc, update_idx, acts_c)),
            lambda u: u, (actor, critic))

        # ------------------------------------------------------------------ metrics
        out = {**masked_mean(caux), **masked_mean(aaux)}
        out.update(L.unit_weight_metrics(self.actor, actor, before[ACTOR]))
        out.update(L.unit_weight_metrics(self.critic, critic, before[CRITIC]))
        out.update(L.episode_stats(*ep))
        out.update(L.unit_heavy_metrics(self.actor, self.metrics, acts_a, heavy_due))
        out.update(L.unit_heavy_metrics(self.critic, self.metrics, acts_c, heavy_due))
        state = state.replace(units={ACTOR: actor, CRITIC: critic}, env_state=env_state, obs=obs, key=key,
                              buffer=buffer, steps=state.steps.add(self.env_steps_per_update),
                              update=state.update + 1)
        return state, out

    # ------------------------------------------------------------------ driver-facing description
    def config_dict(self) -> dict:
        return {"td3": asdict(self.cfg), "net_after_interventions": asdict(self.actor.network.cfg)}


def make_train(
    cfg: TD3Config,
    env_id: str = "gymnax:Pendulum-v1",
    total_timesteps: int = 20_000,
    interventions: list[Intervention] | tuple[Intervention, ...] | Intervention = (),
    metrics: MetricsConfig | None = None,
    continual: ContinualConfig | None = None,
) -> TD3:
    """Build a ``TD3``: ``jax.jit(jax.vmap(td3.train))(keys)`` trains independent seeds."""
    validate(cfg)
    iv = L.compose_interventions(interventions)
    metrics = metrics or MetricsConfig()
    env = make_env(env_id, cfg.num_envs, continual)
    space = continuous_space(env, env_id, "td3")
    batch = cfg.num_envs * cfg.steps_per_update
    num_updates = total_timesteps // batch
    tasks = L.task_schedule(continual, batch, total_timesteps)
    if num_updates < 1:
        raise ConfigError(f"--total-timesteps {total_timesteps} is less than one update ({batch} env steps = "
                          f"--td3.num-envs x --td3.steps-per-update); raise it")
    net_cfg = apply_net_transforms(cfg.net, iv)
    obs_shape = env.observation_space.shape
    hp0 = L.learner_hparams(cfg, LEARNER_HPARAMS, iv)
    common = dict(max_grad_norm=cfg.max_grad_norm, clip=cfg.clip, adam_eps=cfg.adam_eps, num_updates=num_updates,
                  env_steps_per_update=batch, task_updates=tasks.task_updates if tasks else 0)
    actor = L.make_unit_spec(ACTOR, make_deterministic_actor(net_cfg, obs_shape, space.shape[0]), iv, hp0,
                             learning_rate=constant_lr("actor_lr"), tag=ACTOR, target=True,
                             steps_per_update=max(cfg.steps_per_update // cfg.policy_frequency, 1), **common)
    critic = L.make_unit_spec(CRITIC, make_twin_critic(net_cfg, obs_shape, space.shape[0]), iv, hp0,
                              learning_rate=constant_lr("critic_lr"), tag=CRITIC, target=True,
                              steps_per_update=cfg.steps_per_update, **common)
    warns = L.schedule_warnings(iv, metrics, num_updates, tasks)
    return TD3(cfg, env_id, total_timesteps, iv, metrics, env, actor, critic, num_updates, warns, tasks=tasks,
               continual=continual if tasks else None)
