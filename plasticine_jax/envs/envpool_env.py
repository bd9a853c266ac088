"""envpool backend (``envpool:<task>``): Atari, Procgen and DMC stepped by envpool's C++ pool *inside* the compiled
graph, one task or a task sequence.

``EnvpoolVecEnv('Pong-v5', num_envs)`` puts envpool 1.2.5's XLA interface (``handle, recv, send, step =
pool.xla()``, an FFI custom call) behind the ``VecEnv`` contract (``envs.core``), so ``env.step`` runs inside
``jit(lax.scan)`` and under ``vmap`` over seeds like any native backend. Supported tasks: Atari ``<Game>-v5``
(``envpool:Pong-v5``), Procgen ``<Game><Mode>-v0`` (``envpool:StarpilotEasy-v0``) and DMC ``<Domain><Task>-v1``
(``envpool:CheetahRun-v1``). ``EnvpoolVecEnv(..., tasks=[{...}, ...])`` is a task sequence (below).

Design
------
* **One pool per vmapped batch of seeds.** envpool's XLA step cannot be vmapped: the pool pointer is a static
  attribute of the custom call and one call always steps the whole pool. ``reset`` and ``step`` are therefore
  two JAX primitives (``envpool_reset``, ``envpool_step``) whose batching rule merges the vmapped axis into the
  env axis: under ``vmap`` over S seeds, the E envs of every seed are ONE pool of S x E envs, stepped by one call
  (seed slot s owns pool envs ``s*E .. s*E+E-1``); nested vmaps merge again. Without vmap the same code runs a
  pool of E envs. (This is what ``jax.custom_batching.custom_vmap`` would do, but custom_vmap also traces its
  per-seed primal, which would build an unused E-env pool: here a pool is built only when a primitive is
  *lowered*, from a registry keyed by the pool's spec (task, options, env object) and size, so ``init`` and
  ``run_updates``, compiled separately, share it.)
* **State = tokens.** The env state is one envpool ``uint8[8]`` handle per pool (``[pools, 8]``), carried through
  ``lax.scan``: every pool call consumes the token of the previous one, which orders the side effects. The envs
  themselves live in C++, so the state is not a snapshot: stepping the same state twice steps the pool twice.
* **Seeding.** envpool seeds every env when the pool is made: env i of a pool made with seed ``b`` is seeded
  from ``(b, i)`` (Atari: ALE seed ``b + i``; Procgen: its level-seed generator from ``(b, i)``; DMC: ``b + i``).
  The pool is made with ``b = seed`` (constructor option, default 0), so seed slot s's env e is env ``s*E + e``
  of that pool: the slots get distinct env streams, slot s's stream does not depend on how many seeds run, and a
  run is reproducible. The JAX key given to ``reset``/``step`` is not used (envpool's randomness is fixed at make
  time), so ``--seed`` changes the networks and exploration but not the env streams; the env streams follow the
  slot. Two env objects never share a pool, so a second run in the same process starts from fresh pools.
* **Auto-reset inside the step.** envpool (gymnasium API) resets a finished env on its *next* step, ignoring
  that step's action, returning the reset observation with reward 0. Our contract resets inside the step:
  ``envpool_step`` calls the XLA step on the whole pool, and, when any env finished (``lax.cond`` on the merged
  batch), sends a *partial* batch for just those envs through envpool's Python API (a host callback, about
  0.2 ms, only on steps where an episode ended), which runs exactly envpool's own auto-reset for them (same
  code path, same RNG draws, action ignored). So ``obs`` is the reset observation, ``info["final_obs"]`` the
  terminal one, and the learner never sees envpool's extra reset step; per env, the sequence of observations,
  rewards and ends is the one envpool's own loop gives with that step removed. ``reset`` is envpool's
  ``reset()`` of the whole pool (a fresh game/level/episode for every env).
* **terminated / truncated** are envpool's: ``truncated`` = the time limit (Atari: 27000 agent steps, option
  ``max_episode_steps``; Procgen: the game's own timeout, e.g. 1000 steps for starpilot; DMC: 1000 steps),
  ``terminated`` = done and not truncated. DMC as the reference (§1.4): every end is a truncation,
  ``terminated`` is always False.
* **Image observations** become float32 NHWC in [0, 255] (our Nature/IMPALA CNNs divide by 255 themselves, as
  the reference's networks do): Atari ``uint8[4, 84, 84]`` (4 stacked 84x84 grayscale frames) -> ``[84, 84, 4]``;
  Procgen is made with ``channel_first=False`` (``uint8[64, 64, 3]`` RGB, as the reference's ``ProcgenEnv``).
* **Atari wrappers** (reference §1.3, ``S/pqn_atari_vanilla.py``): ``episodic_life=True, reward_clip=True`` and
  envpool's other defaults (frame skip 4, noop_max 30, fire reset, sticky actions 0, 27000-step cap). The learner
  sees clipped rewards and a life loss as ``terminated``; ``info["raw_reward"]`` (the unclipped score) and
  ``info["game_over"]`` (the game ended: no lives left, or the time limit) let ``EpisodeStats`` log whole games
  with their real score, as the reference logs an episode only when ``lives == 0`` with the unclipped return.
  (The reference misses time-limited games; here they count, with their score so far.) Episode lengths count
  agent steps of the whole game.
* **Procgen**: envpool's defaults are the reference's standard scenario (``num_levels=0``: unlimited levels,
  ``start_level=0``; the mode is in the task id). ``info["level_seed"]`` is the level each step was played on
  (``final_obs``'s). envpool's Procgen links Qt 5 Core/Gui (envs.md §1d): the system's (``libqt5gui5``) when
  present, else the copy in the ``PyQt5-Qt5`` wheel (in the ``envpool`` extra), loaded when a Procgen task is first
  asked for (``_procgen_module`` loads Qt and retries envpool's deferred import); with neither the env refuses
  with one line naming both installs. Atari and DMC never load Qt.
* **DMC** (envs.md §3): envpool's XLA interface reads float64 actions and writes float64 observations, and
  envpool declares the FFI call's buffers with JAX's *canonical* dtypes, which are 32-bit while x64 is off (the
  project's setting): a float32 buffer read or written as float64 corrupts memory. So a DMC pool's XLA functions
  are made with x64 on (``jax.enable_x64`` around ``pool.xla()``: the declared buffers stay float64), and in the
  graph x64 is on just around the call: the float32 actions are converted to float64 (an XLA convert), the
  float64 observations and the rewards come back as float32; a trace-time check refuses any non-float64 buffer.
  Nothing else in the graph is 64-bit and no user meets x64. Observations are the dict flattened to float32 in
  dm_control's key order (``DMC_OBS_KEYS``: envpool gives a domain the union of its tasks' keys, zero-filled,
  e.g. quadruped walk's ``rangefinder``; only dm_control's keys of the task are kept, as the reference flattens
  dm_control's dict); the observation space is an unbounded Box, the action space envpool's Box ([-1, 1]).
* **Task sequences** (``tasks=[{"task": "BigfishEasy-v0", "start_level": 5, "num_levels": 1}, ...]``: per task an
  envpool id, default ``env_id``, and envpool options over the shared ``**options``): one pool per distinct
  (task, options), all made when the graph is lowered (tasks with equal id and options share one); the state
  carries every pool's token. ``at(task)`` binds task ``task % len(tasks)`` (an int, or an int32 scalar that may
  be traced), and ``reset``/``step`` run only the bound task's pool: a ``lax.switch`` over pools on the task's
  pool index, each branch stepping its pool with its own token and passing the others through. Pass the
  *unbatched* task under vmap (the learner does): the switch then stays a real branch; a batched index would
  turn it into a select that steps every pool. A switch is ``env.at(new).reset(key)``: the new task's pool is
  reset (fresh episodes), the others keep their state, untouched. Every task must be one family with one
  observation shape and action space (else a one-line ``ConfigError``). The continual scenarios use it
  (``task_backend``, via ``envs.registry.make_task_backend``): ``--continual.shifts levels`` (Procgen single
  levels, reference §2.2 level / intra modes), ``--continual.shifts games`` with envpool task ids (Procgen games
  at one level: task mode; DMC task sequences, §2.3 N).

Other keyword arguments go to ``envpool.make`` (e.g. ``max_episode_steps=100``, ``noop_max=1``,
``episodic_life=False``, ``num_levels=200``, ``num_threads=4``).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import difflib
import importlib
import importlib.util
import itertools
import pathlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import io_callback
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from plasticine_jax.envs.core import cycle_index
from plasticine_jax.envs.spaces import Box, Discrete
from plasticine_jax.errors import ConfigError

INSTALL = 'pip install -e ".[envpool]"'
QT_INSTALL = 'pip install -e ".[envpool]" (its PyQt5-Qt5 wheel) or apt-get install -y libqt5gui5'
_QT_LIBS = ("libQt5Core.so.5", "libQt5Gui.so.5")
KINDS = {"envpool.atari": "atari", "envpool.procgen": "procgen", "envpool.mujoco.dmc": "dmc"}
DEFAULTS: dict[str, dict[str, Any]] = {"atari": {"episodic_life": True, "reward_clip": True},
                                       "procgen": {"channel_first": False}, "dmc": {}}
_RESERVED = ("num_envs", "batch_size", "env_type", "env_seed")
_TOKEN = (8,)  # envpool's XLA handle: uint8[8]
# kind-specific step outputs after (token, obs, final_obs, reward, terminated, truncated), as info entries
EXTRAS: dict[str, tuple[tuple[str, Any], ...]] = {
    "atari": (("raw_reward", jnp.float32), ("game_over", jnp.bool_)),
    "procgen": (("level_seed", jnp.int32),),
    "dmc": (),
}

# dm_control's observation keys, in its order, where envpool's dict differs (envpool gives each domain the union
# of its tasks' keys, zero-filled where unused, and FishSwim in another order); elsewhere envpool's keys are
# dm_control's (tests/test_envpool_tasks.py checks every DMC task against dm_control when it is installed).
_DOG = ("joint_angles", "joint_velocites", "torso_pelvis_height", "z_projection", "torso_com_velocity",
        "inertial_sensors", "foot_forces", "touch_sensors", "actuator_state")
_QUADRUPED = ("egocentric_state", "torso_velocity", "torso_upright", "imu", "force_torque")
_HUMANOID = ("joint_angles", "head_height", "extremities", "torso_vertical", "com_velocity", "velocity")
DMC_OBS_KEYS: dict[str, tuple[str, ...]] = {
    **{f"Dog{t}-v1": _DOG for t in ("Stand", "Walk", "Trot", "Run")},
    "FingerSpin-v1": ("position", "velocity", "touch"),
    "FishUpright-v1": ("joint_angles", "upright", "velocity"),
    "FishSwim-v1": ("joint_angles", "upright", "target", "velocity"),
    **{f"Humanoid{t}-v1": _HUMANOID for t in ("Stand", "Walk", "Run")},
    "HumanoidRunPureState-v1": ("position", "velocity"),
    "QuadrupedWalk-v1": _QUADRUPED,
    "QuadrupedRun-v1": _QUADRUPED,
    "QuadrupedEscape-v1": (*_QUADRUPED, "origin", "rangefinder"),
    "QuadrupedFetch-v1": (*_QUADRUPED, "ball_state", "target_position"),
}


@cache
def _load_qt5() -> bool:
    """Make Qt 5 Core/Gui loadable for envpool's Procgen: the system's if the loader finds them, else the copy
    in the PyQt5-Qt5 wheel, loaded globally so Procgen's extension resolves them by soname. True if loaded
    (once per process)."""
    spec = importlib.util.find_spec("PyQt5")
    wheel_dirs = [pathlib.Path(root) / "Qt5" / "lib" for root in (spec.submodule_search_locations or [])] \
        if spec is not None else []
    for prefix in ("", *(f"{d}/" for d in wheel_dirs)):  # "": the dynamic loader's own search (the system's)
        try:
            for lib in _QT_LIBS:
                ctypes.CDLL(prefix + lib, mode=ctypes.RTLD_GLOBAL)
            return True
        except OSError:
            continue
    return False


def _procgen_module() -> Any:
    """``envpool.procgen`` with its extension loaded. envpool imports it eagerly and, when Qt 5 is missing,
    defers the error to first use; after loading Qt (``_load_qt5``) a deferred failure is retried once."""
    module = importlib.import_module("envpool.procgen")
    if getattr(module, "_PROCGEN_IMPORT_ERROR", None) is not None and _load_qt5():
        module = importlib.reload(module)
    error = getattr(module, "_PROCGEN_IMPORT_ERROR", None)
    if error is not None:
        raise ImportError(str(error))
    return module


def _envpool() -> Any:
    try:
        import envpool
    except ImportError as e:
        raise ConfigError(f"the envpool backend needs envpool 1.2.5: {INSTALL} ({e})") from None
    return envpool


@cache
def _spaces(task: str, seed: int, options: tuple) -> tuple[Any, Any]:
    """envpool's gymnasium (observation, action) spaces of ``task`` with ``options`` (sorted items), from its spec.
    Cached: a spec takes about 0.2 s to build, and a sweep builds one learner per cell, a task sequence one pool
    per task. The spaces are only read."""
    spec = _envpool().make_spec(task, num_envs=1, seed=seed, **dict(options))
    return spec.gymnasium_observation_space, spec.gymnasium_action_space


def task_kind(task: str) -> str:
    """'atari', 'procgen' or 'dmc' for a supported envpool task id; a one-line ``ConfigError`` for anything else
    (unknown id, unsupported family, envpool missing, Procgen without the Qt 5 runtime)."""
    envpool = _envpool()
    specs = envpool.registration.registry.specs
    if task not in specs:
        close = difflib.get_close_matches(task, list(specs), n=3)
        hint = f" (did you mean {', '.join('envpool:' + c for c in close)}?)" if close else ""
        raise ConfigError(f"unknown envpool task '{task}'{hint}; Atari tasks are <Game>-v5 (envpool:Pong-v5), "
                          f"Procgen tasks <Game><Mode>-v0 (envpool:StarpilotEasy-v0), DMC tasks <Domain><Task>-v1 "
                          f"(envpool:CheetahRun-v1)")
    module = specs[task][0]
    if module not in KINDS:
        raise ConfigError(f"envpool task '{task}' ({module}) is not supported yet; the envpool backend runs Atari "
                          f"(<Game>-v5), Procgen (<Game><Mode>-v0) and DMC (<Domain><Task>-v1) tasks")
    try:
        _procgen_module() if KINDS[module] == "procgen" else importlib.import_module(module)
    except ImportError as e:
        if KINDS[module] == "procgen":
            raise ConfigError(f"envpool Procgen needs the Qt 5 runtime: {QT_INSTALL} ({e})") from None
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
    obs_shape: tuple[int, ...]  # the primitives' per-env observation: envpool's uint8 image, or DMC's flat float32
    uid: int
    obs_keys: tuple[str, ...] = ()  # DMC: the observation dict's keys flattened, in order
    action_shape: tuple[int, ...] = ()  # DMC: the float action vector's shape; () = one discrete action

    @property
    def obs_dtype(self) -> Any:
        return jnp.float32 if self.kind == "dmc" else jnp.uint8

    def flat_obs(self, obs: Any, xp: Any = np) -> Any:
        """envpool's observation -> the primitives' (DMC: the dict's ``obs_keys`` flattened to float32, in order;
        images unchanged); ``xp`` numpy on the host, jax.numpy in the graph."""
        if self.kind != "dmc":
            return xp.ascontiguousarray(obs, np.uint8) if xp is np else obs
        n = obs[self.obs_keys[0]].shape[0]
        return xp.concatenate([xp.reshape(obs[k], (n, -1)).astype(xp.float32) for k in self.obs_keys], axis=1)


class _Pool:
    """One envpool pool of ``total`` envs (sync mode) with its XLA step and the host-side reset helpers."""

    def __init__(self, spec: PoolSpec, total: int):
        envpool = _envpool()
        self.spec, self.total = spec, total
        self.env = envpool.make(spec.task, env_type="gymnasium", num_envs=total, batch_size=total, seed=spec.seed,
                                **dict(spec.options))
        # (handle, recv, send, step): the handle is a static attribute of the call. envpool fixes the FFI call's
        # buffer dtypes here, canonicalised: without x64 a float64 (DMC) action or observation would be declared
        # float32 while the C++ side reads and writes float64 -- so DMC's are made with x64 on.
        with jax.enable_x64(True) if spec.kind == "dmc" else contextlib.nullcontext():
            self.xla_step = self.env.xla()[3]

    def reset_all(self, token: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Host: envpool's reset of every env (in env order)."""
        obs, _ = self.env.reset()
        return np.asarray(token, np.uint8), self.spec.flat_obs(obs)

    def reset_done(self, token: np.ndarray, done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Host: envpool's own auto-reset of the finished envs only (a partial batch; their action is ignored):
        their reset observations at their rows, zeros elsewhere."""
        fresh = np.zeros((self.total, *self.spec.obs_shape), self.spec.obs_dtype)
        ids = np.flatnonzero(np.asarray(done)).astype(np.int32)
        if ids.size:
            dtype = np.float64 if self.spec.kind == "dmc" else np.int32
            self.env.send(np.zeros((ids.size, *self.spec.action_shape), dtype), ids)
            obs, _, _, _, info = self.env.recv()
            fresh[np.asarray(info["env_id"])] = self.spec.flat_obs(obs)
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
    obs = _shaped((total, *spec.obs_shape), spec.obs_dtype)
    f32, flag = _shaped((total,), jnp.float32), _shaped((total,), jnp.bool_)
    # token, obs (after the reset), final_obs, reward, terminated, truncated, then the kind's extras
    return [_shaped(_TOKEN, jnp.uint8), obs, obs, f32, flag, flag,
            *[_shaped((total,), dtype) for _, dtype in EXTRAS[spec.kind]]]


def _reset_graph(pool: _Pool, key_data: jax.Array, token: jax.Array) -> list:
    """The whole pool's reset as a host callback, after the call that made ``token`` (the key data only carries
    the vmapped axis)."""
    del key_data
    obs = jax.ShapeDtypeStruct((pool.total, *pool.spec.obs_shape), pool.spec.obs_dtype)
    token, obs = io_callback(pool.reset_all, (_token_struct(), obs), token, ordered=False)
    return [token, obs]


def _xla_step(pool: _Pool, token: jax.Array, action: jax.Array) -> tuple:
    """envpool's XLA step of the whole pool -> (token, obs, reward, terminated, truncated, info). DMC: the action
    is handed over as float64 and the float64 observation dict comes back flattened to float32, both with x64 on
    just around the call (the rest of the graph stays 32-bit)."""
    spec = pool.spec
    if spec.kind != "dmc":
        token, (obs, reward, terminated, truncated, info) = pool.xla_step(token, action.astype(jnp.int32))
        return token, obs, reward, terminated, truncated, info
    with jax.enable_x64(True):
        action = action.astype(jnp.float64)
        token, (obs, reward, terminated, truncated, info) = pool.xla_step(token, action)
        dtypes = {action.dtype, *(obs[k].dtype for k in spec.obs_keys)}
        if dtypes != {jnp.dtype(jnp.float64)}:  # never hand the C++ side a 32-bit buffer it reads as 64-bit
            raise AssertionError(f"envpool {spec.task}: XLA buffers must be float64, got {dtypes}")
        obs = spec.flat_obs(obs, jnp)
        reward = reward.astype(jnp.float32)
    return token, obs, reward, terminated, truncated, info


def _step_graph(pool: _Pool, token: jax.Array, action: jax.Array) -> list:
    """XLA step of the whole pool, then envpool's reset of the envs that finished (only when some did)."""
    token, obs, reward, terminated, truncated, info = _xla_step(pool, token, action)
    terminated, truncated = terminated.astype(bool), truncated.astype(bool)
    done = terminated | truncated
    fresh_struct = jax.ShapeDtypeStruct(obs.shape, obs.dtype)

    def reset_done(tok):
        return io_callback(pool.reset_done, (_token_struct(), fresh_struct), tok, done, ordered=False)

    token, fresh = jax.lax.cond(done.any(), reset_done, lambda tok: (tok, obs), token)
    new_obs = jnp.where(done.reshape(-1, *[1] * (obs.ndim - 1)), fresh, obs)
    reward = reward.astype(jnp.float32)
    kind = pool.spec.kind
    if kind == "atari":  # unclipped score; the game ended (no lives left, or the time limit)
        extras = [info["reward"].astype(jnp.float32), info["terminated"].astype(bool) | truncated]
    elif kind == "procgen":  # the level this step was played on (final_obs's)
        extras = [info["level_seed"].astype(jnp.int32)]
    else:  # dmc: the time limit is the only end (reference §1.4: terminated always False)
        terminated, truncated, extras = jnp.zeros_like(done), done, []
    return [token, new_obs, obs, reward, terminated, truncated, *extras]


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
    _shaped(_TOKEN, jnp.uint8), _shaped((total, *spec.obs_shape), spec.obs_dtype)], _reset_graph)
