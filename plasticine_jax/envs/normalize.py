"""Running observation / reward normalisation wrappers whose statistics live in the env state.

Because the running mean/var sit in the state pytree, they are part of the training carry: vmapped
over seeds (one set of statistics per seed), checkpointed and restored exactly. Semantics follow
gym 0.23.1 (reference §1.1). Both wrappers go *outside* ``EpisodeStats`` so episode returns stay raw.

Design notes
------------
* Statistics are created fresh by ``reset`` (as a new gym wrapper instance would be) and updated on
  every ``step``; there is no frozen/eval mode.
* ``NormalizeObservation`` updates its statistics on ``reset`` too (gym does), and normalises
  ``info["final_obs"]`` with the same (just-updated) statistics as the emitted observation, without
  updating on it, so learners that bootstrap from ``final_obs`` see the same input scale (gym's vector
  envs leave the final observation unnormalised, a known pitfall not reproduced here).
* Everything is float32; ``count`` is a float32 running count (relative error stays tiny at 1e9 steps).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from plasticine_jax.envs.core import VecEnvWrapper


@struct.dataclass
class RunningMeanStd:
    """Running mean/variance with gym's parallel-merge update (init mean 0, var 1, count 1e-4)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, shape: tuple[int, ...] = ()) -> RunningMeanStd:
        return cls(
            mean=jnp.zeros(shape, jnp.float32),
            var=jnp.ones(shape, jnp.float32),
            count=jnp.asarray(1e-4, jnp.float32),
        )

    def update(self, x: jax.Array) -> RunningMeanStd:
        """Merge a batch ``x`` (batch on axis 0) into the statistics."""
        x = x.astype(jnp.float32)
        batch_mean = jnp.mean(x, axis=0)
        batch_var = jnp.var(x, axis=0)
        batch_count = jnp.asarray(x.shape[0], jnp.float32)
        delta = batch_mean - self.mean
        tot = self.count + batch_count
        new_mean = self.mean + delta * batch_count / tot
        m2 = (
            self.var * self.count
            + batch_var * batch_count
            + jnp.square(delta) * self.count * batch_count / tot
        )
        return RunningMeanStd(mean=new_mean, var=m2 / tot, count=tot)


@struct.dataclass
class NormalizeRewardState:
    env_state: Any
    return_rms: RunningMeanStd  # scalar statistics of the discounted return
    returns: jax.Array  # per-env discounted return accumulator R


class NormalizeReward(VecEnvWrapper):
    """gym-0.23.1 ``NormalizeReward`` followed by a reward clip.

    Per env: ``R <- gamma * R + r``; update scalar running statistics with the batch of ``R``; emit
    ``r / sqrt(var + epsilon)`` clipped to ``[-clip, clip]`` (``clip=None``: no clip); then ``R <- 0``
    where the episode ended (terminated or truncated).
    """

    def __init__(self, env: Any, gamma: float, epsilon: float = 1e-8, clip: float | None = 10.0):
        super().__init__(env)
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.clip = None if clip is None else float(clip)

    def reset(self, key: jax.Array, previous: NormalizeRewardState | None = None
              ) -> tuple[jax.Array, NormalizeRewardState]:
        """Fresh statistics, or ``previous``'s (kept across a task switch); the return accumulator restarts."""
        obs, env_state = self.reset_inner(key, previous)
        returns = jnp.zeros((self.num_envs,), jnp.float32)
        rms = RunningMeanStd.create(()) if previous is None else previous.return_rms
        return obs, NormalizeRewardState(env_state, rms, returns)

    def step(
        self, key: jax.Array, state: NormalizeRewardState, action: jax.Array
    ) -> tuple[jax.Array, NormalizeRewardState, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
        obs, env_state, reward, terminated, truncated, info = self.env.step(key, state.env_state, action)
        returns = state.returns * self.gamma + reward
        rms = state.return_rms.update(returns)
        norm_reward = reward / jnp.sqrt(rms.var + self.epsilon)
        if self.clip is not None:
            norm_reward = jnp.clip(norm_reward, -self.clip, self.clip)
        done = jnp.logical_or(terminated, truncated)
        returns = jnp.where(done, 0.0, returns)
        new_state = NormalizeRewardState(env_state, rms, returns)
        return obs, new_state, norm_reward.astype(jnp.float32), terminated, truncated, info


@struct.dataclass
class NormalizeObservationState:
    env_state: Any
    obs_rms: RunningMeanStd  # per-feature statistics, shape = observation shape


class NormalizeObservation(VecEnvWrapper):
    """gym-0.23.1 ``NormalizeObservation`` followed by an observation clip.

    Per-feature running statistics are updated with each batch of observations (also on ``reset``);
    the emitted observation is ``clip((obs - mean) / sqrt(var + epsilon), -clip, clip)``
    (``clip=None``: no clip). ``info["final_obs"]`` is normalised the same way (no update).
    """

    def __init__(self, env: Any, epsilon: float = 1e-8, clip: float | None = 10.0):
        super().__init__(env)
        self.epsilon = float(epsilon)
        self.clip = None if clip is None else float(clip)

    def _normalize(self, rms: RunningMeanStd, obs: jax.Array) -> jax.Array:
        out = (obs - rms.mean) / jnp.sqrt(rms.var + self.epsilon)
        if self.clip is not None:
            out = jnp.clip(out, -self.clip, self.clip)
        return out.astype(jnp.float32)

    def reset(self, key: jax.Array, previous: NormalizeObservationState | None = None
              ) -> tuple[jax.Array, NormalizeObservationState]:
        """Fresh statistics (or ``previous``'s, kept across a task switch), updated with the reset batch."""
        obs, env_state = self.reset_inner(key, previous)
        rms = RunningMeanStd.create(tuple(obs.shape[1:])) if previous is None else previous.obs_rms
        rms = rms.update(obs)
        return self._normalize(rms, obs), NormalizeObservationState(env_state, rms)

    def step(
        self, key: jax.Array, state: NormalizeObservationState, action: jax.Array
    ) -> tuple[jax.Array, NormalizeObservationState, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
        obs, env_state, reward, terminated, truncated, info = self.env.step(key, state.env_state, action)
        rms = state.obs_rms.update(obs)
        info = dict(info)
        if "final_obs" in info:
            info["final_obs"] = self._normalize(rms, info["final_obs"])
        return (
            self._normalize(rms, obs),
            NormalizeObservationState(env_state, rms),
            reward,
            terminated,
            truncated,
            info,
        )


def wrap_env(
    env: Any,
    normalize_obs: bool,
    normalize_reward: bool,
    gamma: float,
    *,
    epsilon: float = 1e-8,
    obs_clip: float | None = 10.0,
    reward_clip: float | None = 10.0,
) -> Any:
    """Apply the requested normalisation wrappers (observation inside, reward outside, as CleanRL does).

    ``env`` should already carry ``EpisodeStats`` so that episode returns are recorded on raw rewards.
    """
    if normalize_obs:
        env = NormalizeObservation(env, epsilon=epsilon, clip=obs_clip)
    if normalize_reward:
        env = NormalizeReward(env, gamma=gamma, epsilon=epsilon, clip=reward_clip)
    return env
