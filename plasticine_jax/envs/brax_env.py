"""Brax backend: continuous control fully compiled, with a per-task friction for dynamics-shift sequences.

``BraxVecEnv('hopper', num_envs)`` is ``num_envs`` copies of a Brax ``PipelineEnv`` (``brax:<name>`` ids, e.g.
``brax:inverted_pendulum``, ``brax:hopper``), vmapped, behind the ``VecEnv`` contract (``envs.core``):

* observations ``Box(-inf, inf)`` float32, actions ``Box(-1, 1)^n`` (Brax envs map [-1, 1] onto their
  actuators' control range themselves), float32 rewards;
* auto-reset inside ``step``: ``terminated`` is the env's own ``done`` (e.g. the pole fell, the hopper is
  unhealthy), ``truncated`` is ``episode_length`` steps reached without termination; a finished env restarts
  from a *fresh* reset with its own key (Brax's ``AutoResetWrapper`` instead replays the first initial state
  forever), and ``info["final_obs"]`` is the observation before that reset.

**Friction shifts** (the native counterpart of the reference's continual-DMC dynamics mode, reference §2.3):
with ``friction_table`` (float [num_tasks]) ``at(task)`` returns a copy whose system has *every* geom's
sliding friction (``sys.geom_friction[:, 0]``; torsional and rolling unchanged) set to ``table[task]``.
MuJoCo gives a contact the larger friction of its two geoms, so setting every geom (floor included) makes
the value the friction of every contact. ``task`` may be a traced int32: the value is a gather and the system
a traced pytree, so one compile covers the whole sequence and it is exact under ``vmap``. A NaN entry means
the stock model (every geom keeps its own friction: hopper's foot is 2.0, its other geoms 0.9, the floor 1.0),
so task 0 is the unmodified model even where the geoms differ. With ``friction_scale=True`` the entries are
factors of each geom's stock friction instead (1 = stock).

Physics backend: ``generalized`` (Brax's default) by default; ``backend=`` picks ``mjx``, ``positional`` or
``spring``. Measured with this class on 2 shared CPU cores (``jit`` of reset + a 64-env random-action scan of
1000 steps, hopper 200; compile / env steps/s): inverted_pendulum generalized 7.3 s / 85k, mjx 7.0 s / 157k,
positional 11.7 s / 80k; hopper generalized 17.8 s / 13.8k, mjx 16.8 s / 12.4k, positional 25 s / 30k.
Generalized and mjx compile equally fast (within the noise) and positional is slowest; generalized keeps the
contact-rich bodies fast (envs.md §2: halfcheetah 4.0k vs 1.4k on mjx) and is exact rigid-body dynamics, so it
is the default. The fresh reset inside ``step`` costs about 1 s of compile and 10 % of throughput against
Brax's replayed one.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from plasticine_jax.envs.core import select_state
from plasticine_jax.envs.spaces import Box
from plasticine_jax.errors import ConfigError

PHYSICS_BACKENDS = ("generalized", "mjx", "positional", "spring")


# brax's "not actively maintained" notice, a UserWarning on every model load (MJX's own print that its optional
# Warp kernels are missing, once per process, is left alone: CPU needs none).
_QUIET = ("Brax System, piplines",)


def _brax(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with brax's notice above silenced."""
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        return fn(*args, **kwargs)


def _brax_envs() -> Any:
    def load() -> Any:
        from brax import envs

        return envs

    return _brax(load)


def brax_env_names() -> list[str]:
    """The env names Brax registers (``brax.envs.get_environment`` accepts exactly these)."""
    return sorted(_brax_envs()._envs)  # Brax has no public listing; register_environment writes this dict


def check_env_name(name: str) -> None:
    """A one-line ``ConfigError`` naming Brax's envs for an unknown ``name``."""
    names = brax_env_names()
    if name not in names:
        raise ConfigError(f"unknown brax env '{name}'; brax envs: {', '.join('brax:' + n for n in names)}")


@struct.dataclass
class BraxVecState:
    """The batched Brax state (``brax.envs.State``, leading axis ``num_envs``) and each env's step count."""

    env_state: Any
    steps: jax.Array  # int32 [num_envs]: steps taken in the current episode


