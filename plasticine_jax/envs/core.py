"""The one environment contract every backend implements: functional, batched, auto-resetting.

A ``VecEnv`` steps ``num_envs`` copies at once. ``reset(key) -> (obs, state)`` and
``step(key, state, action) -> (obs, state, reward, terminated, truncated, info)``, all arrays with a
leading ``num_envs`` axis. Finished envs are reset inside ``step``; ``info["final_obs"]`` holds the
observation *before* the reset so learners can bootstrap on truncation. The state is a pytree, so it
lives in the training carry, is vmapped over seeds and checkpointed like any other array.

Continual scenarios (``envs.tasks``): ``at(task)`` returns the same env bound to task ``task`` of a task
sequence (an int32 scalar, traced; pass the *unbatched* task derived from the update index so a game switch
stays a real ``lax.switch`` under ``vmap`` over seeds). An env without tasks returns itself. A task switch is
``env.at(new_task).reset(key, previous=old_state)`` to keep running normalisation statistics across it, or
``reset(key)`` for fresh ones (the reference rebuilds its wrappers, so they restart).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from plasticine_jax.envs.spaces import Space

Array = jax.Array


class VecEnv(Protocol):
    """Batched functional environment (see module docstring)."""

    num_envs: int
    observation_space: Space
    action_space: Space

    def reset(self, key: Array, previous: Any = None) -> tuple[Array, Any]: ...

    def step(
        self, key: Array, state: Any, action: Array
    ) -> tuple[Array, Any, Array, Array, Array, dict[str, Array]]: ...

    def at(self, task: Array) -> VecEnv: ...


class TasklessEnv:
    """Mixin for backends without tasks: ``at`` is the identity."""

    def at(self, task: Array) -> Any:
        return self


class VecEnvWrapper:
    """Base for wrappers: forwards ``num_envs``, spaces and any other attribute to the wrapped VecEnv."""

    def __init__(self, env: Any):
        self.env = env
        self.num_envs = env.num_envs
        self.observation_space = env.observation_space
        self.action_space = env.action_space

    def at(self, task: Array) -> Any:
        """This wrapper around the wrapped env bound to ``task`` (a shallow copy; the wrapper's own options are
        shared)."""
        bound = self.env.at(task)
        if bound is self.env:
            return self
        out = copy.copy(self)
        out.env = bound
        return out

    def reset_inner(self, key: Array, previous: Any = None, own_state: bool = True) -> tuple[Array, Any]:
        """Reset the wrapped env, handing it its part of ``previous`` (wrapper states hold it in ``env_state``;
        ``own_state=False`` for stateless wrappers). Without ``previous`` the wrapped env is called as
        ``reset(key)``, so envs written before task switches existed keep working."""
        if previous is None:
            return self.env.reset(key)
        return self.env.reset(key, previous.env_state if own_state else previous)

    def __getattr__(self, name: str) -> Any:
        if name == "env":  # not yet set (e.g. during unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.env, name)


def cycle_index(task: int | Array, n: int) -> int | Array:
    """``task % n`` for ``at(task)``: a Python int stays static (a plain branch), a traced task an int32 scalar."""
    if isinstance(task, int | np.integer):
        return int(task) % n
    return jnp.mod(jnp.asarray(task, jnp.int32), n)


def select_state(done: Array, fresh: Any, nxt: Any, fields: Sequence[str]) -> Any:
    """``fresh`` where ``done`` else ``nxt``, field by field of a physics env's state dataclass (brax / Playground
    ``State``): the auto-reset of one env. A field whose pytree structure differs between reset and step (e.g. an
    info key only step adds) keeps the step's value."""
    def pick(a: Any, b: Any) -> Any:
        if jax.tree.structure(a) != jax.tree.structure(b):
            return b
        return jax.tree.map(lambda x, y: jnp.where(done, x, y).astype(jnp.result_type(y)), a, b)

    return nxt.replace(**{f: pick(getattr(fresh, f), getattr(nxt, f)) for f in fields})
