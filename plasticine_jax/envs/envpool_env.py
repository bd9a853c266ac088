"""envpool backend (``envpool:<task>``): Atari and Procgen stepped by envpool's C++ pool *inside* the compiled graph.

``EnvpoolVecEnv('Pong-v5', num_envs)`` puts envpool 1.2.5's XLA interface (``handle, recv, send, step =
pool.xla()``, an FFI custom call) behind the ``VecEnv`` contract (``envs.core``), so ``env.step`` runs inside
``jit(lax.scan)`` and under ``vmap`` over seeds like any native backend. Supported tasks: Atari ``<Game>-v5``
(``envpool:Pong-v5``) and Procgen ``<Game><Mode>-v0`` (``envpool:StarpilotEasy-v0``); MuJoCo/DMC tasks are refused
(their XLA actions must be float64, envs.md §3).

Design
------
* **One pool per vmapped batch of seeds.** envpool's XLA step cannot be vmapped: the pool pointer is a static
  attribute of the custom call and one call always steps the whole pool. ``reset`` and ``step`` are therefore
  two JAX primitives (``envpool_reset``, ``envpool_step``) whose batching rule merges the vmapped axis into the
  env axis: under ``vmap`` over S seeds, the E envs of every seed are ONE pool of S x E envs, stepped by one call
  (seed slot s owns pool envs ``s*E .. s*E+E-1``); nested vmaps merge again. Without vmap the same code runs a
  pool of E envs. (This is what ``jax.custom_batching.custom_vmap`` would do, but custom_vmap also traces its
  per-seed primal, which would build an unused E-env pool: here a pool is built only when a primitive is
  *lowered*, from a registry keyed by the env object and the pool size, so ``init`` and ``run_updates``,
  compiled separately, share it.)
* **State = a token.** The env state is envpool's ``uint8[8]`` handle, carried through ``lax.scan``: every pool
  call consumes the token of the previous one, which orders the side effects. The envs themselves live in C++,
  so the state is not a snapshot: stepping the same state twice steps the pool twice.
* **Seeding.** envpool seeds every env when the pool is made: env i of a pool made with seed ``b`` is seeded
  from ``(b, i)`` (Atari: ALE seed ``b + i``; Procgen: its level-seed generator from ``(b, i)``). The pool is made
  with ``b = seed`` (constructor option, default 0), so seed slot s's env e is env ``s*E + e`` of that pool: the
  slots get distinct env streams, slot s's stream does not depend on how many seeds run, and a run is
  reproducible. The JAX key given to ``reset``/``step`` is not used (envpool's randomness is fixed at make time),
  so ``--seed`` changes the networks and exploration but not the env streams; the env streams follow the
  slot. Two env objects never share a pool, so a second run in the same process starts from fresh pools.
* **Auto-reset inside the step.** envpool (gymnasium API) resets a finished env on its *next* step, ignoring
  that step's action, returning the reset observation with reward 0. Our contract resets inside the step:
  ``envpool_step`` calls the XLA step on the whole pool, and, when any env finished (``lax.cond`` on the merged
  batch), sends a *partial* batch for just those envs through envpool's Python API (a host callback, about
  0.2 ms, only on steps where an episode ended), which runs exactly envpool's own auto-reset for them (same
  code path, same RNG draws, action ignored). So ``obs`` is the reset observation, ``info["final_obs"]`` the
  terminal one, and the learner never sees envpool's extra reset step; per env, the sequence of observations,
  rewards and ends is the one envpool's own loop gives with that step removed. ``reset`` is envpool's
  ``reset()`` of the whole pool (a fresh game/level for every env).
* **terminated / truncated** are envpool's: ``truncated`` = the time limit (Atari: 27000 agent steps, option
  ``max_episode_steps``; Procgen: the game's own timeout, e.g. 1000 steps for starpilot), ``terminated`` = done and
  not truncated.
* **Observations** become float32 NHWC in [0, 255] (our Nature/IMPALA CNNs divide by 255 themselves, as the
  reference's networks do): Atari ``uint8[4, 84, 84]`` (4 stacked 84x84 grayscale frames) -> ``[84, 84, 4]``;
  Procgen is made with ``channel_first=False`` (``uint8[64, 64, 3]`` RGB, as the reference's ``ProcgenEnv``).
* **Atari wrappers** (reference §1.3, ``S/pqn_atari_vanilla.py``): ``episodic_life=True, reward_clip=True`` and
  envpool's other defaults (frame skip 4, noop_max 30, fire reset, sticky actions 0, 27000-step cap). The learner
  sees clipped rewards and a life loss as ``terminated``; ``info["raw_reward"]`` (the unclipped score) and
  ``info["game_over"]`` (the game ended: no lives left, or the time limit) let ``EpisodeStats`` log whole games
  with their real score, as the reference logs an episode only when ``lives == 0`` with the unclipped return.
  (The reference misses time-limited games; here they count, with their score so far.) Episode lengths count
  agent steps of the whole game.
* **Procgen**: envpool's defaults are the reference's standard scenario (``num_levels=0``: unlimited levels,
  ``start_level=0``; the mode is in the task id). It needs the system Qt 5 runtime (envs.md §1d); without it
  the env refuses with one line naming ``apt-get install -y --no-install-recommends libqt5gui5``.

Other keyword arguments go to ``envpool.make`` (e.g. ``max_episode_steps=100``, ``noop_max=1``,
``episodic_life=False``, ``num_levels=200``, ``num_threads=4``).
"""

