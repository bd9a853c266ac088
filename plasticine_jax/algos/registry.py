"""The learners by name: each has a config module (``<Algo>Config``, ``PRESETS``, ``default_preset``) and a
learner module (``make_train(cfg, env_id, total_timesteps, interventions, metrics) -> Learner``)."""

from __future__ import annotations

import importlib
from types import ModuleType

from plasticine_jax.errors import ConfigError

# name -> (config class name); modules are plasticine_jax.algos.<name> and plasticine_jax.algos.<name>_config
ALGOS: dict[str, str] = {"ppo": "PPOConfig", "pqn": "PQNConfig", "td3": "TD3Config", "sac": "SACConfig",
                         "c51": "C51Config"}


def check_algo(algo: str) -> str:
    if algo not in ALGOS:
        raise ConfigError(f"unknown algorithm '{algo}'; available: {', '.join(ALGOS)}")
    return algo


def config_module(algo: str) -> ModuleType:
    return importlib.import_module(f"plasticine_jax.algos.{check_algo(algo)}_config")


def config_class(algo: str) -> type:
    return getattr(config_module(algo), ALGOS[algo])


def learner_module(algo: str) -> ModuleType:
    return importlib.import_module(f"plasticine_jax.algos.{check_algo(algo)}")
