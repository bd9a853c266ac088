"""SAC as one pure function: ``make_train(cfg) -> SAC``; ``sac.train(key)`` runs the whole run.

CleanRL's ``sac_continuous_action`` (beyond the Plasticine reference), read top to bottom like PPO and TD3:
act (uniform random warm-up, then a sample of the tanh-Gaussian policy), targets (soft clipped double-Q with
the online actor's next action), loss (``sac_losses``), update, metrics. Two units, each with its own Adam:
``actor`` (Gaussian policy, no target) and ``critic`` (twin Q towers with a Polyak target). The temperature
``log_alpha`` is not a unit: it lives in ``RunState.extra`` with its own small Adam when ``autotune``.

One update = ``steps_per_update`` env steps (per env). Once ``learning_starts`` env steps have been taken each
env step is followed by one critic step on a replay batch; every ``policy_frequency``-th critic step by
``policy_frequency`` actor steps on that same batch (CleanRL compensates the delay by repeating), each followed
by a temperature step; and every critic step by the Polyak update of the critic target (CleanRL's
``target_network_frequency`` = 1).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from plasticine_jax.algos import learner as L
from plasticine_jax.algos import rng
from plasticine_jax.algos.replay import replay_add, replay_sample
from plasticine_jax.algos.sac_config import SACConfig, validate
from plasticine_jax.algos.sac_losses import (
    log_std_bounds,
    sac_actor_loss,
    sac_alpha_loss,
    sac_critic_loss,
    sac_critic_target,
    tanh_gaussian_sample,
)
from plasticine_jax.algos.state import RunState, StepCounter, Unit
from plasticine_jax.algos.td3 import (
    TRAINED,
    ActionBounds,
    Transition,
    constant_lr,
    continuous_space,
    env_transition,
    first_training_step,
    init_buffer,
    masked_mean,
    maybe,
    rename_intervention_loss,
)
from plasticine_jax.algos.td3_losses import polyak
from plasticine_jax.envs import make_env
from plasticine_jax.envs.tasks import ContinualConfig, TaskSchedule
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention, apply_net_transforms
from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.nets.continuous import make_gaussian_actor, make_twin_critic

LEARNER_HPARAMS = ("actor_lr", "critic_lr", "alpha_lr", "gamma", "tau", "alpha")
ACTOR, CRITIC = "actor", "critic"


@dataclass(frozen=True)
class SAC(ActionBounds, L.UpdateLoop):
    """A compiled-run recipe (the ``Learner`` protocol). All methods are pure and vmappable."""

    cfg: SACConfig
    env_id: str
    total_timesteps: int
    iv: Intervention
    metrics: MetricsConfig
    env: Any
    actor: L.UnitSpec
    critic: L.UnitSpec
    num_updates: int
    warnings: tuple[str, ...] = ()
    algo: str = "sac"
    tasks: TaskSchedule | None = None
    continual: ContinualConfig | None = None
    HPARAMS: ClassVar[tuple[str, ...]] = LEARNER_HPARAMS

    @property
    def env_steps_per_update(self) -> int:
        return self.cfg.num_envs * self.cfg.steps_per_update

    @property
    def target_entropy(self) -> float:
        return -float(self.action_low.shape[0])  # -|A| (CleanRL)

    # ------------------------------------------------------------------ setup
    def _alpha_tx(self, hp: dict) -> optax.GradientTransformation:
        return optax.adam(hp["alpha_lr"], eps=self.cfg.adam_eps)

    def init(self, key: jax.Array, hparams: dict | None = None) -> RunState:
        """Fresh carry for one seed: both units (critic target = copy), env, empty replay, log_alpha = log(alpha)."""
        hp = L.resolve_hparams(self.default_hparams(), hparams)
        k_actor, k_critic, k_env, k_iva, k_ivc, k_run = rng.split(key, 6)
        actor = L.init_unit(self.actor, self.iv, k_actor, hp, k_iva)
        critic = L.init_unit(self.critic, self.iv, k_critic, hp, k_ivc)
        obs, env_state = self.env.reset(k_env)
        buffer = init_buffer(self.cfg.buffer_size, self.env.observation_space.shape, self.action_low.shape[0])
        log_alpha = jnp.log(hp["alpha"])
        extra = {"log_alpha": log_alpha}
        if self.cfg.autotune:
            extra["alpha_opt_state"] = self._alpha_tx(hp).init(log_alpha)
        return RunState({ACTOR: actor, CRITIC: critic}, env_state, obs, k_run, StepCounter.zero(),
                        jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), buffer, extra)

    # ------------------------------------------------------------------ act
    def _sample(self, params: dict, net_state: dict, obs: jax.Array, key: jax.Array):
        """(action in the env's bounds, log pi(action|obs)) of the tanh-squashed Gaussian policy."""
        mean, raw_log_std = self.actor.network.apply(params, net_state, obs)
        return tanh_gaussian_sample(key, mean, log_std_bounds(raw_log_std), self.action_scale, self.action_bias)

    def eval_action(self, units: dict, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Evaluation policy (``algos.evaluate``): a sample from the tanh-Gaussian policy."""
        actor = units[ACTOR]
        return self._sample(actor.params, actor.net_state, obs, key)[0]

    def _act(self, actor: Unit, obs: jax.Array, key: jax.Array, warmup: jax.Array) -> jax.Array:
        """Uniform random actions during warm-up, else a policy sample."""
        k_rand, k_pi = rng.split(key)
        shape = (self.cfg.num_envs, self.action_low.shape[0])
        rand = jax.random.uniform(k_rand, shape, minval=self.action_low, maxval=self.action_high)
        action, _ = self._sample(actor.params, actor.net_state, obs, k_pi)
        return jnp.where(warmup, rand, action)

    # ------------------------------------------------------------------ targets
    def _target(self, actor: Unit, critic: Unit, batch: Transition, alpha: jax.Array, key: jax.Array):
        next_action, next_logp = self._sample(actor.params, actor.net_state, batch.next_obs, key)
        nq1, nq2 = self.critic.network.apply(critic.target, critic.net_state, batch.next_obs, next_action)
        return sac_critic_target(nq1, nq2, next_logp, batch.reward, batch.done, critic.hp["gamma"], alpha)

    # ------------------------------------------------------------------ loss
    def _critic_loss(self, params, unit: Unit, batch: Transition, y: jax.Array):
        q1, q2 = self.critic.network.apply(params, unit.net_state, batch.obs, batch.action)
        return sac_critic_loss(q1, q2, y)

    def _actor_loss(self, params, unit: Unit, critic: Unit, obs: jax.Array, alpha: jax.Array, key: jax.Array):
        action, logp = self._sample(params, unit.net_state, obs, key)
        q1, q2 = self.critic.network.apply(critic.params, critic.net_state, obs, action)
        loss = sac_actor_loss(logp, q1, q2, alpha)
        return loss, {"losses/actor_loss": loss, "plasticity/policy_entropy": -jnp.mean(logp)}

    # ------------------------------------------------------------------ update
    def _critic_step(self, carry, batch: Transition, key: jax.Array):
        actor, critic, extra = carry
        k_target, k_step = rng.split(key)
        y = self._target(actor, critic, batch, jnp.exp(extra["log_alpha"]), k_target)
        loss_fn = L.loss_with_interventions(self.critic, self.iv, self._critic_loss)
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(critic.params, critic, batch, y)
        critic, norm = L.apply_grads(self.critic, self.iv, critic, grads, k_step)
        return (actor, critic, extra), {**rename_intervention_loss(aux, CRITIC), L.gradient_norm_key(self.critic): norm}

    def _actor_alpha_step(self, carry, obs: jax.Array, key: jax.Array):
        """One actor step (its after_step hooks fire here), then one temperature step on a fresh sample."""
        actor, critic, extra = carry
        k_actor, k_step, k_alpha = rng.split(key, 3)
        alpha = jnp.exp(extra["log_alpha"])
        loss_fn = L.loss_with_interventions(self.actor, self.iv, self._actor_loss)
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(actor.params, actor, critic, obs, alpha, k_actor)
        actor, norm = L.apply_grads(self.actor, self.iv, actor, grads, k_step)
        aux = {**rename_intervention_loss(aux, ACTOR), L.gradient_norm_key(self.actor): norm}
        if self.cfg.autotune:
            _, logp = self._sample(actor.params, actor.net_state, obs, k_alpha)
            alpha_loss, g = jax.value_and_grad(sac_alpha_loss)(extra["log_alpha"], logp, self.target_entropy)
            tx = self._alpha_tx(actor.hp)
            updates, opt_state = tx.update(g, extra["alpha_opt_state"], extra["log_alpha"])
            extra = {**extra, "log_alpha": optax.apply_updates(extra["log_alpha"], updates),
                     "alpha_opt_state": opt_state}
            aux["losses/alpha_loss"] = alpha_loss
        return (actor, critic, extra), aux

    def _actor_steps(self, carry, obs: jax.Array, key: jax.Array):
        """``policy_frequency`` actor (+ temperature) steps on the same batch; aux averaged over them (one step:
        no scan, the same key as the scan's single step)."""
        keys = rng.split(key, self.cfg.policy_frequency)
        if self.cfg.policy_frequency == 1:
            return self._actor_alpha_step(carry, obs, keys[0])
        carry, aux = jax.lax.scan(lambda c, k: self._actor_alpha_step(c, obs, k), carry, keys)
        return carry, {k: v.mean() for k, v in aux.items()}

    def _train_step(self, carry, buffer, key: jax.Array, actor_due: jax.Array | bool):
        """Critic step; the delayed, repeated actor steps when due; then the critic target's Polyak update."""
        k_batch, k_critic, k_actor = rng.split(key, 3)
        batch = replay_sample(buffer, k_batch, self.cfg.batch_size)
        carry, caux = self._critic_step(carry, batch, k_critic)
        carry, aaux = maybe(actor_due, lambda c: self._actor_steps(c, batch.obs, k_actor), carry)
        actor, critic, extra = carry
        critic = critic.replace(target=polyak(critic.target, critic.params, critic.hp["tau"]))
        return (actor, critic, extra), {CRITIC: caux, ACTOR: aaux}

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
        ((actor, critic, extra), env_state, obs, buffer, key), (caux, aaux, ep) = jax.lax.scan(
            functools.partial(self._env_step, self.env_at(update_idx)),
            ((actor, critic, state.extra), state.env_state, state.obs, state.buffer, state.key), s)

        # activations once per unit, on a static metric batch from replay: read by interventions and metrics
        key, k_mb, k_iva, k_ivc = rng.split(key, 4)
        mb = replay_sample(buffer, k_mb, cfg.metric_batch)
        heavy_due = L.metrics_due(self.metrics, update_idx)
        due = heavy_due | self.activations_due(update_idx)
        acts_a = L.unit_activations(self.actor, actor, (mb.obs,), due)
        acts_c = L.unit_activations(self.critic, critic, (mb.obs, mb.action), due)  # the critic's own features
        # scheduled interventions only once training has started (as TD3, reference §3.0)
        started = s[-1] >= first_training_step(cfg.learning_starts, cfg.num_envs)
        actor, critic = jax.lax.cond(
            started,
            lambda u: (L.after_update(self.actor, self.iv, u[0], k_iva, update_idx, acts_a),
                       L.after_update(self.critic, self.iv, u[1], k_ivc, update_idx, acts_c)),
            lambda u: u, (actor, critic))

        # ------------------------------------------------------------------ metrics
        out = {**masked_mean(caux), **masked_mean(aaux)}
        out["losses/alpha"] = jnp.exp(extra["log_alpha"])
        out.update(L.unit_weight_metrics(self.actor, actor, before[ACTOR]))
        out.update(L.unit_weight_metrics(self.critic, critic, before[CRITIC]))
        out.update(L.episode_stats(*ep))
        out.update(L.unit_heavy_metrics(self.actor, self.metrics, acts_a, heavy_due))
        out.update(L.unit_heavy_metrics(self.critic, self.metrics, acts_c, heavy_due))
        state = state.replace(units={ACTOR: actor, CRITIC: critic}, env_state=env_state, obs=obs, key=key,
                              buffer=buffer, extra=extra, steps=state.steps.add(self.env_steps_per_update),
                              update=state.update + 1)
        return state, out

    # ------------------------------------------------------------------ driver-facing description
    def config_dict(self) -> dict:
        return {"sac": asdict(self.cfg), "net_after_interventions": asdict(self.actor.network.cfg)}


def make_train(
    cfg: SACConfig,
    env_id: str = "gymnax:Pendulum-v1",
    total_timesteps: int = 20_000,
    interventions: list[Intervention] | tuple[Intervention, ...] | Intervention = (),
    metrics: MetricsConfig | None = None,
    continual: ContinualConfig | None = None,
) -> SAC:
    """Build a ``SAC``: ``jax.jit(jax.vmap(sac.train))(keys)`` trains independent seeds."""
    validate(cfg)
    iv = L.compose_interventions(interventions)
    metrics = metrics or MetricsConfig()
    env = make_env(env_id, cfg.num_envs, continual)
    space = continuous_space(env, env_id, "sac")
    batch = cfg.num_envs * cfg.steps_per_update
    num_updates = total_timesteps // batch
    tasks = L.task_schedule(continual, batch, total_timesteps)
    if num_updates < 1:
        raise ConfigError(f"--total-timesteps {total_timesteps} is less than one update ({batch} env steps = "
                          f"--sac.num-envs x --sac.steps-per-update); raise it")
    net_cfg = apply_net_transforms(cfg.net, iv)
    obs_shape = env.observation_space.shape
    hp0 = L.learner_hparams(cfg, LEARNER_HPARAMS, iv)
    common = dict(max_grad_norm=cfg.max_grad_norm, clip=cfg.clip, adam_eps=cfg.adam_eps, num_updates=num_updates,
                  env_steps_per_update=batch, steps_per_update=cfg.steps_per_update,
                  task_updates=tasks.task_updates if tasks else 0)
    actor = L.make_unit_spec(ACTOR, make_gaussian_actor(net_cfg, obs_shape, space.shape[0]), iv, hp0,
                             learning_rate=constant_lr("actor_lr"), tag=ACTOR, **common)
    critic = L.make_unit_spec(CRITIC, make_twin_critic(net_cfg, obs_shape, space.shape[0]), iv, hp0,
                              learning_rate=constant_lr("critic_lr"), tag=CRITIC, target=True, **common)
    warns = L.schedule_warnings(iv, metrics, num_updates, tasks)
    return SAC(cfg, env_id, total_timesteps, iv, metrics, env, actor, critic, num_updates, warns, tasks=tasks,
               continual=continual if tasks else None)