class BraxVecEnv:
    """``num_envs`` copies of a Brax env; ``at(task)`` binds a task's friction (see module docstring)."""

    def __init__(self, env_id: str, num_envs: int, backend: str = "generalized", episode_length: int = 1000,
                 friction_table: Any = None, friction_scale: bool = False):
        check_env_name(env_id)
        if backend not in PHYSICS_BACKENDS:
            raise ConfigError(f"unknown brax physics backend '{backend}'; choose from {', '.join(PHYSICS_BACKENDS)}")
        if episode_length < 1:
            raise ConfigError(f"brax episode_length must be >= 1 (got {episode_length})")
        self.env = _brax(_brax_envs().get_environment, env_id, backend=backend)
        self.name = env_id
        self.backend = backend
        self.num_envs = num_envs
        self.episode_length = int(episode_length)
        sys = getattr(self.env, "sys", None)
        # stock sliding friction per geom (None for envs without a MuJoCo system, e.g. brax's 'fast' test env)
        self.stock_frictions = None if sys is None else np.asarray(sys.geom_friction, np.float32)[:, 0].copy()
        self.friction_table: jax.Array | None = None
        self.friction_scale = False
        self.task_friction: jax.Array | None = None  # the bound task's table entry (None: unbound)
        if friction_table is not None:
            self._set_friction_table(friction_table, friction_scale)
        shape = jax.eval_shape(self.env.reset, jax.random.PRNGKey(0)).obs
        if not hasattr(shape, "shape"):
            raise ConfigError(f"brax env '{env_id}' has dict observations; only flat array observations are supported")
        obs_shape = tuple(int(s) for s in shape.shape)
        size = int(np.prod(obs_shape))
        self.observation_space = Box((-np.inf,) * size, (np.inf,) * size, obs_shape)
        act = int(self.env.action_size)
        self.action_space = Box((-1.0,) * act, (1.0,) * act, (act,))

    @property
    def stock_friction(self) -> float:
        """The stock sliding friction when every geom has the same one (so setting it is the unmodified model);
        NaN when the geoms differ or there is no system."""
        f = self.stock_frictions
        if f is None or f.size == 0 or not np.all(f == f[0]):
            return float("nan")
        return float(f[0])

    def with_friction_table(self, table: Any, scale: bool = False) -> BraxVecEnv:
        """A copy of this env that follows ``table`` (see the constructor's ``friction_table``/``friction_scale``),
        without rebuilding the system."""
        out = copy.copy(self)
        out._set_friction_table(table, scale)
        return out

    def _set_friction_table(self, table: Any, scale: bool) -> None:
        self.friction_table = jnp.asarray(_check_table(self.name, self.stock_frictions, table, scale))
        self.friction_scale = bool(scale)

    def at(self, task: jax.Array) -> BraxVecEnv:
        """This env with the friction of row ``task`` of ``friction_table`` (itself when there is none)."""
        if self.friction_table is None:
            return self
        value = self.friction_table[task]
        stock = jnp.asarray(self.stock_frictions)
        column = stock * value if self.friction_scale else jnp.where(jnp.isnan(value), stock, value)
        sys = self.env.sys
        friction = jnp.asarray(sys.geom_friction)
        friction = friction.at[:, 0].set(column.astype(friction.dtype))
        out = copy.copy(self)
        out.env = copy.copy(self.env)
        out.env.sys = sys.tree_replace({"geom_friction": friction})
        out.task_friction = value
        return out

    def geom_friction(self) -> jax.Array:
        """The sliding friction of every geom in the (bound) system, [ngeom]."""
        return jnp.asarray(self.env.sys.geom_friction)[:, 0]

    def reset(self, key: jax.Array, previous: Any = None) -> tuple[jax.Array, BraxVecState]:
        keys = jax.random.split(key, self.num_envs)
        state = jax.vmap(self.env.reset)(keys)
        return state.obs.astype(jnp.float32), BraxVecState(state, jnp.zeros((self.num_envs,), jnp.int32))

    def step(self, key: jax.Array, state: BraxVecState, action: jax.Array):
        keys = jax.random.split(key, self.num_envs)
        next_state, steps, final_obs, reward, terminated, truncated = jax.vmap(self._step_one)(
            keys, state.env_state, state.steps, action)
        obs = next_state.obs.astype(jnp.float32)
        info = {"final_obs": final_obs.astype(jnp.float32)}
        return obs, BraxVecState(next_state, steps), reward.astype(jnp.float32), terminated, truncated, info

    def _step_one(self, key: jax.Array, state: Any, steps: jax.Array, action: jax.Array):
        """One env: step, classify the end (terminated vs truncated), and reset it if it ended."""
        nxt = self.env.step(state, action)
        steps = steps + 1
        terminated = nxt.done > 0.5
        truncated = jnp.logical_and(steps >= self.episode_length, jnp.logical_not(terminated))
        done = jnp.logical_or(terminated, truncated)
        fresh = self.env.reset(key)
        new = select_state(done, fresh, nxt, _FIELDS)
        return new, jnp.where(done, 0, steps), nxt.obs, nxt.reward, terminated, truncated


# State fields a finished env takes from its reset
_FIELDS = ("pipeline_state", "obs", "reward", "done", "metrics", "info")


def _check_table(env_id: str, stock: np.ndarray | None, table: Any, scale: bool) -> np.ndarray:
    """The friction table as float32 [num_tasks], or a one-line ConfigError."""
    if stock is None:
        raise ConfigError(f"brax env '{env_id}' has no MuJoCo system, so its friction cannot shift")
    t = np.asarray(table, np.float32)
    if t.ndim != 1 or t.size == 0:
        raise ConfigError(f"brax friction table must be a non-empty 1-D array [num_tasks] (got shape {t.shape})")
    given = t[~np.isnan(t)]
    if np.any(~np.isfinite(given)) or np.any(given < 0) or (scale and np.any(given <= 0)):
        raise ConfigError(f"brax friction {'factors must be > 0' if scale else 'values must be >= 0'} and finite "
                          f"(got {t.tolist()})")
    return t
