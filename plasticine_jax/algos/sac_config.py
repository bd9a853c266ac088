"""SAC hyperparameters (frozen dataclass) and presets: CleanRL's sac_continuous_action (beyond the
reference; the workhorse of BRO/SimBa-style plasticity work)."""

from __future__ import annotations

from dataclasses import dataclass, field

from plasticine_jax.errors import ConfigError
from plasticine_jax.nets import NetConfig


@dataclass(frozen=True)
class SACConfig:
    """Twin critics with Polyak targets, tanh-Gaussian actor, learned temperature, replay in the carry."""

    num_envs: int = 1
    steps_per_update: int = 100  # env steps (per env) per update, each followed by one critic step
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-3
    adam_eps: float = 1e-8
    buffer_size: int = 1_000_000
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    learning_starts: int = 5_000
    policy_frequency: int = 2  # critic steps per (delayed, repeated) actor step, as CleanRL
    alpha: float = 0.2  # initial temperature (fixed when autotune is False)
    autotune: bool = True  # learn alpha towards target entropy -|A|
    bootstrap_truncation: bool = True
    max_grad_norm: float = 0.0
    metric_batch: int = 1000
    net: NetConfig = field(default_factory=lambda: NetConfig(
        torso="mlp", widths=(256, 256), activation="relu", init="torch", head_init="torch"))


_PENDULUM_NET = NetConfig(torso="mlp", widths=(64, 64), activation="relu", init="torch", head_init="torch")

PRESETS: dict[str, SACConfig] = {
    "dmc": SACConfig(),
    # CPU-sized Pendulum-v1: shorter warm-up and buffer, 64x64 networks and batch 128 (as TD3's preset: ~4x
    # cheaper per gradient step on a 2-core CPU; solves Pendulum within ~6k env steps; tests/test_sac.py)
    "pendulum": SACConfig(steps_per_update=50, buffer_size=100_000, learning_starts=1_000, batch_size=128,
                          metric_batch=256, net=_PENDULUM_NET),
}


def default_preset(env_id: str) -> str:
    return "dmc" if env_id.startswith(("dmc:", "envpool:", "brax:", "playground:")) else "pendulum"


def _flag(name: str) -> str:
    return f"--sac.{name.replace('_', '-')}"


def validate(cfg: SACConfig) -> None:
    """One clear line naming the flag and its valid range for any out-of-range value (called by the CLI)."""
    for k in ("num_envs", "steps_per_update", "buffer_size", "batch_size", "policy_frequency", "metric_batch"):
        v = getattr(cfg, k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{_flag(k)} must be an integer >= 1 (got {v!r})")
    for k in ("actor_lr", "critic_lr", "alpha_lr", "adam_eps", "alpha"):
        if not getattr(cfg, k) > 0:
            raise ConfigError(f"{_flag(k)} must be > 0 (got {getattr(cfg, k)})")
    for k in ("gamma", "tau"):
        if not 0 < getattr(cfg, k) <= 1:
            raise ConfigError(f"{_flag(k)} must be in (0, 1] (got {getattr(cfg, k)})")
    if not cfg.max_grad_norm >= 0:
        raise ConfigError(f"{_flag('max_grad_norm')} must be >= 0 (got {cfg.max_grad_norm})")
    if not isinstance(cfg.learning_starts, int) or cfg.learning_starts < 0:
        raise ConfigError(f"{_flag('learning_starts')} must be an integer >= 0 env steps (got {cfg.learning_starts!r})")
    if cfg.batch_size > cfg.buffer_size:
        raise ConfigError(f"{_flag('batch_size')} {cfg.batch_size} must be <= {_flag('buffer_size')} {cfg.buffer_size}")
    if cfg.num_envs > cfg.buffer_size:
        raise ConfigError(f"{_flag('num_envs')} {cfg.num_envs} must be <= {_flag('buffer_size')} {cfg.buffer_size}")