from __future__ import annotations

import difflib
import importlib
import itertools
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import io_callback
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from plasticine_jax.envs.core import TasklessEnv
from plasticine_jax.envs.spaces import Box, Discrete
from plasticine_jax.errors import ConfigError

INSTALL = 'pip install -e ".[envpool]"'
QT_INSTALL = "apt-get install -y --no-install-recommends libqt5gui5"
KINDS = {"envpool.atari": "atari", "envpool.procgen": "procgen"}
DEFAULTS = {"atari": {"episodic_life": True, "reward_clip": True}, "procgen": {"channel_first": False}}
_RESERVED = ("num_envs", "batch_size", "env_type", "env_seed")
_TOKEN = (8,)  # envpool's XLA handle: uint8[8]


def _envpool() -> Any:
    try:
        import envpool
    except ImportError as e:
        raise ConfigError(f"the envpool backend needs envpool 1.2.5: {INSTALL} ({e})") from None
    return envpool


def task_kind(task: str) -> str:
    """'atari' or 'procgen' for a supported envpool task id; a one-line ``ConfigError`` for anything else (unknown
    id, unsupported family, envpool missing, Procgen without the Qt 5 runtime)."""
    envpool = _envpool()
    specs = envpool.registration.registry.specs
    if task not in specs:
        close = difflib.get_close_matches(task, list(specs), n=3)
        hint = f" (did you mean {', '.join('envpool:' + c for c in close)}?)" if close else ""
        raise ConfigError(f"unknown envpool task '{task}'{hint}; Atari tasks are <Game>-v5 (envpool:Pong-v5), "
                          f"Procgen tasks <Game><Mode>-v0 (envpool:StarpilotEasy-v0)")
    module = specs[task][0]
    if module not in KINDS:
        raise ConfigError(f"envpool task '{task}' ({module}) is not supported yet; the envpool backend runs Atari "
                          f"(<Game>-v5) and Procgen (<Game><Mode>-v0) tasks")
    try:
        importlib.import_module(module)
    except ImportError as e:
        if KINDS[module] == "procgen":
            raise ConfigError(f"envpool Procgen needs the system Qt 5 runtime: {QT_INSTALL} ({e})") from None
        raise ConfigError(f"envpool cannot load {module}: {e}") from None
    return KINDS[module]


# ---------------------------------------------------------------------------------------------------- pools
@dataclass(frozen=True)
class PoolSpec:
    """What a pool is made from (static, hashable: a primitive parameter). ``uid`` ties pools to one env object."""

    task: str
    kind: str
    seed: int
    options: tuple[tuple[str, Any], ...]
    obs_shape: tuple[int, ...]  # envpool's per-env observation (uint8)
    uid: int


