"""The one environment contract every backend implements: functional, batched, auto-resetting.

A ``VecEnv`` steps ``num_envs`` copies at once. ``reset(key) -> (obs, state)`` and
``step(key, state, action) -> (obs, state, reward, terminated, truncated, info)``, all arrays with a
leading ``num_envs`` axis. Finished envs are reset inside ``step``; ``info["final_obs"]`` holds the
observation *before* the reset so learners can bootstrap on truncation. The state is a pytree, so it
lives in the training carry, is vmapped over seeds and checkpointed like any other array.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

from plasticine_jax.envs.spaces import Space

Array = jax.Array


class VecEnv(Protocol):
    """Batched functional environment (see module docstring)."""

    num_envs: int
    observation_space: Space
    action_space: Space

    def reset(self, key: Array) -> tuple[Array, Any]: ...

    def step(
        self, key: Array, state: Any, action: Array
    ) -> tuple[Array, Any, Array, Array, Array, dict[str, Array]]: ...


class VecEnvWrapper:
    """Base for wrappers: forwards ``num_envs``, spaces and any other attribute to the wrapped VecEnv."""

    def __init__(self, env: Any):
        self.env = env
        self.num_envs = env.num_envs
        self.observation_space = env.observation_space
        self.action_space = env.action_space

    def __getattr__(self, name: str) -> Any:
        if name == "env":  # not yet set (e.g. during unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.env, name)
