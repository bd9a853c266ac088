"""dm_control backend (``dmc:<domain>_<task>``): DeepMind Control Suite envs stepped on the host *inside* the graph.

``DmcVecEnv('quadruped_walk', num_envs)`` puts ``dm_control.suite`` envs (MuJoCo on the CPU, one Python object per
env) behind the ``VecEnv`` contract (``envs.core``), so ``env.step`` runs inside ``jit(lax.scan)`` and under ``vmap``
over seeds like any native backend. This is the reference's ``StandardDMC`` (reference §1.4,
``plasticine/dmc_wrappers.py``) and its continual "dynamics mode" (§2.3, which never ran in the reference).
Env ids are ``domain_task`` as the reference spells them (``dmc:cheetah_run``, ``dmc:ball_in_cup_catch``,
``dmc:cartpole_swingup_sparse``: the split point is found among the suite's tasks, not at the first ``_``) or
``domain-task`` (``dmc:quadruped-walk``).

Design
------
* **A host callback with an explicit batching rule.** ``reset``/``step`` are ``jax.pure_callback`` s with
  ``vmap_method="broadcast_all"``: under ``vmap`` over S seeds (and any nesting of vmaps) the callback is called
  ONCE per step with every argument given the vmapped axes in front, and steps one host batch of S x E envs (seed
  slot s owns envs ``s*E .. s*E+E-1``, slots in C order of the vmapped axes). Without vmap the same code steps a
  batch of E envs. The host side keeps one list of dm_control envs per (env object, total batch size), made on the
  first call, so ``init`` and ``run_updates``, compiled separately, share it (as ``envpool_env`` keys its pools);
  two env objects never share envs, so a second run in the same process starts from fresh ones.
  ``pure_callback`` rather than ``io_callback``: an unordered ``io_callback`` runs sequentially once per seed
  under vmap (envs.md §3); and because a pure callback whose outputs are unused is dropped, the ``init`` the
  learner traces inside a task switch (only its networks and buffer are used there) does not reset the envs a
  second time. ``jax.custom_batching.custom_vmap`` (its rule calling one callback on the merged batch) gives the
  same single call per step at the same cost (measured: ~51 us per call either way, 2 seeds x 4 envs, no-op host
  function) with more machinery, so the simpler one is used.
* **State = a token, not a snapshot.** The physics lives on the host; the env state in the carry is ``DmcState``,
  an int32 counter per seed (the host batch's call count) that every call consumes and returns. It chains the
  callbacks in data order (a pure callback is otherwise free to be reordered or merged with an identical call) and
  carries the vmapped axis after ``reset``. It does not hold the simulation: stepping the same state twice steps
  the envs twice, and restoring a checkpointed state does not restore the envs (a restored run steps new host
  envs, which start new episodes).
* **Seeding.** Env i of seed slot s is ``suite.load(domain, task, task_kwargs={"random": seed + s*E + i})``
  (``seed``: constructor option, default 0): the envs of all slots are distinct, slot s's envs do not depend on
  how many seeds run, and a run is reproducible. The JAX keys given to ``reset``/``step`` only carry the vmapped
  axis (dm_control draws its own randomness), so ``--seed`` changes the networks and exploration but not the env
  streams, as with envpool.
* **The reference's StandardDMC.** Observations: the observation dict flattened in dict order, float32 (a scalar
  entry is one feature); ``Box(-inf, inf)``. Actions: float32 from the learner, cast to float64 on the host,
  ``Box`` bounds from the action spec (most tasks [-1, 1]; quadruped's differ per joint), not clipped (MuJoCo
  clamps controls to their ranges). Rewards: dm_control's, float32, not normalised. ``terminated`` is always
  False and ``truncated = timestep.last()`` (1000-step episodes by default: the suite's time limit, option
  ``time_limit`` in seconds of simulated time as the suite takes it, e.g. ``time_limit=0.1`` is 10 cartpole steps).
  A task that ends an episode early (e.g. ``lqr``) therefore also reports it as a truncation, as the reference does.
* **Auto-reset inside the step.** An env whose step was ``last()`` is reset on the host in the same call:
  ``obs`` is the first observation of its next episode and ``info["final_obs"]`` the terminal one (for the other
  envs both are the step's observation). dm_control's own next-step reset (which ignores that step's action) never
  happens, so per env the sequence of observations, rewards and ends is the one ``env.step``/``env.reset`` in a
  Python loop gives. ``reset`` resets every env (a new episode; their random streams continue).
* **Dynamics mode** (``friction_table``, float [num_tasks], quadruped only): task k's envs are the quadruped
  model with the toe friction (``<default class="toe"><geom friction=...>``, stock "1.5"; only the sliding
  coefficient, as the reference sets one number) replaced by ``table[k]``; NaN is the unmodified suite model
  (the reference's round 0). The model is made exactly as the suite's ``walk()``/``run()``/``escape()``/
  ``fetch()`` make it (``quadruped.make_model``, ``quadruped.Physics.from_xml_string``, the task class,
  ``control.Environment``), with the edited XML string: nothing is written to disk (the reference wrote
  ``./quadruped.xml`` into the working directory). ``at(task)`` binds the task, a traced int32 scalar that the
  callbacks receive; when an env's task changes, the host rebuilds that env with the new friction and its seed
  (``random`` restarts, as the reference rebuilds its envs at a shift) and resets it. The learner switches tasks
  with ``env.at(new_task).reset(...)``, so the new friction starts with fresh episodes; a ``step`` with a new
  task rebuilds, resets and then steps. An env never bound to a task keeps the host envs' current task (task 0 at
  first). One compile covers every task.

Measured on 2 shared CPU cores (``jit(vmap(reset + lax.scan))`` of 1000 steps, random actions; env steps/s
summed over envs, against dm_control's bare Python loop over the same envs): cartpole_swingup 1 seed x 1 env 5.4k
(loop 14k), 2 x 4 13k (21k); cheetah_run 2 x 4 26k (55k); quadruped_walk 2 x 2 6.1k (8.9k). The difference is
~50-60 us of callback per step plus the flattening and auto-reset bookkeeping; a first call (host envs made,
compile) takes ~0.4-1.2 s.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import warnings
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from plasticine_jax.envs.spaces import Box
from plasticine_jax.errors import ConfigError

INSTALL = 'pip install -e ".[dmc]"'
FRICTION_DOMAIN = "quadruped"
_TOE_GEOMS = ("toe_front_left", "toe_front_right", "toe_back_right", "toe_back_left")


def _suite() -> Any:
    """``dm_control.suite``, or a one-line ConfigError naming the install (or the MuJoCo pin it needs)."""
    try:
        import mujoco
    except ImportError as e:
        raise ConfigError(f"the dmc backend needs dm-control and mujoco 3.17.0: {INSTALL} ({e})") from None
    if not mujoco.__version__.startswith("3."):
        raise ConfigError(f"the dmc backend needs mujoco 3.x (dm-control 1.0.50 breaks on mujoco "
                          f"{mujoco.__version__}): pip install mujoco==3.17.0")
    try:
        with warnings.catch_warnings():  # glfw warns that there is no DISPLAY (we never render)
            warnings.filterwarnings("ignore", message=".*DISPLAY.*")
            from dm_control import suite
    except ImportError as e:
        raise ConfigError(f"the dmc backend needs dm-control: {INSTALL} ({e})") from None
    return suite


def split_env_id(env_id: str) -> tuple[str, str]:
    """(domain, task) of ``domain_task`` or ``domain-task``; a one-line ConfigError listing close matches (or
    naming the install when dm_control is missing)."""
    suite = _suite()
    tasks = suite.ALL_TASKS
    if "-" in env_id:
        pair = tuple(env_id.split("-", 1))
        if pair in tasks:
            return pair  # type: ignore[return-value]
    else:
        for domain, task in tasks:
            if env_id == f"{domain}_{task}":
                return domain, task
    names = [f"{d}_{t}" for d, t in tasks]
    close = difflib.get_close_matches(env_id.replace("-", "_"), names, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join('dmc:' + c for c in close)}?)" if close else ""
    raise ConfigError(f"unknown dm_control task '{env_id}'{hint}; ids are domain_task as in dm_control.suite."
                      f"ALL_TASKS, e.g. dmc:cheetah_run, dmc:quadruped_walk")


# ---------------------------------------------------------------------------------------------------- host envs
@dataclass(frozen=True)
class DmcSpec:
    """What the host envs are made from (static and hashable); ``uid`` ties host batches to one env object."""

    domain: str
    task: str
    seed: int
    num_envs: int  # envs per seed slot (E)
    obs_size: int
    act_size: int
    time_limit: float | None
    friction: tuple[float, ...] | None  # per-task toe friction (NaN: the stock model); None: no tasks
    uid: int


def stock_toe_friction() -> float:
    """The sliding friction of the stock quadruped's ``<default class="toe">`` geom (1.5 in dm_control 1.0.50)."""
    _suite()
    from dm_control.suite import common
    from lxml import etree

    geom = etree.XML(common.read_model("quadruped.xml")).find(".//default[@class='toe']/geom")
    return float(geom.attrib["friction"].split()[0])


