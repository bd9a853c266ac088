"""Resolve ``backend:id`` strings to a batched, episode-tracked VecEnv."""

from __future__ import annotations

from typing import Any

import numpy as np

from plasticine_jax.envs import tasks
from plasticine_jax.envs.episode_stats import EpisodeStats
from plasticine_jax.envs.shifts import FlipReward, PermuteObservation
from plasticine_jax.envs.tasks import ContinualConfig
from plasticine_jax.errors import ConfigError

BACKENDS = ("gymnax", "craftax", "brax", "envpool", "dmc", "playground")


def parse_env_id(spec: str) -> tuple[str, str]:
    """Split ``'gymnax:CartPole-v1'`` into (backend, id); a clear error for anything else."""
    if ":" not in spec:
        raise ConfigError(f"env '{spec}' needs a backend prefix, e.g. gymnax:{spec} (backends: {', '.join(BACKENDS)})")
    backend, name = spec.split(":", 1)
    if backend not in BACKENDS:
        raise ConfigError(f"unknown env backend '{backend}' in '{spec}'; known backends: {', '.join(BACKENDS)}")
    return backend, name


def validate_env_id(spec: str) -> tuple[str, str]:
    """Check the backend and the env id at config time (before anything is built or written)."""
    backend, name = parse_env_id(spec)
    if backend == "gymnax":
        from plasticine_jax.envs.gymnax_env import check_gymnax_id

        check_gymnax_id(name)
    elif backend == "craftax":
        from plasticine_jax.envs.craftax_env import SUPPORTED_IDS

        if name not in SUPPORTED_IDS:
            raise ConfigError(f"unknown craftax env '{name}'; choose one of "
                              f"{', '.join('craftax:' + i for i in SUPPORTED_IDS)}")
    elif backend == "brax":
        from plasticine_jax.envs.brax_env import check_env_name

        check_env_name(name)
    elif backend == "envpool":
        from plasticine_jax.envs.envpool_env import task_kind  # a missing envpool: one line naming the install

        task_kind(name)
    elif backend == "dmc":
        from plasticine_jax.envs.dmc_env import split_env_id  # a missing dm_control: one line naming the install

        split_env_id(name)
    elif backend == "playground":
        from plasticine_jax.envs.playground_env import check_env_name  # a missing playground: one line naming it

        check_env_name(name)
    return backend, name


def make_backend(spec: str, num_envs: int, **kwargs: Any):
    """The raw backend VecEnv (no wrappers)."""
    backend, name = parse_env_id(spec)
    if backend == "gymnax":
        from plasticine_jax.envs.gymnax_env import GymnaxVecEnv

        return GymnaxVecEnv(name, num_envs, **kwargs)
    if backend == "craftax":
        from plasticine_jax.envs.craftax_env import CraftaxVecEnv

        return CraftaxVecEnv(name, num_envs, **kwargs)
    if backend == "brax":
        from plasticine_jax.envs.brax_env import BraxVecEnv

        return BraxVecEnv(name, num_envs, **kwargs)
    if backend == "envpool":
        from plasticine_jax.envs.envpool_env import EnvpoolVecEnv

        return EnvpoolVecEnv(name, num_envs, **kwargs)
    if backend == "dmc":
        from plasticine_jax.envs.dmc_env import DmcVecEnv

        return DmcVecEnv(name, num_envs, **kwargs)
    if backend == "playground":
        from plasticine_jax.envs.playground_env import PlaygroundVecEnv

        return PlaygroundVecEnv(name, num_envs, **kwargs)
    raise AssertionError(backend)


def make_env(spec: str, num_envs: int, continual: ContinualConfig | None = None, **kwargs: Any):
    """Backend VecEnv wrapped with in-graph episode statistics (raw rewards). With a ``continual`` task
    sequence the env follows it (``at(task)``, ``envs.tasks``) and ``task_tables`` records the sequence."""
    if continual is None or not continual.enabled:
        return EpisodeStats(make_backend(spec, num_envs, **kwargs))
    env, tables = make_task_backend(spec, num_envs, continual, **kwargs)
    if "permute" in continual.shifts:
        table = tasks.permutation_table(continual, int(np.prod(env.observation_space.shape)))
        env = PermuteObservation(env, table)
        tables["permutation"] = table
    if "reward_flip" in continual.shifts:
        signs = tasks.reward_signs(continual)
        env = FlipReward(env, signs)
        tables["reward_sign"] = signs
    out = EpisodeStats(env)
    out.task_tables = tables
    return out