class _Pool:
    """One envpool pool of ``total`` envs (sync mode) with its XLA functions and the host-side reset helpers."""

    def __init__(self, spec: PoolSpec, total: int):
        envpool = _envpool()
        self.spec, self.total = spec, total
        self.env = envpool.make(spec.task, env_type="gymnasium", num_envs=total, batch_size=total, seed=spec.seed,
                                **dict(spec.options))
        self.xla_step = self.env.xla()[3]  # (handle, recv, send, step): the handle is a static attribute of the call

    def reset_all(self, token: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Host: envpool's reset of every env (in env order)."""
        obs, _ = self.env.reset()
        return np.asarray(token, np.uint8), np.ascontiguousarray(obs, np.uint8)

    def reset_done(self, token: np.ndarray, done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Host: envpool's own auto-reset of the finished envs only (a partial batch; their action is ignored):
        their reset observations at their rows, zeros elsewhere."""
        fresh = np.zeros((self.total, *self.spec.obs_shape), np.uint8)
        ids = np.flatnonzero(np.asarray(done)).astype(np.int32)
        if ids.size:
            self.env.send(np.zeros(ids.size, np.int32), ids)
            obs, _, _, _, info = self.env.recv()
            fresh[np.asarray(info["env_id"])] = obs
        return np.asarray(token, np.uint8), fresh


_POOLS: dict[tuple[PoolSpec, int], _Pool] = {}


def pool_for(spec: PoolSpec, total: int) -> _Pool:
    """The pool of ``total`` envs for ``spec`` (made on first use: when a primitive is lowered)."""
    key = (spec, total)
    if key not in _POOLS:
        _POOLS[key] = _Pool(spec, total)
    return _POOLS[key]


def _drop_pools(uid: int) -> None:
    for key in [k for k in _POOLS if k[0].uid == uid]:
        del _POOLS[key]


# ---------------------------------------------------------------------------------------------------- primitives
def _token_struct() -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(_TOKEN, jnp.uint8)


def _shaped(shape: tuple[int, ...], dtype: Any) -> jax.core.ShapedArray:
    return jax.core.ShapedArray(shape, jnp.dtype(dtype))


def _step_avals(spec: PoolSpec, total: int) -> list:
    obs = _shaped((total, *spec.obs_shape), jnp.uint8)
    f32, flag = _shaped((total,), jnp.float32), _shaped((total,), jnp.bool_)
    # token, obs (after the reset), final_obs, reward, terminated, truncated, raw_reward, game_over
    return [_shaped(_TOKEN, jnp.uint8), obs, obs, f32, flag, flag, f32, flag]


def _reset_graph(pool: _Pool, key_data: jax.Array, token: jax.Array) -> list:
    """The whole pool's reset as a host callback, after the call that made ``token`` (the key data only carries
    the vmapped axis)."""
    del key_data
    obs = jax.ShapeDtypeStruct((pool.total, *pool.spec.obs_shape), jnp.uint8)
    token, obs = io_callback(pool.reset_all, (_token_struct(), obs), token, ordered=False)
    return [token, obs]


def _step_graph(pool: _Pool, token: jax.Array, action: jax.Array) -> list:
    """XLA step of the whole pool, then envpool's reset of the envs that finished (only when some did)."""
    token, (obs, reward, terminated, truncated, info) = pool.xla_step(token, action.astype(jnp.int32))
    terminated, truncated = terminated.astype(bool), truncated.astype(bool)
    done = terminated | truncated
    fresh_struct = jax.ShapeDtypeStruct(obs.shape, jnp.uint8)

    def reset_done(tok):
        return io_callback(pool.reset_done, (_token_struct(), fresh_struct), tok, done, ordered=False)

    token, fresh = jax.lax.cond(done.any(), reset_done, lambda tok: (tok, obs), token)
    new_obs = jnp.where(done.reshape(-1, *[1] * (obs.ndim - 1)), fresh, obs)
    reward = reward.astype(jnp.float32)
    if pool.spec.kind == "atari":  # unclipped score; the game ended (no lives left, or the time limit)
        raw_reward = info["reward"].astype(jnp.float32)
        game_over = info["terminated"].astype(bool) | truncated
    else:
        raw_reward, game_over = reward, done
    return [token, new_obs, obs, reward, terminated, truncated, raw_reward, game_over]


def _lowering(graph: Any):
    def lower(ctx: Any, *args: Any, spec: PoolSpec, total: int) -> Any:
        return mlir.lower_fun(partial(graph, pool_for(spec, total)), multiple_results=True)(ctx, *args)

    return lower


def _batcher(prim: Primitive):
    """vmap over seeds (any axis, nested vmaps included): one call on a pool ``axis size`` times larger; the
    token is shared (one pool), every other output gets the axis back in front."""

    def rule(args: Any, dims: Any, *, spec: PoolSpec, total: int) -> Any:
        size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
        flat = []
        for a, d in zip(args, dims, strict=True):
            a = jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
            flat.append(a)
        if prim is _STEP:
            token, action = flat
            outs = prim.bind(token[0], action.reshape(size * total, *action.shape[2:]), spec=spec, total=size * total)
        else:  # reset: the key data only carries the axis
            outs = prim.bind(flat[0][0], flat[1][0], spec=spec, total=size * total)
        token, rest = outs[0], outs[1:]
        out = [jnp.broadcast_to(token, (size, *token.shape))] + [o.reshape(size, total, *o.shape[1:]) for o in rest]
        return out, [0] * len(out)

    return rule


def _primitive(name: str, avals: Any, graph: Any) -> Primitive:
    prim = Primitive(name)
    prim.multiple_results = True
    prim.def_abstract_eval(avals)
    prim.def_impl(lambda *args, **params: jax.jit(partial(prim.bind, **params))(*args))  # eager calls compile
    mlir.register_lowering(prim, _lowering(graph))
    return prim


_RESET = _primitive("envpool_reset", lambda key, token, *, spec, total: [
    _shaped(_TOKEN, jnp.uint8), _shaped((total, *spec.obs_shape), jnp.uint8)], _reset_graph)
_STEP = _primitive("envpool_step", lambda token, action, *, spec, total: _step_avals(spec, total), _step_graph)
batching.primitive_batchers[_RESET] = _batcher(_RESET)
batching.primitive_batchers[_STEP] = _batcher(_STEP)


# ---------------------------------------------------------------------------------------------------- the VecEnv
@struct.dataclass
class EnvpoolState:
    """The pool's token (envpool's XLA handle, uint8[8]); the envs live in the C++ pool."""

    token: jax.Array


_UIDS = itertools.count()


class EnvpoolVecEnv(TasklessEnv):
    """``num_envs`` envs of an envpool task per seed (see the module docstring)."""

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, **options: Any):
        self.kind = task_kind(env_id)
        bad = [k for k in options if k in _RESERVED]
        if bad:
            raise ConfigError(f"envpool option '{bad[0]}' is set by the backend (num_envs per seed x seeds); drop it")
        options = {**DEFAULTS[self.kind], **options}
        envpool = _envpool()
        try:
            spec = envpool.make_spec(env_id, num_envs=1, seed=int(seed), **options)
        except (TypeError, AssertionError, ValueError, RuntimeError) as e:
            raise ConfigError(f"envpool {env_id}: bad options {options}: {e}") from None
        obs_space, act_space = spec.gymnasium_observation_space, spec.gymnasium_action_space
        if np.dtype(obs_space.dtype) != np.uint8 or len(obs_space.shape) != 3:
            raise ConfigError(f"envpool {env_id}: expected uint8 image observations, got {obs_space}")
        self.name = env_id
        self.num_envs = int(num_envs)
        self.seed = int(seed)
        self.options = options
        self.channel_first = self.kind == "atari" or bool(options.get("channel_first", True))
        uid = next(_UIDS)
        self.spec = PoolSpec(env_id, self.kind, int(seed), tuple(sorted(options.items())),
                             tuple(int(s) for s in obs_space.shape), uid)
        weakref.finalize(self, _drop_pools, uid)
        shape = self.spec.obs_shape
        if self.channel_first:
            shape = (*shape[1:], shape[0])
        size = int(np.prod(shape))
        self.observation_space = Box((0.0,) * size, (255.0,) * size, shape)
        self.action_space = Discrete(int(act_space.n))

    def _obs(self, raw: jax.Array) -> jax.Array:
        """uint8 [..., C, H, W] or [..., H, W, C] -> float32 NHWC in [0, 255]."""
        x = raw.astype(jnp.float32)
        return jnp.moveaxis(x, -3, -1) if self.channel_first else x

    def reset(self, key: jax.Array, previous: Any = None) -> tuple[jax.Array, EnvpoolState]:
        """envpool's reset of every env; ``key`` only carries the vmapped axis (envpool is seeded at make time).
        With a ``previous`` state the reset comes after the calls that made it (a reset inside a compiled run)."""
        key_data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        token = previous.token if isinstance(previous, EnvpoolState) else jnp.zeros(_TOKEN, jnp.uint8)
        token, obs = _RESET.bind(key_data, token, spec=self.spec, total=self.num_envs)
        return self._obs(obs), EnvpoolState(token)

    def step(self, key: jax.Array, state: EnvpoolState, action: jax.Array):
        token, obs, final_obs, reward, terminated, truncated, raw_reward, game_over = _STEP.bind(
            state.token, action.astype(jnp.int32), spec=self.spec, total=self.num_envs)
        info = {"final_obs": self._obs(final_obs)}
        if self.kind == "atari":
            info["raw_reward"] = raw_reward
            info["game_over"] = game_over
        return self._obs(obs), EnvpoolState(token), reward, terminated, truncated, info
