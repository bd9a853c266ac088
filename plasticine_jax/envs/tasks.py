"""Continual scenarios as data: a task sequence, its per-task tables, and the env that follows it.

A continual run is ``num_tasks`` tasks of ``task_timesteps`` env steps each (per seed). The task index lives
in the run carry (``RunState.task``); the switch happens inside the compiled graph at an update boundary
(``algos.learner.UpdateLoop``), so one compile covers the whole sequence and every vmapped seed switches at
the same update. What changes between tasks (``shifts``, any combination; ``params`` excludes ``games`` and
``levels``):

* ``games``   games in sequence, cycled: gymnax MinAtar ids (``envs.multigame``: padded channels, the full
              6-action set, ``lax.switch`` over games), or envpool task ids (``envpool:BigfishEasy-v0``, or bare
              ids with an ``envpool:`` --env; ``envs.envpool_env``: one pool per task, ``lax.switch`` over pools):
              Procgen games (the reference's task mode, with ``levels`` 200) or DMC tasks (walker stand, walk,
              run, ...); all of one family, with one observation shape and action space;
* ``levels``  envpool Procgen levels: task t plays ``num_levels`` levels from start level ``levels[t]`` (cycled;
              ``num_levels`` 1 = the single levels of the reference's level mode 5, 10, ..., 50 and of the
              newest reference's intra-task mode 0, 20, ..., 180);
* ``params``  gymnax env parameters (e.g. CartPole ``length``, ``gravity``; Pendulum ``m``) scaled per task by
              a factor drawn log-uniformly from [scale_low, scale_high] (or set to explicit ``values``); for
              ``brax:`` envs the one parameter ``friction`` (every geom's sliding friction), also from a row
              of the reference's ``frictions_100x50`` table (``friction_row``, ``friction_table``);
* ``permute`` a fixed random permutation of the (flattened) observation features per task;
* ``reward_flip`` the reward's sign alternates: +1 on even tasks, -1 on odd ones.

Task 0 is always the unmodified env (identity permutation, factor 1, sign +1), as the reference's dynamics
mode trains round 0 on the stock model. Tables are drawn once from ``table_seed`` and are the same for every
training seed (the seeds then differ only in their RNG; config.json records the tables).

What a switch resets is explicit: the env state always (fresh episodes of the new task); observation/reward
normalisation statistics unless ``keep_norm_stats`` (the reference rebuilds its wrappers, so they restart);
the optimizer state if ``reset_optimizer`` (off, as the reference); the replay buffer if ``reset_buffer``
(kept, as the reference). The vmappable hyperparameter ``continual.fresh`` (0/1) re-initialises the whole
learner at every switch -- the fresh-network baseline: ``--sweep continual.fresh=0,1`` trains continual and
fresh side by side in one compile, and the summary reports the per-task gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from plasticine_jax.errors import ConfigError

SHIFTS = ("games", "levels", "params", "permute", "reward_flip")
FRICTION_ROWS, FRICTION_SHIFTS = 100, 50  # frictions_100x50.csv: row = the reference's seed, column = shift index
DEFAULT_GAMES = ("SpaceInvaders-MinAtar", "Asterix-MinAtar", "Seaquest-MinAtar", "Breakout-MinAtar",
                 "Freeway-MinAtar")


@dataclass(frozen=True)
class ContinualConfig:
    """A task sequence (``--continual.*``). ``num_tasks`` 0 = an ordinary, single-task run."""

    num_tasks: int = 0  # tasks in the run (0 = not continual); total steps = num_tasks * task_timesteps
    task_timesteps: int = 0  # env steps per task per seed (a multiple of one update's env steps)
    shifts: tuple[str, ...] = ()  # what changes per task: games | levels | params | permute | reward_flip
    games: tuple[str, ...] = DEFAULT_GAMES  # cycled (shift games): gymnax MinAtar ids, or envpool task ids
    # (envpool:BigfishEasy-v0 envpool:BossfightEasy-v0; bare ids with an envpool --env)
    levels: tuple[int, ...] = ()  # envpool Procgen start level per task, cycled (shift levels), e.g. 5 10 15
    num_levels: int = 1  # levels per task from its start level (shift levels; 1 = single-level tasks)
    params: tuple[str, ...] = ()  # gymnax EnvParams fields scaled per task (shift params), e.g. length gravity
    scale_low: float = 0.25  # per-task factor range (log-uniform) for shift params
    scale_high: float = 4.0
    values: tuple[float, ...] = ()  # explicit per-task values of a single param (cycled; task 0 included)
    friction_row: int = -1  # brax friction: row (the reference's seed, 0..99) of frictions_100x50; -1 = off
    table_seed: int = 0  # seed of the per-task tables (factors, permutations); the same for every run seed
    keep_norm_stats: bool = False  # keep obs/reward normalisation statistics across a switch
    reset_optimizer: bool = False  # fresh optimizer state for every unit at a switch
    reset_buffer: bool = False  # empty the replay buffer at a switch (off-policy learners)
    fresh: float = 0.0  # default of the vmappable continual.fresh: 1 = re-initialise the learner every switch

    @property
    def enabled(self) -> bool:
        return self.num_tasks > 0


def validate(c: ContinualConfig) -> None:
    """One-line errors for a bad task sequence (before anything is built or written)."""
    if not c.enabled:
        return
    if c.num_tasks < 1:
        raise ConfigError(f"--continual.num-tasks must be >= 1 (got {c.num_tasks})")
    if c.task_timesteps < 1:
        raise ConfigError("--continual.task-timesteps must be positive: the env steps per task per seed")
    bad = [s for s in c.shifts if s not in SHIFTS]
    if bad:
        raise ConfigError(f"unknown --continual.shifts '{bad[0]}'; choose from {', '.join(SHIFTS)}")
    if not c.shifts:
        raise ConfigError(f"--continual.shifts is empty: name what changes per task ({', '.join(SHIFTS)})")
    for other in ("games", "levels"):
        if other in c.shifts and "params" in c.shifts:
            raise ConfigError(f"--continual.shifts {other} and params cannot be combined; pick one")
    if "games" in c.shifts and not c.games:
        raise ConfigError("--continual.games is empty; list MinAtar games, e.g. Breakout-MinAtar Asterix-MinAtar, "
                          "or envpool tasks, e.g. envpool:WalkerStand-v1 envpool:WalkerWalk-v1")
    if "games" in c.shifts:
        backends = sorted({g.split(":", 1)[0] for g in c.games if ":" in g})
        if len(backends) > 1:
            raise ConfigError(f"--continual.games mixes backends ({', '.join(backends)}); a sequence is one backend")
    if "levels" in c.shifts:
        if not c.levels:
            raise ConfigError("--continual.shifts levels needs --continual.levels: a Procgen start level per task, "
                              "e.g. 5 10 15 20")
        if min(c.levels) < 0:
            raise ConfigError(f"--continual.levels must be >= 0 (got {min(c.levels)})")
        if c.num_levels < 1:
            raise ConfigError(f"--continual.num-levels must be >= 1 levels per task (got {c.num_levels})")
    elif c.levels:
        raise ConfigError("--continual.levels sets Procgen levels per task; add levels to --continual.shifts")
    if "params" in c.shifts:
        if not c.params:
            raise ConfigError("--continual.shifts params needs --continual.params, e.g. length gravity")
        if c.values and len(c.params) != 1:
            raise ConfigError("--continual.values sets a single parameter; give one --continual.params name")
        if c.friction_row != -1:
            if tuple(c.params) != ("friction",):
                raise ConfigError("--continual.friction-row sets brax friction; use it with --continual.params "
                                  "friction alone")
            if c.values:
                raise ConfigError("--continual.friction-row and --continual.values both set the frictions; pick one")
            if not 0 <= c.friction_row < FRICTION_ROWS:
                raise ConfigError(f"--continual.friction-row must be in [0, {FRICTION_ROWS}) (got {c.friction_row})")
            if c.num_tasks - 1 > FRICTION_SHIFTS:
                raise ConfigError(f"--continual.friction-row has {FRICTION_SHIFTS} frictions after the stock task 0, "
                                  f"so --continual.num-tasks must be <= {FRICTION_SHIFTS + 1} (got {c.num_tasks})")
        elif not c.values and not 0 < c.scale_low <= c.scale_high:
            raise ConfigError(f"--continual.scale-low/high must satisfy 0 < low <= high "
                              f"(got {c.scale_low}, {c.scale_high})")
    elif c.friction_row != -1:
        raise ConfigError("--continual.friction-row needs --continual.shifts params --continual.params friction")
    if c.fresh not in (0.0, 1.0):
        raise ConfigError(f"--continual.fresh must be 0 or 1 (got {c.fresh})")


@dataclass(frozen=True)
class TaskSchedule:
    """Static task boundaries in updates. Every query takes the *unbatched* update index, so schedules stay
    real branches under ``vmap`` over seeds."""

    num_tasks: int
    task_updates: int  # updates per task

    @classmethod
    def build(cls, c: ContinualConfig, env_steps_per_update: int, total_timesteps: int) -> TaskSchedule | None:
        """The schedule of a continual run (None for an ordinary run); checks the budget divides evenly."""
        if not c.enabled:
            return None
        if c.task_timesteps % env_steps_per_update:
            lo = max(c.task_timesteps // env_steps_per_update, 1) * env_steps_per_update
            raise ConfigError(f"--continual.task-timesteps {c.task_timesteps} is not a multiple of the "
                              f"{env_steps_per_update} env steps of one update; use e.g. {lo}")
        if total_timesteps != c.num_tasks * c.task_timesteps:
            raise ConfigError(f"--total-timesteps {total_timesteps} != num_tasks x task_timesteps = "
                              f"{c.num_tasks * c.task_timesteps}; drop --total-timesteps in a continual run")
        return cls(c.num_tasks, c.task_timesteps // env_steps_per_update)

    def task_of(self, update_idx: jax.Array) -> jax.Array:
        """The task an update trains on (int32)."""
        return jnp.minimum(jnp.asarray(update_idx, jnp.int32) // self.task_updates, self.num_tasks - 1)

    def starts_task(self, update_idx: jax.Array) -> jax.Array:
        """True on the first update of every task but the first: the env switches before it."""
        idx = jnp.asarray(update_idx, jnp.int32)
        return (idx > 0) & (idx % self.task_updates == 0) & (idx < self.num_tasks * self.task_updates)

    def ends_task(self, update_idx: jax.Array) -> jax.Array:
        """True on the last update of every task but the last: the task-switch hooks fire after it."""
        return self.starts_task(jnp.asarray(update_idx, jnp.int32) + 1)


# ---------------------------------------------------------------------------------------------------------
# per-task tables
# ---------------------------------------------------------------------------------------------------------


def param_table(c: ContinualConfig, defaults: dict[str, float]) -> dict[str, np.ndarray]:
    """{param: values [num_tasks]}: task 0 the default, later tasks default x a log-uniform factor (or the
    explicit ``values``, cycled)."""
    if c.values:
        return {c.params[0]: np.asarray([c.values[t % len(c.values)] for t in range(c.num_tasks)], np.float32)}
    rng = np.random.default_rng(c.table_seed)
    factors = np.exp(rng.uniform(np.log(c.scale_low), np.log(c.scale_high), (c.num_tasks, len(c.params))))
    factors[0] = 1.0
    return {p: (defaults[p] * factors[:, i]).astype(np.float32) for i, p in enumerate(c.params)}


def frictions_csv() -> np.ndarray:
    """The reference's friction table (``plasticine/frictions``), float64 [100, 50]: row = seed, column = shift
    index, log-uniform in [0.02, 2.0]; shipped as package data ``plasticine_jax/data/frictions_100x50.csv``."""
    from importlib import resources

    with resources.files("plasticine_jax").joinpath("data/frictions_100x50.csv").open() as f:
        table = np.loadtxt(f, delimiter=",", comments="#", dtype=np.float64)
    if table.shape != (FRICTION_ROWS, FRICTION_SHIFTS):
        raise AssertionError(f"frictions_100x50.csv has shape {table.shape}")
    return table


def friction_table(c: ContinualConfig, stock: float = float("nan")) -> np.ndarray:
    """[num_tasks] float32 frictions of a ``friction_row`` sequence: task 0 the env's ``stock`` friction (round 0
    is the unmodified model, as the reference; NaN = each geom keeps its own), task t >= 1 the table's
    ``[friction_row, t - 1]``."""
    validate(c)
    row = frictions_csv()[c.friction_row, : c.num_tasks - 1]
    return np.concatenate([[stock], row]).astype(np.float32)


def permutation_table(c: ContinualConfig, size: int) -> np.ndarray:
    """[num_tasks, size] int32 permutations of the flattened observation: row 0 the identity, every later row
    differs from the row before it (a draw equal to it is redrawn; with one feature all rows are the identity)."""
    rng = np.random.default_rng(c.table_seed + 1)
    rows = [np.arange(size)]
    for _ in range(c.num_tasks - 1):
        perm = rng.permutation(size)
        while size > 1 and np.array_equal(perm, rows[-1]):
            perm = rng.permutation(size)
        rows.append(perm)
    return np.stack(rows).astype(np.int32)


def reward_signs(c: ContinualConfig) -> np.ndarray:
    """[num_tasks] float32: +1 on even tasks, -1 on odd ones."""
    return np.where(np.arange(c.num_tasks) % 2 == 0, 1.0, -1.0).astype(np.float32)


def game_sequence(c: ContinualConfig) -> list[str]:
    """The game each task plays (the list cycled; ids without a backend prefix)."""
    return [c.games[t % len(c.games)].split(":", 1)[-1] for t in range(c.num_tasks)]


def game_specs(c: ContinualConfig, env: str | None = None) -> list[str]:
    """``--continual.games`` as ``backend:id`` specs (the run's env is the first): an id with a prefix keeps it, a
    bare id is an envpool task when ``env`` is an ``envpool:`` env, else a gymnax MinAtar game."""
    backend = "envpool" if env is not None and env.startswith("envpool:") else "gymnax"
    if backend == "envpool" and tuple(c.games) == DEFAULT_GAMES:
        raise ConfigError(f"--continual.shifts games with --env {env} needs --continual.games: envpool task ids, "
                          f"e.g. BigfishEasy-v0 BossfightEasy-v0 (the default games are MinAtar's)")
    specs = [g if ":" in g else f"{backend}:{g}" for g in c.games]
    backends = sorted({s.split(":", 1)[0] for s in specs})
    if len(backends) > 1:
        raise ConfigError(f"--continual.games mixes backends ({', '.join(backends)}) with --env {env}; give every "
                          f"game the run's backend")
    return specs


def level_sequence(c: ContinualConfig) -> list[int]:
    """The Procgen start level of each task (``levels`` cycled)."""
    return [int(c.levels[t % len(c.levels)]) for t in range(c.num_tasks)]


def describe(c: ContinualConfig, env: Any) -> dict:
    """The resolved sequence for config.json: per-task game / parameter values / permutation / sign."""
    if not c.enabled:
        return {}
    out: dict[str, Any] = {"num_tasks": c.num_tasks, "task_timesteps": c.task_timesteps, "shifts": list(c.shifts)}
    tables = getattr(env, "task_tables", {})
    out.update({k: _finite_or_none(np.asarray(v).tolist()) for k, v in tables.items()})
    return out


def _finite_or_none(x: Any) -> Any:
    """Nested lists with NaN (e.g. the stock friction of an env whose geoms differ) as None (JSON null)."""
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    return None if isinstance(x, float) and np.isnan(x) else x