def _quadruped_env(task: str, friction: float, random: int, time_limit: float | None) -> Any:
    """A quadruped task built exactly as the suite's task function builds it, with the toe friction set to
    ``friction`` in the model XML (a string: no file is written)."""
    from dm_control.rl import control
    from dm_control.suite import common, quadruped
    from lxml import etree

    builders = {  # dm_control 1.0.50 suite/quadruped.py: walk(), run(), escape(), fetch()
        "walk": (dict(floor_size=quadruped._DEFAULT_TIME_LIMIT * quadruped._WALK_SPEED),
                 lambda r: quadruped.Move(desired_speed=quadruped._WALK_SPEED, random=r)),
        "run": (dict(floor_size=quadruped._DEFAULT_TIME_LIMIT * quadruped._RUN_SPEED),
                lambda r: quadruped.Move(desired_speed=quadruped._RUN_SPEED, random=r)),
        "escape": (dict(floor_size=40, terrain=True, rangefinders=True), lambda r: quadruped.Escape(random=r)),
        "fetch": (dict(walls_and_ball=True), lambda r: quadruped.Fetch(random=r)),
    }
    model_kwargs, make_task = builders[task]
    mjcf = etree.XML(quadruped.make_model(**model_kwargs), etree.XMLParser(remove_blank_text=True))
    mjcf.find(".//default[@class='toe']/geom").attrib["friction"] = repr(float(friction))
    physics = quadruped.Physics.from_xml_string(etree.tostring(mjcf, pretty_print=True), common.ASSETS)
    limit = quadruped._DEFAULT_TIME_LIMIT if time_limit is None else time_limit
    return control.Environment(physics, make_task(random), time_limit=limit,
                               control_timestep=quadruped._CONTROL_TIMESTEP)


