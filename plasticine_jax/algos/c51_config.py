"""C51 hyperparameters (frozen dataclass) and presets. Defaults = the newest reference's Atari C51 (§1.5:
CleanRL's c51_atari, PyTorch default init everywhere, Adam eps 0.01/32)."""

from __future__ import annotations

from dataclasses import dataclass, field

from plasticine_jax.nets import NetConfig


@dataclass(frozen=True)
class C51Config:
    """Categorical DQN: replay, hard target updates, epsilon-greedy, cross-entropy on the projected target."""

    num_envs: int = 1
    steps_per_update: int = 1000  # env steps (per env) per update: metrics/intervention schedules count updates
    learning_rate: float = 2.5e-4
    adam_eps: float = 0.01 / 32
    n_atoms: int = 51
    v_min: float = -10.0
    v_max: float = 10.0
    buffer_size: int = 1_000_000
    gamma: float = 0.99
    target_network_frequency: int = 10_000  # env steps between hard target copies
    batch_size: int = 32
    eps_start: float = 1.0
    eps_end: float = 0.01
    eps_fraction: float = 0.1
    learning_starts: int = 80_000  # env steps of random actions before the first gradient step
    train_frequency: int = 4  # env steps per gradient step
    max_grad_norm: float = 0.0  # 0 = no clipping (reference)
    net: NetConfig = field(default_factory=lambda: NetConfig(
        torso="nature_cnn", widths=(512,), activation="relu", shared=True, init="torch", head_init="torch"))


PRESETS: dict[str, C51Config] = {
    "atari": C51Config(),
    # CleanRL c51.py classic-control settings, scaled to a CPU-sized run
    "cartpole": C51Config(steps_per_update=100, learning_rate=2.5e-4, adam_eps=0.01 / 32, n_atoms=101,
                          v_min=-100.0, v_max=100.0, buffer_size=10_000, target_network_frequency=500,
                          batch_size=128, eps_end=0.05, eps_fraction=0.5, learning_starts=1_000,
                          train_frequency=10,
                          net=NetConfig(torso="mlp", widths=(120, 84), activation="relu", shared=True, init="torch",
                                        head_init="torch")),
    "minatar": C51Config(steps_per_update=1000, learning_rate=1e-4, n_atoms=51, buffer_size=100_000,
                         target_network_frequency=1_000, batch_size=64, eps_end=0.01, eps_fraction=0.1,
                         learning_starts=5_000, train_frequency=4,
                         net=NetConfig(torso="mlp", widths=(256, 256), activation="relu", shared=True, init="torch",
                                       head_init="torch")),
}


def default_preset(env_id: str) -> str:
    name = env_id.split(":", 1)[-1].lower()
    if "minatar" in name:
        return "minatar"
    if env_id.startswith(("envpool:", "atari:")):
        return "atari"
    return "cartpole"