def make_task_backend(spec: str, num_envs: int, c: ContinualConfig, **kwargs: Any) -> tuple[Any, dict]:
    """The backend of a task sequence: several games, per-task parameters, or the plain backend (when only
    observations or rewards shift), with the tables that define it."""
    backend, name = parse_env_id(spec)
    if backend == "envpool" and ("games" in c.shifts or "levels" in c.shifts):
        from plasticine_jax.envs.envpool_env import task_backend

        return task_backend(name, num_envs, c, **kwargs)
    if "levels" in c.shifts:
        raise ConfigError(f"--continual.shifts levels plays Procgen levels (envpool:<Game><Mode>-v0); --env {spec} "
                          f"is not one")
    if "games" in c.shifts:
        from plasticine_jax.envs.multigame import MultiGameVecEnv

        if backend != "gymnax":
            raise ConfigError(f"--continual.shifts games plays gymnax MinAtar games or envpool tasks; --env {spec} "
                              f"is neither")
        games = tuple(g.split(":", 1)[1] for g in tasks.game_specs(c, spec))
        return MultiGameVecEnv(games, num_envs), {"game": tasks.game_sequence(c)}
    if "params" in c.shifts:
        if backend == "brax":
            return _brax_friction_backend(name, num_envs, c, **kwargs)
        if backend == "dmc":
            return _dmc_friction_backend(name, num_envs, c, **kwargs)
        if backend != "gymnax":
            raise ConfigError(f"--continual.shifts params shifts gymnax env parameters, brax friction or the dmc "
                              f"quadruped's toe friction; --env {spec} is a {backend} env")
        if c.friction_row != -1:
            raise ConfigError(f"--continual.friction-row shifts brax friction; --env {spec} is a gymnax env")
        from plasticine_jax.envs.gymnax_env import GymnaxVecEnv

        probe = GymnaxVecEnv(name, num_envs, **kwargs)
        known = {f: getattr(probe.params, f) for f in vars(probe.params) if not f.startswith("_")}
        bad = [p for p in c.params if p not in known]
        if bad:
            raise ConfigError(f"gymnax {name} has no parameter '{bad[0]}'; its parameters: {', '.join(known)}")
        table = tasks.param_table(c, {p: float(known[p]) for p in c.params})
        return GymnaxVecEnv(name, num_envs, params_table=table, **kwargs), {f"param/{k}": v for k, v in table.items()}
    return make_backend(spec, num_envs, **kwargs), {}


def _brax_friction_backend(name: str, num_envs: int, c: ContinualConfig, **kwargs: Any) -> tuple[Any, dict]:
    """A Brax env whose every geom's sliding friction follows the task: a row of the reference's table
    (``friction_row``; task 0 stock), explicit ``values`` (cycled, as gymnax parameters), or the stock friction
    times a seeded log-uniform factor (``scale_low``/``scale_high``; task 0 factor 1)."""
    from plasticine_jax.envs.brax_env import BraxVecEnv

    bad = [p for p in c.params if p != "friction"]
    if bad:
        raise ConfigError(f"brax {name} shifts only 'friction' (--continual.params friction), not '{bad[0]}'")
    env = BraxVecEnv(name, num_envs, **kwargs)
    stock = env.stock_friction  # NaN where the geoms differ: the table then keeps each geom's own (task 0)
    if c.friction_row != -1:
        table, scale = tasks.friction_table(c, stock), False
    elif c.values:
        table, scale = tasks.param_table(c, {"friction": stock})["friction"], False
    else:
        table, scale = tasks.param_table(c, {"friction": 1.0})["friction"], True
    tables = {"param/friction_factor": table} if scale else {"param/friction": table}
    if scale and not np.isnan(stock):
        tables["param/friction"] = (stock * table).astype(np.float32)
    return env.with_friction_table(table, scale), tables


def _dmc_friction_backend(name: str, num_envs: int, c: ContinualConfig, **kwargs: Any) -> tuple[Any, dict]:
    """A dm_control quadruped whose toe friction follows the task (the reference's continual-DMC dynamics mode):
    a row of the reference's table (``friction_row``; task 0 the stock 1.5), explicit ``values`` (cycled), or the
    stock friction times a seeded log-uniform factor (``scale_low``/``scale_high``; task 0 factor 1)."""
    from plasticine_jax.envs.dmc_env import DmcVecEnv, stock_toe_friction

    bad = [p for p in c.params if p != "friction"]
    if bad:
        raise ConfigError(f"dmc {name} shifts only 'friction' (--continual.params friction), not '{bad[0]}'")
    stock = stock_toe_friction()
    tables: dict[str, np.ndarray] = {}
    if c.friction_row != -1:
        table = tasks.friction_table(c, stock)
    elif c.values:
        table = tasks.param_table(c, {"friction": stock})["friction"]
    else:
        factors = tasks.param_table(c, {"friction": 1.0})["friction"]
        table = (stock * factors).astype(np.float32)
        tables["param/friction_factor"] = factors
    tables["param/friction"] = table
    return DmcVecEnv(name, num_envs, friction_table=table, **kwargs), tables
