"""TD3 hyperparameters (frozen dataclass) and presets. Defaults = the reference's DMC TD3 (§1.4: CleanRL's
td3_continuous_action, PyTorch default init, separate Adams, no clipping)."""

from __future__ import annotations

from dataclasses import dataclass, field

from plasticine_jax.algos.validation import Checks
from plasticine_jax.interventions.base import CLIPS
from plasticine_jax.nets import NetConfig


@dataclass(frozen=True)
class TD3Config:
    """Twin critics, target policy smoothing, delayed actor updates, Polyak targets, replay in the carry."""

    num_envs: int = 1
    steps_per_update: int = 100  # env steps (per env) per update, each followed by one critic step
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    adam_eps: float = 1e-8
    buffer_size: int = 1_000_000
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    exploration_noise: float = 0.1
    learning_starts: int = 25_000  # env steps of uniform random actions before training
    policy_frequency: int = 2  # critic steps per actor step (and target update)
    bootstrap_truncation: bool = True  # truncation is not termination: targets bootstrap through it
    max_grad_norm: float = 0.0  # 0 = no clipping (reference)
    clip: str = "global_norm"  # with max_grad_norm > 0: global_norm per unit | elementwise (rejax)
    metric_batch: int = 1000  # replay samples for the plasticity metrics (reference: 1000)
    net: NetConfig = field(default_factory=lambda: NetConfig(
        torso="mlp", widths=(256, 256), activation="relu", init="torch", head_init="torch"))


_PENDULUM_NET = NetConfig(torso="mlp", widths=(64, 64), activation="relu", init="torch", head_init="torch")

PRESETS: dict[str, TD3Config] = {
    "dmc": TD3Config(),
    # CPU-sized Pendulum-v1: same algorithm and learning rates, shorter warm-up and buffer, and 64x64 networks
    # with batch 128 -- at 256x256/256 one gradient step per env step costs ~4x more on a 2-core CPU, while the
    # small nets solve Pendulum (mean return > -200) within ~10k env steps; tests/test_td3.py relies on it.
    "pendulum": TD3Config(steps_per_update=50, buffer_size=100_000, learning_starts=1_000, batch_size=128,
                          metric_batch=256, net=_PENDULUM_NET),
}


def default_preset(env_id: str) -> str:
    return "dmc" if env_id.startswith(("dmc:", "envpool:", "brax:", "playground:")) else "pendulum"


def validate(cfg: TD3Config) -> None:
    """One clear line naming the flag and its valid range for any out-of-range value (called by the CLI)."""
    (Checks("td3", cfg).ints("num_envs", "steps_per_update", "buffer_size", "batch_size", "policy_frequency",
                             "metric_batch")
     .ints("learning_starts", minimum=0).positive("actor_lr", "critic_lr", "adam_eps").unit("gamma", "tau")
     .nonneg("policy_noise", "noise_clip", "exploration_noise", "max_grad_norm").one_of("clip", CLIPS)
     .at_most("batch_size", "buffer_size").at_most("num_envs", "buffer_size"))