def make_host_env(spec: DmcSpec, random: int, task: int = 0) -> Any:
    """One dm_control env of ``spec`` seeded with ``random``, for task ``task`` (its friction; the suite's own
    model when there is no table or the entry is NaN)."""
    suite = _suite()
    friction = float("nan") if spec.friction is None else spec.friction[task]
    if not np.isnan(friction):
        return _quadruped_env(spec.task, friction, random, spec.time_limit)
    kwargs: dict[str, Any] = {"random": random}
    if spec.time_limit is not None:
        kwargs["time_limit"] = spec.time_limit
    return suite.load(spec.domain, spec.task, task_kwargs=kwargs)


def flatten_obs(observation: Any, out: np.ndarray | None = None) -> np.ndarray:
    """The observation dict flattened in dict order (the reference's StandardDMC), float32."""
    flat = np.concatenate([np.asarray(v, np.float64).ravel() for v in observation.values()])
    if out is None:
        return flat.astype(np.float32)
    out[:] = flat
    return out


class HostBatch:
    """The dm_control envs of one (env object, total batch size): env i is seeded ``seed + i`` and built for the
    task it last received (rebuilt when that changes)."""

    def __init__(self, spec: DmcSpec, total: int):
        self.spec, self.total = spec, total
        self.envs: list[Any] = [None] * total
        self.tasks = np.full(total, -1, np.int64)  # the task each env was built for (-1: not built)
        self.calls = 0  # callbacks served (the token)
        self.resets = 0  # whole-batch resets served

    def sync(self, tasks: np.ndarray, reset_built: bool = True) -> None:
        """Build every env whose task changed (a negative task keeps the current one; task 0 at first), and reset
        the ones built unless the caller resets every env anyway."""
        last = len(self.spec.friction) - 1 if self.spec.friction is not None else 0
        for i, t in enumerate(tasks.tolist()):
            t = max(int(self.tasks[i]) if t < 0 else min(t, last), 0)
            if self.envs[i] is None or t != self.tasks[i]:
                self.envs[i] = make_host_env(self.spec, self.spec.seed + i, t)
                self.tasks[i] = t
                if reset_built:
                    self.envs[i].reset()

    def _token(self, batch: tuple[int, ...]) -> np.ndarray:
        self.calls += 1
        return np.full(batch, self.calls % (2**31 - 1), np.int32)

    def reset(self, batch: tuple[int, ...], tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every env's first observation of a new episode."""
        self.sync(tasks, reset_built=False)
        self.resets += 1
        obs = np.empty((self.total, self.spec.obs_size), np.float32)
        for i, env in enumerate(self.envs):
            flatten_obs(env.reset().observation, obs[i])
        return self._token(batch), obs.reshape(*batch, self.spec.num_envs, -1)

    def step(self, batch: tuple[int, ...], tasks: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, ...]:
        """One step of every env, resetting those whose episode ended (see the module docstring)."""
        self.sync(tasks)
        action = np.asarray(action, np.float64).reshape(self.total, self.spec.act_size)
        obs = np.empty((self.total, self.spec.obs_size), np.float32)
        final = np.empty_like(obs)
        reward = np.zeros(self.total, np.float32)
        last = np.zeros(self.total, bool)
        for i, env in enumerate(self.envs):
            ts = env.step(action[i])
            flatten_obs(ts.observation, final[i])
            reward[i] = 0.0 if ts.reward is None else ts.reward
            if ts.last():
                last[i] = True
                flatten_obs(env.reset().observation, obs[i])
            else:
                obs[i] = final[i]
        shape = (*batch, self.spec.num_envs)
        return (self._token(batch), obs.reshape(*shape, -1), final.reshape(*shape, -1), reward.reshape(shape),
                last.reshape(shape))


_BATCHES: dict[tuple[int, int], HostBatch] = {}


def host_batch(spec: DmcSpec, total: int) -> HostBatch:
    """The host batch of ``total`` envs for ``spec`` (made on first use)."""
    key = (spec.uid, total)
    if key not in _BATCHES:
        _BATCHES[key] = HostBatch(spec, total)
    return _BATCHES[key]


def _drop_batches(uid: int) -> None:
    for key in [k for k in _BATCHES if k[0] == uid]:
        del _BATCHES[key]


def _batch_and_tasks(spec: DmcSpec, token: np.ndarray, task: np.ndarray) -> tuple[tuple[int, ...], HostBatch,
                                                                                  np.ndarray]:
    """The vmapped axes (the token's shape: one token per seed slot), the host batch of that many slots, and
    every env's task."""
    batch = tuple(np.shape(token))
    hb = host_batch(spec, int(np.prod(batch, dtype=np.int64)) * spec.num_envs)
    tasks = np.repeat(np.asarray(task, np.int64).reshape(-1), spec.num_envs)
    return batch, hb, tasks


def _host_reset(spec: DmcSpec, token: np.ndarray, key_data: np.ndarray, task: np.ndarray):
    del key_data  # it only carries the vmapped axis
    batch, hb, tasks = _batch_and_tasks(spec, token, task)
    return hb.reset(batch, tasks)


def _host_step(spec: DmcSpec, token: np.ndarray, task: np.ndarray, action: np.ndarray):
    batch, hb, tasks = _batch_and_tasks(spec, token, task)
    return hb.step(batch, tasks, action)


# ---------------------------------------------------------------------------------------------------- the VecEnv
@struct.dataclass
class DmcState:
    """A token (int32 per seed slot: the host batch's call count) that orders the host calls; the envs themselves
    live on the host, so this is not a snapshot of them."""

    token: jax.Array


_UIDS = itertools.count()


class DmcVecEnv:
    """``num_envs`` dm_control envs per seed, stepped on the host from inside the graph (see the module docstring).

    ``time_limit``: episode length in seconds of simulated time (the suite's ``time_limit``; default the task's own,
    1000 steps for the reference's tasks). ``friction_table``: per-task toe friction for quadruped tasks (dynamics
    mode; NaN = the stock model)."""

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, time_limit: float | None = None,
                 friction_table: Any = None):
        domain, task = split_env_id(env_id)
        if num_envs < 1:
            raise ConfigError(f"dmc num_envs must be >= 1 (got {num_envs})")
        if time_limit is not None and not time_limit > 0:
            raise ConfigError(f"dmc time_limit must be > 0 seconds (got {time_limit})")
        friction = None
        if friction_table is not None:
            friction = tuple(float(v) for v in _check_table(domain, task, friction_table))
        self.name = f"{domain}_{task}"
        self.domain, self.task_name = domain, task
        self.num_envs = int(num_envs)
        self.seed = int(seed)
        self.time_limit = time_limit
        self.friction_table = None if friction is None else np.asarray(friction, np.float32)
        self.task: jax.Array | None = None  # the bound task (None: unbound, the host keeps its current one)
        probe_spec = DmcSpec(domain, task, self.seed, self.num_envs, 0, 0, time_limit, None, -1)
        probe = make_host_env(probe_spec, self.seed)
        obs_spec, act_spec = probe.observation_spec(), probe.action_spec()
        obs_size = int(sum(int(np.prod(s.shape)) for s in obs_spec.values()))
        act_shape = tuple(int(s) for s in act_spec.shape)
        if len(act_shape) != 1:
            raise ConfigError(f"dm_control {self.name} has actions of shape {act_shape}; only flat actions are "
                              f"supported")
        uid = next(_UIDS)
        self.spec = DmcSpec(domain, task, self.seed, self.num_envs, obs_size, act_shape[0], time_limit, friction,
                            uid)
        weakref.finalize(self, _drop_batches, uid)
        self.observation_space = Box((-np.inf,) * obs_size, (np.inf,) * obs_size, (obs_size,))
        low = np.broadcast_to(np.asarray(act_spec.minimum, np.float64), act_shape)
        high = np.broadcast_to(np.asarray(act_spec.maximum, np.float64), act_shape)
        self.action_space = Box(tuple(float(v) for v in low), tuple(float(v) for v in high), act_shape)

    def at(self, task: jax.Array) -> DmcVecEnv:
        """This env bound to task ``task`` (int32 scalar, may be traced); itself when there is no friction table."""
        if self.friction_table is None:
            return self
        out = copy.copy(self)
        out.task = jnp.asarray(task, jnp.int32)
        return out

    def host_envs(self, num_seeds: int = 1) -> list[Any]:
        """The dm_control envs of this env's host batch for ``num_seeds`` vmapped seed slots (``num_seeds *
        num_envs`` envs, slot-major), e.g. to read their MuJoCo models; made if no call has made them yet."""
        hb = host_batch(self.spec, num_seeds * self.num_envs)
        hb.sync(np.full(hb.total, -1))
        return list(hb.envs)

    def _task(self) -> jax.Array:
        return jnp.int32(-1) if self.task is None else self.task

    def reset(self, key: jax.Array, previous: Any = None) -> tuple[jax.Array, DmcState]:
        """A new episode in every env; ``key`` only carries the vmapped axis (dm_control seeds itself). With a
        ``previous`` state the reset comes after the calls that made it."""
        key_data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        token = previous.token if isinstance(previous, DmcState) else jnp.zeros((), jnp.int32)
        shapes = (jax.ShapeDtypeStruct((), jnp.int32),
                  jax.ShapeDtypeStruct((self.num_envs, self.spec.obs_size), jnp.float32))
        token, obs = jax.pure_callback(partial(_host_reset, self.spec), shapes, token, key_data, self._task(),
                                       vmap_method="broadcast_all")
        return obs, DmcState(token)

    def step(self, key: jax.Array, state: DmcState, action: jax.Array):
        """One step of every env with auto-reset (``info["final_obs"]`` the observation before it)."""
        del key  # dm_control draws its own randomness
        e, d = self.num_envs, self.spec.obs_size
        shapes = (jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((e, d), jnp.float32),
                  jax.ShapeDtypeStruct((e, d), jnp.float32), jax.ShapeDtypeStruct((e,), jnp.float32),
                  jax.ShapeDtypeStruct((e,), jnp.bool_))
        action = jnp.asarray(action, jnp.float32).reshape(e, self.spec.act_size)
        token, obs, final_obs, reward, truncated = jax.pure_callback(
            partial(_host_step, self.spec), shapes, state.token, self._task(), action, vmap_method="broadcast_all")
        terminated = jnp.zeros_like(truncated)
        return obs, DmcState(token), reward, terminated, truncated, {"final_obs": final_obs}


def _check_table(domain: str, task: str, table: Any) -> np.ndarray:
    """The friction table as float32 [num_tasks], or a one-line ConfigError."""
    if domain != FRICTION_DOMAIN:
        raise ConfigError(f"dmc friction shifts (dynamics mode) change the quadruped's toe friction; "
                          f"dmc:{domain}_{task} is not a quadruped task")
    t = np.asarray(table, np.float32)
    if t.ndim != 1 or t.size == 0:
        raise ConfigError(f"dmc friction table must be a non-empty 1-D array [num_tasks] (got shape {t.shape})")
    given = t[~np.isnan(t)]
    if np.any(~np.isfinite(given)) or np.any(given < 0):
        raise ConfigError(f"dmc friction values must be >= 0 and finite (got {t.tolist()})")
    return t
