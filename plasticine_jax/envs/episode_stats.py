"""In-graph episode statistics (return, length), tracked on raw rewards before any normalisation."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from plasticine_jax.envs.core import VecEnvWrapper


@struct.dataclass
class EpisodeStatsState:
    env_state: Any
    episode_return: jax.Array  # running return of the current episode, per env
    episode_length: jax.Array
    returned_return: jax.Array  # return of the last finished episode, per env (NaN until one finishes)
    returned_length: jax.Array


class EpisodeStats(VecEnvWrapper):
    """Wraps a VecEnv; ``info`` gains ``episode_done``, ``episode_return``, ``episode_length``.

    ``episode_return``/``episode_length`` are the totals of the episode that ended at this step
    (valid where ``episode_done``). Must be the innermost wrapper after the backend so it sees raw
    rewards (normalisation wrappers go outside it).

    A backend whose learner-side episodes are not whole games (envpool Atari: a life loss ends the learner's
    episode and rewards are clipped) puts ``info["raw_reward"]`` (the game's score) and ``info["game_over"]``
    (the game ended) in its info; the statistics then count whole games with their raw score (reference §1.3:
    logged when ``lives == 0``, unclipped). Other backends are tracked on ``reward`` and terminated | truncated.
    """

    def reset(self, key: jax.Array, previous: EpisodeStatsState | None = None):
        obs, env_state = self.reset_inner(key, previous)
        zeros = jnp.zeros((self.num_envs,), jnp.float32)
        nans = jnp.full((self.num_envs,), jnp.nan, jnp.float32)
        return obs, EpisodeStatsState(env_state, zeros, zeros.astype(jnp.int32), nans, nans)

    def step(self, key: jax.Array, state: EpisodeStatsState, action: jax.Array):
        obs, env_state, reward, terminated, truncated, info = self.env.step(key, state.env_state, action)
        done = info.get("game_over", jnp.logical_or(terminated, truncated))
        ep_ret = state.episode_return + info.get("raw_reward", reward)
        ep_len = state.episode_length + 1
        new_state = EpisodeStatsState(
            env_state=env_state,
            episode_return=jnp.where(done, 0.0, ep_ret),
            episode_length=jnp.where(done, 0, ep_len),
            returned_return=jnp.where(done, ep_ret, state.returned_return),
            returned_length=jnp.where(done, ep_len.astype(jnp.float32), state.returned_length),
        )
        info = {**info, "episode_done": done, "episode_return": ep_ret, "episode_length": ep_len}
        return obs, new_state, reward, terminated, truncated, info
