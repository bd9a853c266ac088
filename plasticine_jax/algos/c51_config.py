"""C51 hyperparameters (frozen dataclass) and presets. Defaults = the newest reference's Atari C51 (§1.5:
CleanRL's c51_atari, PyTorch default init everywhere, Adam eps 0.01/32)."""

from __future__ import annotations

from dataclasses import dataclass, field

from plasticine_jax.errors import ConfigError
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
    metric_batch: int = 2048  # replay transitions for the heavy metrics (reference N: 2048), drawn uniformly
    net: NetConfig = field(default_factory=lambda: NetConfig(
        torso="nature_cnn", widths=(512,), activation="relu", shared=True, init="torch", head_init="torch"))


PRESETS: dict[str, C51Config] = {
    "atari": C51Config(),
    # CleanRL c51.py classic-control settings, scaled to a CPU-sized run: lr 1e-3 (not 2.5e-4), a gradient
    # step every 4 env steps (not 10), 51 atoms (not 101) and batch 64 (not 128). Measured on CartPole-v1
    # (2 seeds): CleanRL's values reach ~95 after 100k steps; these reach ~250 after 50k, and each gradient
    # step is ~5x cheaper on CPU (the projection costs O(batch * atoms^2)).
    "cartpole": C51Config(steps_per_update=100, learning_rate=1e-3, adam_eps=0.01 / 32, n_atoms=51,
                          v_min=-100.0, v_max=100.0, buffer_size=10_000, target_network_frequency=500,
                          batch_size=64, eps_end=0.05, eps_fraction=0.5, learning_starts=1_000,
                          train_frequency=4,
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


def _flag(name: str) -> str:
    return "--c51." + name.replace("_", "-")


def validate(cfg: C51Config) -> None:
    """Raise ``ConfigError`` (one line naming the flag and its valid range) on any out-of-range field."""
    for k in ("num_envs", "steps_per_update", "buffer_size", "target_network_frequency", "batch_size",
              "train_frequency", "metric_batch"):
        v = getattr(cfg, k)
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"{_flag(k)} must be a positive integer (got {v!r})")
    if not isinstance(cfg.n_atoms, int) or cfg.n_atoms < 2:
        raise ConfigError(f"{_flag('n_atoms')} must be an integer >= 2 (got {cfg.n_atoms!r})")
    if not isinstance(cfg.learning_starts, int) or not 0 <= cfg.learning_starts < 2**31:
        raise ConfigError(f"{_flag('learning_starts')} must be an integer in [0, 2^31) (got {cfg.learning_starts!r})")
    if cfg.steps_per_update % cfg.train_frequency:
        raise ConfigError(f"{_flag('steps_per_update')} must be a multiple of {_flag('train_frequency')} "
                          f"(got {cfg.steps_per_update} and {cfg.train_frequency})")
    block = cfg.num_envs * cfg.train_frequency
    if cfg.target_network_frequency % block or cfg.target_network_frequency // block >= 2**31:
        raise ConfigError(f"{_flag('target_network_frequency')} must be a multiple of num_envs*train_frequency="
                          f"{block} env steps (got {cfg.target_network_frequency})")
    if cfg.buffer_size < cfg.num_envs:
        raise ConfigError(f"{_flag('buffer_size')} must be >= num_envs={cfg.num_envs} (got {cfg.buffer_size})")
    if not cfg.v_min < cfg.v_max:
        raise ConfigError(f"{_flag('v_min')} must be < {_flag('v_max')} (got {cfg.v_min} and {cfg.v_max})")
    if not cfg.learning_rate > 0:
        raise ConfigError(f"{_flag('learning_rate')} must be > 0 (got {cfg.learning_rate})")
    if not cfg.adam_eps > 0:
        raise ConfigError(f"{_flag('adam_eps')} must be > 0 (got {cfg.adam_eps})")
    if not cfg.max_grad_norm >= 0:
        raise ConfigError(f"{_flag('max_grad_norm')} must be >= 0 (0 = no clipping) (got {cfg.max_grad_norm})")
    if not 0 < cfg.gamma <= 1:
        raise ConfigError(f"{_flag('gamma')} must be in (0, 1] (got {cfg.gamma})")
    for k in ("eps_start", "eps_end", "eps_fraction"):
        v = getattr(cfg, k)
        if not 0 <= v <= 1:
            raise ConfigError(f"{_flag(k)} must be in [0, 1] (got {v})")