_STEP = _primitive("envpool_step", lambda token, action, *, spec, total: _step_avals(spec, total), _step_graph)
batching.primitive_batchers[_RESET] = _batcher(_RESET)
batching.primitive_batchers[_STEP] = _batcher(_STEP)


# ---------------------------------------------------------------------------------------------------- the VecEnv
@struct.dataclass
class EnvpoolState:
    """One token per pool (envpool's XLA handle, uint8[8]; ``[pools, 8]``); the envs live in the C++ pools."""

    token: jax.Array


_UIDS = itertools.count()


class EnvpoolVecEnv:
    """``num_envs`` envs of an envpool task per seed, or of a task sequence (``tasks``; see the module
    docstring)."""

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, tasks: Sequence[dict] | None = None,
                 **options: Any):
        entries = [dict(t) for t in tasks] if tasks is not None else [{}]
        if not entries:
            raise ConfigError("an envpool task sequence needs at least one task")
        self.name = env_id
        self.num_envs = int(num_envs)
        self.seed = int(seed)
        uid = next(_UIDS)
        weakref.finalize(self, _drop_pools, uid)
        specs: dict[PoolSpec, int] = {}  # distinct pools, in order of first use
        task_pool, spaces = [], None
        for entry in entries:
            task = entry.pop("task", env_id)
            spec, obs_space, act_space = self._pool_spec(task, {**options, **entry}, uid)
            task_pool.append(specs.setdefault(spec, len(specs)))
            if spaces is None:
                spaces = (task, spec.kind, obs_space, act_space)
            elif (spec.kind, obs_space.shape, act_space) != (spaces[1], spaces[2].shape, spaces[3]):
                first, kind, o, a = spaces
                raise ConfigError(f"envpool tasks {first} ({kind}, observations {o.shape}, actions {a}) and {task} "
                                  f"({spec.kind}, observations {obs_space.shape}, actions {act_space}) differ; every "
                                  f"task of a sequence must be one family with one observation shape and action space")
        self.specs = tuple(specs)
        self.task_pool = tuple(task_pool)  # task -> its pool (tasks with equal id and options share one)
        self.tasks = tuple(entries)
        self.kind = self.specs[0].kind
        self.spec = self.specs[0]  # the single task's pool (task 0's in a sequence)
        self.options = dict(self.spec.options)
        self.observation_space, self.action_space = spaces[2], spaces[3]
        self.task_index: int | jax.Array | None = None  # None: unbound, behaves as task 0

    def _pool_spec(self, task: str, options: dict, uid: int) -> tuple[PoolSpec, Box, Box | Discrete]:
        kind = task_kind(task)
        bad = [k for k in options if k in _RESERVED]
        if bad:
            raise ConfigError(f"envpool option '{bad[0]}' is set by the backend (num_envs per seed x seeds); drop it")
        options = {**DEFAULTS[kind], **options}
        items = tuple(sorted(options.items()))  # the cache key of the spaces and of the pool
        try:
            obs_space, act_space = _spaces(task, self.seed, items)
        except (TypeError, AssertionError, ValueError, RuntimeError) as e:
            raise ConfigError(f"envpool {task}: bad options {options}: {e}") from None
        obs_keys, action_shape = (), ()
        if kind == "dmc":
            obs_keys = DMC_OBS_KEYS.get(task, tuple(obs_space.spaces))
            size = sum(int(np.prod(obs_space[k].shape)) for k in obs_keys)
            shape = raw_shape = (size,)
            observations = Box((-np.inf,) * size, (np.inf,) * size, shape)
            action_shape = tuple(int(s) for s in act_space.shape)
            actions: Box | Discrete = Box(tuple(float(x) for x in np.ravel(act_space.low)),
                                          tuple(float(x) for x in np.ravel(act_space.high)), action_shape)
        else:
            if np.dtype(obs_space.dtype) != np.uint8 or len(obs_space.shape) != 3:
                raise ConfigError(f"envpool {task}: expected uint8 image observations, got {obs_space}")
            raw_shape = tuple(int(s) for s in obs_space.shape)
            shape = (*raw_shape[1:], raw_shape[0]) if _channel_first(kind, options) else raw_shape
            size = int(np.prod(shape))
            observations = Box((0.0,) * size, (255.0,) * size, shape)
            actions = Discrete(int(act_space.n))
        pool = PoolSpec(task, kind, self.seed, items, raw_shape, uid, obs_keys, action_shape)
        return pool, observations, actions

    # ------------------------------------------------------------------ tasks
    def at(self, task: int | jax.Array) -> EnvpoolVecEnv:
        """This env bound to task ``task % len(tasks)`` (a Python int or an int32 scalar, may be traced: pass the
        *unbatched* task under vmap, so the dispatch stays a real ``lax.switch``). Without a sequence: itself."""
        if len(self.tasks) == 1:
            return self
        out = copy.copy(self)
        out.task_index = cycle_index(task, len(self.tasks))
        return out

    def _slot(self) -> int | jax.Array:
        """The bound task's pool: a Python int when it is static."""
        if self.task_index is None:
            return self.task_pool[0]
        if len(self.specs) == 1:
            return 0
        if isinstance(self.task_index, int):
            return self.task_pool[self.task_index]
        return jnp.asarray(self.task_pool, jnp.int32)[self.task_index]

    def _on_pool(self, call: Any, token: jax.Array, *args: Any) -> tuple:
        """``call(spec, pool token, *args) -> (token, *outs)`` on the bound task's pool only (``lax.switch`` when
        the task is traced); returns the tokens of every pool with that pool's replaced, and ``outs``."""

        def branch(p: int):
            def run(token: jax.Array, *args: Any) -> tuple:
                tok, *outs = call(self.specs[p], token[p], *args)
                return (token.at[p].set(tok), *outs)

            return run

        slot = self._slot()
        if isinstance(slot, int):
            return branch(slot)(token, *args)
        return jax.lax.switch(slot, [branch(p) for p in range(len(self.specs))], token, *args)

    # ------------------------------------------------------------------ the contract
    def _obs(self, spec: PoolSpec, raw: jax.Array) -> jax.Array:
        """The primitives' observation -> the learner's: images uint8 [..., C, H, W] or [..., H, W, C] -> float32
        NHWC in [0, 255]; DMC's flat float32 as it is."""
        x = raw.astype(jnp.float32)
        return jnp.moveaxis(x, -3, -1) if _channel_first(spec.kind, dict(spec.options)) else x

    def reset(self, key: jax.Array, previous: Any = None) -> tuple[jax.Array, EnvpoolState]:
        """envpool's reset of every env of the bound task's pool; ``key`` only carries the vmapped axis (envpool
        is seeded at make time). With a ``previous`` state the reset comes after the calls that made it (a reset
        inside a compiled run)."""
        key_data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        shape = (len(self.specs), *_TOKEN)
        token = previous.token if isinstance(previous, EnvpoolState) and previous.token.shape[-2:] == shape \
            else jnp.zeros(shape, jnp.uint8)

        def reset(spec: PoolSpec, tok: jax.Array, key_data: jax.Array) -> tuple:
            tok, obs = _RESET.bind(key_data, tok, spec=spec, total=self.num_envs)
            return tok, self._obs(spec, obs)

        token, obs = self._on_pool(reset, token, key_data)
        return obs, EnvpoolState(token)

    def step(self, key: jax.Array, state: EnvpoolState, action: jax.Array):
        def step(spec: PoolSpec, tok: jax.Array, action: jax.Array) -> tuple:
            action = action.astype(jnp.float32 if spec.kind == "dmc" else jnp.int32)
            tok, obs, final_obs, reward, terminated, truncated, *extras = _STEP.bind(
                tok, action, spec=spec, total=self.num_envs)
            info = {"final_obs": self._obs(spec, final_obs)}
            info.update({name: x for (name, _), x in zip(EXTRAS[spec.kind], extras, strict=True)})
            return tok, self._obs(spec, obs), reward, terminated, truncated, info

        token, obs, reward, terminated, truncated, info = self._on_pool(step, state.token, action)
        return obs, EnvpoolState(token), reward, terminated, truncated, info


