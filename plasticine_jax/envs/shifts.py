"""Per-task observation and reward shifts, the cheap probes of the plasticity literature: a fixed random
permutation of the observation features per task, and a reward sign per task. Both read their task from
``at(task)`` (``envs.tasks``); unbound they act as task 0 (identity, +1)."""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from plasticine_jax.envs.core import VecEnvWrapper


class _TaskWrapper(VecEnvWrapper):
    """A wrapper whose own behaviour depends on the bound task (0 until ``at`` binds one)."""

    task: Any = 0

    def at(self, task: jax.Array) -> Any:
        out = copy.copy(self)
        out.env = self.env.at(task)
        out.task = task
        return out


class PermuteObservation(_TaskWrapper):
    """obs.reshape(-1)[perm[task]] reshaped back: the same information, in a different order per task."""

    def __init__(self, env: Any, table: np.ndarray):
        super().__init__(env)
        self.table = jnp.asarray(table, jnp.int32)  # [num_tasks, obs size]

    def _permute(self, obs: jax.Array) -> jax.Array:
        perm = self.table[self.task]
        flat = obs.reshape(obs.shape[0], -1)
        return jnp.take(flat, perm, axis=1).reshape(obs.shape)

    def reset(self, key: jax.Array, previous: Any = None):
        obs, state = self.reset_inner(key, previous, own_state=False)
        return self._permute(obs), state

    def step(self, key: jax.Array, state: Any, action: jax.Array):
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action)
        info = dict(info)
        if "final_obs" in info:
            info["final_obs"] = self._permute(info["final_obs"])
        return self._permute(obs), state, reward, terminated, truncated, info


class FlipReward(_TaskWrapper):
    """reward * sign[task]; inside ``EpisodeStats`` so logged returns are the task's own returns."""

    def __init__(self, env: Any, signs: np.ndarray):
        super().__init__(env)
        self.signs = jnp.asarray(signs, jnp.float32)  # [num_tasks]

    def reset(self, key: jax.Array, previous: Any = None):
        return self.reset_inner(key, previous, own_state=False)

    def step(self, key: jax.Array, state: Any, action: jax.Array):
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action)
        return obs, state, reward * self.signs[self.task], terminated, truncated, info
