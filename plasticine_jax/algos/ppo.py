"""PPO as one pure function: ``make_train(cfg) -> Trainer``; ``trainer.train(key)`` runs the whole run.

Shape (PureJaxRL's make_train, with explicit state dataclasses like Brax): a ``lax.scan`` over updates,
each a ``lax.scan`` over env steps, then epochs x minibatches. Interventions plug in at fixed hook points
(``plasticine_jax.interventions.base``); metrics are computed in-graph and returned stacked per update.
The driver uses ``init`` and ``run_updates`` to compile chunks; ``train`` is the same thing in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from plasticine_jax.algos.ppo_config import PPOConfig
from plasticine_jax.envs import Box, make_env
from plasticine_jax.envs.normalize import wrap_env
from plasticine_jax.interventions.base import (
    Context,
    Intervention,
    LearnerState,
    apply_net_transforms,
    build_optimizer,
    compose,
    default_hparams,
)
from plasticine_jax.metrics.collect import activation_metrics, heavy_metric_names
from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.metrics.norms import global_norm, weight_difference, weight_magnitude
from plasticine_jax.metrics.policy import categorical_entropy, gaussian_entropy
from plasticine_jax.nets import make_network

LEARNER_HPARAMS = ("learning_rate", "ent_coef", "vf_coef", "clip_coef", "gamma", "gae_lambda")


@struct.dataclass
class RunnerState:
    """The whole training carry: checkpoint this and the run resumes exactly."""

    learner: LearnerState
    env_state: Any
    obs: jax.Array
    key: jax.Array
    update: jax.Array  # number of completed updates (int32)


@struct.dataclass
class Transition:
    obs: jax.Array
    action: jax.Array
    logp: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_value: jax.Array  # V(final_obs), used where truncated
    ep_done: jax.Array
    ep_return: jax.Array
    ep_length: jax.Array


def gae(transitions: Transition, last_value: jax.Array, gamma: jax.Array, lam: jax.Array):
    """Generalised advantage estimation over [T, N]. Terminated steps do not bootstrap; truncated steps
    bootstrap from V(final_obs) (folded into the reward); either ends the trace (the next obs is a reset)."""
    reward = transitions.reward + gamma * transitions.final_value * transitions.truncated

    def step(carry, t):
        next_adv, next_value = carry
        r, v, done = t
        delta = r + gamma * next_value * (1.0 - done) - v
        adv = delta + gamma * lam * (1.0 - done) * next_adv
        return (adv, v), adv

    _, adv = jax.lax.scan(
        step,
        (jnp.zeros_like(last_value), last_value),
        (reward, transitions.value, transitions.done.astype(jnp.float32)),
        reverse=True,
    )
    return adv, adv + transitions.value


def _dist(policy_out, continuous: bool):
    """(sample, log_prob, entropy) closures for the policy output."""
    if continuous:
        mean, log_std = policy_out
        std = jnp.exp(log_std)

        def log_prob(a):
            return jnp.sum(-0.5 * ((a - mean) / std) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)

        def sample(key):
            return mean + std * jax.random.normal(key, mean.shape)

        return sample, log_prob, lambda: gaussian_entropy(log_std)
    logits = policy_out

    def log_prob(a):
        return jnp.take_along_axis(jax.nn.log_softmax(logits), a[..., None].astype(jnp.int32), -1)[..., 0]

    def sample(key):
        return jax.random.categorical(key, logits).astype(jnp.int32)

    return sample, log_prob, lambda: categorical_entropy(logits)


@dataclass(frozen=True)
class Trainer:
    """A compiled-run recipe. All methods are pure and vmappable over (key, hparams)."""

    cfg: PPOConfig
    env_id: str
    total_timesteps: int
    interventions: tuple[Intervention, ...]
    metrics: MetricsConfig
    env: Any
    ctx: Context
    continuous: bool
    num_updates: int

    # ------------------------------------------------------------------ setup
    def default_hparams(self) -> dict[str, float]:
        """Vmappable float hyperparameters: the learner's and every intervention's."""
        base = {k: float(getattr(self.cfg, k)) for k in LEARNER_HPARAMS}
        return {**base, **default_hparams(self.interventions)}

    def _optimizer(self, hp: dict) -> optax.GradientTransformation:
        steps = self.ctx.steps_per_update
        n = self.num_updates
        lr = hp["learning_rate"]
        if self.cfg.anneal_lr:
            schedule = lambda count: lr * (1.0 - (count // steps).astype(jnp.float32) / n)
        else:
            schedule = lambda count: lr * jnp.ones_like(count, jnp.float32)
        return build_optimizer(self.interventions, hp, schedule, self.cfg.max_grad_norm, self.cfg.adam_eps)

    def init(self, key: jax.Array, hparams: dict | None = None) -> RunnerState:
        """Fresh carry for one seed. ``hparams`` overrides entries of ``default_hparams()``."""
        hp = self._hparams(hparams)
        k_net, k_env, k_iv, k_run = jax.random.split(key, 4)
        variables = self.ctx.network.init(k_net)
        params = variables.pop("params")
        net_state = variables
        tx = self._optimizer(hp)
        learner = LearnerState(params, net_state, tx.init(params), {}, hp)
        for iv, k in zip(self.interventions, jax.random.split(k_iv, max(1, len(self.interventions))), strict=False):
            if iv.init is not None:
                learner = iv.init(self.ctx, learner, k)
        obs, env_state = self.env.reset(k_env)
        return RunnerState(learner, env_state, obs, k_run, jnp.zeros((), jnp.int32))

    def _hparams(self, hparams: dict | None) -> dict:
        hp = {k: jnp.asarray(v, jnp.float32) for k, v in self.default_hparams().items()}
        for k, v in (hparams or {}).items():
            if k not in hp:
                from plasticine_jax.errors import ConfigError

                raise ConfigError(f"unknown hyperparameter '{k}'; vmappable ones: {', '.join(sorted(hp))}")
            hp[k] = jnp.asarray(v, jnp.float32)
        return hp

    # ------------------------------------------------------------------ one update
    def _policy(self, params, net_state, obs):
        return self.ctx.network.apply(params, net_state, obs)

    def _rollout(self, runner: RunnerState):
        learner = runner.learner
        box = self.env.action_space if self.continuous else None

        def env_step(carry, _):
            env_state, obs, key = carry
            key, k_act, k_env = jax.random.split(key, 3)
            policy_out, value = self._policy(learner.params, learner.net_state, obs)
            sample, log_prob, _ = _dist(policy_out, self.continuous)
            action = sample(k_act)
            logp = log_prob(action)
            env_action = action
            if self.continuous:
                env_action = jnp.clip(action, box.low_array, box.high_array)
            next_obs, env_state, reward, terminated, truncated, info = self.env.step(k_env, env_state, env_action)
            if self.cfg.bootstrap_truncation:
                _, final_value = self._policy(learner.params, learner.net_state, info["final_obs"])
            else:
                final_value = jnp.zeros_like(value)
            t = Transition(obs, action, logp, value, reward, jnp.logical_or(terminated, truncated),
                           terminated, truncated.astype(jnp.float32), jax.lax.stop_gradient(final_value),
                           info["episode_done"], info["episode_return"], info["episode_length"])
            return (env_state, next_obs, key), t

        (env_state, obs, key), traj = jax.lax.scan(
            env_step, (runner.env_state, runner.obs, runner.key), None, self.cfg.num_steps
        )
        return traj, env_state, obs, key

    def _loss(self, params, learner: LearnerState, mb):
        hp = learner.hp
        policy_out, value = self._policy(params, learner.net_state, mb["obs"])
        _, log_prob, entropy_fn = _dist(policy_out, self.continuous)
        logp = log_prob(mb["action"])
        logratio = logp - mb["logp"]
        ratio = jnp.exp(logratio)
        adv = mb["adv"]
        if self.cfg.norm_adv:
            adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
        clip = hp["clip_coef"]
        pg_loss = jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1 - clip, 1 + clip)).mean()
        if self.cfg.clip_vloss:
            v_clipped = mb["value"] + jnp.clip(value - mb["value"], -clip, clip)
            v_loss = 0.5 * jnp.maximum((value - mb["ret"]) ** 2, (v_clipped - mb["ret"]) ** 2).mean()
        else:
            v_loss = 0.5 * ((value - mb["ret"]) ** 2).mean()
        entropy = entropy_fn().mean()
        loss = pg_loss - hp["ent_coef"] * entropy + hp["vf_coef"] * v_loss
        iv_loss = jnp.zeros(())
        for iv in self.interventions:
            if iv.loss is not None:
                iv_loss = iv_loss + iv.loss(self.ctx, params, learner.istate.get(iv.name), hp)
        aux = {
            "losses/policy_loss": pg_loss,
            "losses/value_loss": v_loss,
            "losses/entropy": entropy,
            "losses/old_approx_kl": (-logratio).mean(),
            "losses/approx_kl": ((ratio - 1) - logratio).mean(),
            "losses/clipfrac": (jnp.abs(ratio - 1.0) > clip).astype(jnp.float32).mean(),
            "losses/intervention_loss": iv_loss,
        }
        return loss + iv_loss, aux

    def _update_minibatch(self, learner: LearnerState, mb_and_key):
        mb, key = mb_and_key
        tx = self._optimizer(learner.hp)
        (_, aux), grads = jax.value_and_grad(self._loss, has_aux=True)(learner.params, learner, mb)
        aux["plasticity/gradient_norm"] = global_norm(grads)
        updates, opt_state = tx.update(grads, learner.opt_state, learner.params)
        learner = learner.replace(params=optax.apply_updates(learner.params, updates), opt_state=opt_state)
        keys = jax.random.split(key, max(1, len(self.interventions)))
        for iv, k in zip(self.interventions, keys, strict=False):
            if iv.after_step is not None:
                learner = iv.after_step(self.ctx, learner, k)
        return learner, aux

    def _update(self, runner: RunnerState, update_idx: jax.Array):
        """One iteration: rollout, GAE, epochs x minibatches, interventions, metrics."""
        cfg = self.cfg
        traj, env_state, last_obs, key = self._rollout(runner)
        learner = runner.learner
        _, last_value = self._policy(learner.params, learner.net_state, last_obs)
        adv, ret = gae(traj, last_value, learner.hp["gamma"], learner.hp["gae_lambda"])
        batch = {"obs": traj.obs, "action": traj.action, "logp": traj.logp, "value": traj.value,
                 "adv": adv, "ret": ret}
        batch_size = cfg.num_steps * cfg.num_envs
        batch = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), batch)
        mb_size = batch_size // cfg.num_minibatches
        params_before = learner.params

        def epoch(carry, _):
            learner, key = carry
            key, k_perm, k_steps = jax.random.split(key, 3)
            perm = jax.random.permutation(k_perm, batch_size)
            shuffled = jax.tree.map(lambda x: x[perm].reshape(cfg.num_minibatches, mb_size, *x.shape[1:]), batch)
            keys = jax.random.split(k_steps, cfg.num_minibatches)
            learner, aux = jax.lax.scan(self._update_minibatch, learner, (shuffled, keys))
            last_obs_mb = jax.tree.map(lambda x: x[-1], shuffled["obs"])
            return (learner, key), (aux, last_obs_mb)

        (learner, key), (aux, last_mb_obs) = jax.lax.scan(epoch, (learner, key), None, cfg.update_epochs)
        metric_obs = last_mb_obs[-1]
        key, k_iv = jax.random.split(key)
        keys = jax.random.split(k_iv, max(1, len(self.interventions)))
        for iv, k in zip(self.interventions, keys, strict=False):
            if iv.after_update is not None:
                learner = iv.after_update(self.ctx, learner, k, update_idx, metric_obs)

        out = {k: v.mean() for k, v in aux.items()}
        out["plasticity/policy_entropy"] = out["losses/entropy"]
        out["plasticity/weight_magnitude"] = weight_magnitude(learner.params)
        out["plasticity/weight_difference"] = weight_difference(learner.params, params_before)
        y, var_y = ret.reshape(-1), jnp.var(ret)
        out["losses/explained_variance"] = 1.0 - jnp.var(y - traj.value.reshape(-1)) / var_y
        n_done = traj.ep_done.sum()
        out["charts/episodes"] = n_done.astype(jnp.float32)
        out["charts/episodic_return"] = jnp.where(
            n_done > 0, (traj.ep_return * traj.ep_done).sum() / jnp.maximum(n_done, 1), jnp.nan)
        out["charts/episodic_length"] = jnp.where(
            n_done > 0, (traj.ep_length * traj.ep_done).sum() / jnp.maximum(n_done, 1), jnp.nan)
        frac = 1.0 - update_idx.astype(jnp.float32) / self.num_updates if cfg.anneal_lr else 1.0
        out["charts/learning_rate"] = learner.hp["learning_rate"] * frac
        out.update(self._heavy_metrics(learner, metric_obs, update_idx))
        runner = RunnerState(learner, env_state, last_obs, key, runner.update + 1)
        return runner, out

    def _heavy_metrics(self, learner: LearnerState, obs: jax.Array, update_idx: jax.Array) -> dict:
        names = heavy_metric_names(self.ctx.network)
        nan = {k: jnp.full((), jnp.nan, jnp.float32) for k in names}
        if self.metrics.every <= 0:
            return nan

        def compute(_):
            _, acts = self.ctx.network.apply_with_activations(learner.params, learner.net_state, obs)
            return activation_metrics(self.ctx.network, acts, self.metrics)

        due = (update_idx + 1) % self.metrics.every == 0
        return jax.lax.cond(due, compute, lambda _: nan, None)

    # ------------------------------------------------------------------ public entry points
    def run_updates(self, runner: RunnerState, start: int | jax.Array, num: int):
        """Run ``num`` updates starting at global update index ``start`` (unbatched under vmap)."""
        idx = jnp.asarray(start, jnp.int32) + jnp.arange(num, dtype=jnp.int32)
        return jax.lax.scan(self._update, runner, idx)

    def train(self, key: jax.Array, hparams: dict | None = None):
        """The whole run for one seed: returns (final carry, metrics stacked over updates)."""
        return self.run_updates(self.init(key, hparams), 0, self.num_updates)


def make_train(
    cfg: PPOConfig,
    env_id: str = "gymnax:CartPole-v1",
    total_timesteps: int = 500_000,
    interventions: list[Intervention] | tuple[Intervention, ...] = (),
    metrics: MetricsConfig | None = None,
) -> Trainer:
    """Build a ``Trainer``: ``jax.jit(jax.vmap(trainer.train))(keys)`` trains independent seeds."""
    from plasticine_jax.errors import ConfigError

    ivs = compose(list(interventions))
    metrics = metrics or MetricsConfig()
    batch = cfg.num_envs * cfg.num_steps
    if batch % cfg.num_minibatches:
        raise ConfigError(f"num_envs*num_steps={batch} is not divisible by num_minibatches={cfg.num_minibatches}")
    num_updates = total_timesteps // batch
    if num_updates < 1:
        raise ConfigError(f"total_timesteps={total_timesteps} is less than one rollout ({batch} steps); raise it")
    env = make_env(env_id, cfg.num_envs)
    env = wrap_env(env, cfg.normalize_obs, cfg.normalize_reward, cfg.gamma)
    continuous = isinstance(env.action_space, Box)
    action_dim = env.action_space.shape[0] if continuous else env.action_space.n
    net_cfg = apply_net_transforms(cfg.net, ivs)
    network = make_network(net_cfg, env.observation_space.shape, action_dim, continuous)
    ctx = Context(network, num_updates, cfg.update_epochs * cfg.num_minibatches, batch)
    return Trainer(cfg, env_id, total_timesteps, ivs, metrics, env, ctx, continuous, num_updates)
