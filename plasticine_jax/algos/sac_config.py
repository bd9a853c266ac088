"""SAC hyperparameters (frozen dataclass) and presets: CleanRL's sac_continuous_action (beyond the
reference; the workhorse of BRO/SimBa-style plasticity work)."""

from __future__ import annotations

from dataclasses import dataclass, field

from plasticine_jax.algos.validation import Checks
from plasticine_jax.interventions.base import CLIPS
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
    clip: str = "global_norm"  # with max_grad_norm > 0: global_norm per unit | elementwise (rejax)
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


def validate(cfg: SACConfig) -> None:
    """One clear line naming the flag and its valid range for any out-of-range value (called by the CLI)."""
    (Checks("sac", cfg).ints("num_envs", "steps_per_update", "buffer_size", "batch_size", "policy_frequency",
                             "metric_batch")
     .ints("learning_starts", minimum=0).positive("actor_lr", "critic_lr", "alpha_lr", "adam_eps", "alpha")
     .unit("gamma", "tau").nonneg("max_grad_norm").one_of("clip", CLIPS)
     .at_most("batch_size", "buffer_size").at_most("num_envs", "buffer_size"))