def _channel_first(kind: str, options: dict) -> bool:
    """Whether envpool's images are [C, H, W] (Atari always; Procgen unless made with ``channel_first=False``)."""
    return kind == "atari" or (kind == "procgen" and bool(options.get("channel_first", True)))


def task_backend(env_id: str, num_envs: int, c: Any, **options: Any) -> tuple[EnvpoolVecEnv, dict]:
    """The envpool env of a continual sequence (``ContinualConfig`` ``c``, shifts ``games`` and/or ``levels``): task
    t plays game ``t`` of ``--continual.games`` (envpool ids; ``env_id`` when games do not shift), on ``num_levels``
    Procgen levels from ``levels[t]`` when levels shift. Returns the env and the tables for config.json."""
    from plasticine_jax.envs import tasks as T

    n = c.num_tasks
    if "games" in c.shifts:
        specs = T.game_specs(c, f"envpool:{env_id}")
        if specs[0].split(":", 1)[0] != "envpool":
            raise ConfigError(f"--continual.games {' '.join(c.games)} are not envpool tasks; --env is envpool:{env_id}")
        games = T.game_sequence(c)
    else:
        games = [env_id] * n
    entries: list[dict] = [{"task": g} for g in games]
    tables: dict[str, Any] = {"game": games} if "games" in c.shifts else {}
    if "levels" in c.shifts:
        for game in dict.fromkeys(games):
            kind = task_kind(game)
            if kind != "procgen":
                family = {"atari": "an Atari", "dmc": "a DMC"}.get(kind, kind)
                raise ConfigError(f"--continual.shifts levels sets Procgen levels; envpool:{game} is {family} task")
        levels = T.level_sequence(c)
        entries = [{**e, "start_level": lv, "num_levels": c.num_levels} for e, lv in zip(entries, levels, strict=True)]
        tables["level"] = np.asarray(levels, np.int32)
    return EnvpoolVecEnv(env_id, num_envs, tasks=entries, **options), tables
