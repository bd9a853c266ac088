"""gymnax 1.x backend: vmapped single envs with the 6-value step API (terminated vs truncated)."""

from __future__ import annotations

import copy
import importlib.util
import sys
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from plasticine_jax.algos import rng
from plasticine_jax.envs.spaces import Box, Discrete, Space
from plasticine_jax.errors import ConfigError


class _Deferred(types.ModuleType):
    """A module whose code runs the first time one of its attributes is read, written or deleted: then it becomes
    the ordinary module, the same object (the standard library's ``LazyLoader`` idea, except that an ``import``
    statement naming it does not count as a read, so gymnax's own imports leave it unloaded)."""

    def _load(self) -> None:
        object.__setattr__(self, "__class__", types.ModuleType)
        try:
            self.__spec__.loader.exec_module(self)
        except BaseException:  # as a failed import does: no half-run module left, the next import tries again
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            raise

    def __getattr__(self, attr: str) -> Any:  # only for attributes the module does not have yet
        self._load()
        return getattr(self, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        self._load()
        setattr(self, attr, value)

    def __delattr__(self, attr: str) -> None:
        self._load()
        delattr(self, attr)


# imported by gymnax at import time for its renderers only: ~2 s of every process's start-up on a 2-core CPU
# (seaborn brings scipy.stats and pandas)
DEFERRED = ("seaborn", "matplotlib.pyplot")


def _defer(name: str) -> None:
    """Put an unloaded ``_Deferred`` module ``name`` in ``sys.modules`` (and on its parent package, as an import
    would), unless it is loaded already or not installed."""
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)
    except ImportError:
        return
    if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
        return
    module = importlib.util.module_from_spec(spec)
    object.__setattr__(module, "__class__", _Deferred)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)  # find_spec imported the parent


def import_gymnax() -> Any:
    """The gymnax module, imported with its renderers' modules (``DEFERRED``) deferred: each loads, as usual, the
    first time something uses it."""
    if "gymnax" not in sys.modules:
        for name in DEFERRED:
            _defer(name)
    import gymnax

    return gymnax


def check_gymnax_id(env_id: str) -> Any:
    """The gymnax module, once ``env_id`` is known to be one of its registered envs (else a one-line error with
    the closest ids)."""
    gymnax = import_gymnax()
    if env_id not in gymnax.registered_envs:
        close = [e for e in gymnax.registered_envs if env_id.lower() in e.lower()]
        hint = f" (did you mean {', '.join('gymnax:' + c for c in close[:3])}?)" if close else ""
        raise ConfigError(f"unknown gymnax env '{env_id}'{hint}; see gymnax.registered_envs")
    return gymnax


def _convert_space(space: Any) -> Space:
    """Translate a gymnax space into ours (static)."""
    kind = type(space).__name__
    if kind == "Discrete":
        return Discrete(int(space.n))
    if kind == "Box":
        shape = tuple(int(s) for s in space.shape)
        low = np.broadcast_to(np.asarray(space.low, np.float32), shape).ravel()
        high = np.broadcast_to(np.asarray(space.high, np.float32), shape).ravel()
        return Box(tuple(float(x) for x in low), tuple(float(x) for x in high), shape)
    raise ConfigError(f"gymnax space {kind} is not supported (only Discrete and Box)")


class GymnaxVecEnv:
    """``num_envs`` copies of a gymnax env; auto-reset is gymnax's own (reset drawn inside step).

    ``params_table`` ({EnvParams field: float array [num_tasks]}) makes it a shifting-dynamics sequence:
    ``at(task)`` steps with those fields set to their row ``task`` (a gather, exact under vmap)."""

    def __init__(self, env_id: str, num_envs: int, params_table: dict[str, Any] | None = None,
                 **env_kwargs: Any):
        gymnax = check_gymnax_id(env_id)
        self.env, self.params = gymnax.make(env_id, **env_kwargs)
        self.params_table = None
        if params_table:
            known = [f for f in vars(self.params) if not f.startswith("_")]
            bad = [f for f in params_table if f not in known]
            if bad:
                raise ConfigError(f"gymnax {env_id} has no parameter '{bad[0]}'; its parameters: {', '.join(known)}")
            self.params_table = {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in params_table.items()}
        self.num_envs = num_envs
        self.name = env_id
        self.observation_space = _obs_space(self.env, self.params)
        self.action_space = _convert_space(self.env.action_space(self.params))

    def at(self, task: jax.Array) -> GymnaxVecEnv:
        """This env with the parameters of row ``task`` of ``params_table`` (itself when there is none)."""
        if self.params_table is None:
            return self
        out = copy.copy(self)
        values = {k: v[task].astype(jnp.asarray(getattr(self.params, k)).dtype) for k, v in self.params_table.items()}
        out.params = self.params.replace(**values)
        return out

    def reset(self, key: jax.Array, previous: Any = None) -> tuple[jax.Array, Any]:
        keys = rng.split(key, self.num_envs)  # hashed once, not in each kernel of the envs' reset
        obs, state = jax.vmap(self.env.reset, in_axes=(0, None))(keys, self.params)
        return obs.astype(jnp.float32), state

    def step(self, key: jax.Array, state: Any, action: jax.Array):
        keys = jax.random.split(key, self.num_envs)
        obs, state, reward, terminated, truncated, info = jax.vmap(
            self.env.step, in_axes=(0, 0, 0, None)
        )(keys, state, action, self.params)
        truncated = jnp.logical_and(truncated, jnp.logical_not(terminated))
        out_info = {"final_obs": info["final_observation"].astype(jnp.float32)}
        return (
            obs.astype(jnp.float32),
            state,
            reward.astype(jnp.float32),
            terminated.astype(bool),
            truncated.astype(bool),
            out_info,
        )


def _obs_space(env: Any, params: Any) -> Box:
    """Observation space as a Box of float32 (MinAtar's boolean grids become 0/1 floats)."""
    space = env.observation_space(params)
    shape = tuple(int(s) for s in space.shape)
    low = np.broadcast_to(np.asarray(getattr(space, "low", 0.0), np.float32), shape).ravel()
    high = np.broadcast_to(np.asarray(getattr(space, "high", 1.0), np.float32), shape).ravel()
    return Box(tuple(float(x) for x in low), tuple(float(x) for x in high), shape)
