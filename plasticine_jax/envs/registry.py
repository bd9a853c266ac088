"""Resolve ``backend:id`` strings to a batched, episode-tracked VecEnv."""

from __future__ import annotations

from typing import Any

from plasticine_jax.envs.episode_stats import EpisodeStats
from plasticine_jax.errors import ConfigError

BACKENDS = ("gymnax", "craftax")


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
        import gymnax

        if name not in gymnax.registered_envs:
            close = [e for e in gymnax.registered_envs if name.lower() in e.lower()]
            hint = f" (did you mean {', '.join('gymnax:' + c for c in close[:3])}?)" if close else ""
            raise ConfigError(f"unknown gymnax env '{name}'{hint}; see gymnax.registered_envs")
    elif backend == "craftax":
        from plasticine_jax.envs.craftax_env import SUPPORTED_IDS

        if name not in SUPPORTED_IDS:
            raise ConfigError(f"unknown craftax env '{name}'; choose one of "
                              f"{', '.join('craftax:' + i for i in SUPPORTED_IDS)}")
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
    raise AssertionError(backend)


def make_env(spec: str, num_envs: int, **kwargs: Any):
    """Backend VecEnv wrapped with in-graph episode statistics (raw rewards)."""
    return EpisodeStats(make_backend(spec, num_envs, **kwargs))
