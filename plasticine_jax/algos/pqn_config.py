"""PQN hyperparameters (frozen dataclass) and presets. Defaults = the reference's Atari PQN (§1.3: CleanRL's
pqn_atari_envpool without its LayerNorms; LayerNorm is the ``ln`` intervention)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from plasticine_jax.algos.validation import Checks
from plasticine_jax.interventions.base import CLIPS
from plasticine_jax.nets import NetConfig


@dataclass(frozen=True)
class PQNConfig:
    """Parallel Q-learning: Q(lambda) targets on on-policy rollouts, epsilon-greedy, no target network."""

    num_envs: int = 8
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 4
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True  # linear to 0 over the run (reference)
    optimizer: str = "radam"  # radam (reference, torch RAdam) | adam
    adam_eps: float = 1e-8
    max_grad_norm: float = 10.0
    clip: str = "global_norm"  # global_norm (reference) | elementwise (rejax) | per_network (= global: one net)
    gamma: float = 0.99
    q_lambda: float = 0.65
    eps_start: float = 1.0
    eps_end: float = 0.01
    eval_epsilon: float = 0.005  # epsilon of the evaluation policy (algos.evaluate; rejax: 0.005)
    eps_fraction: float = 0.1  # fraction of total_timesteps over which epsilon decays linearly
    bootstrap_truncation: bool = True  # r += gamma * max_a Q(final_obs) on truncated steps (reference: done)
    net: NetConfig = field(default_factory=lambda: NetConfig(
        torso="nature_cnn", widths=(512,), activation="relu", shared=True, value_gain=math.sqrt(2.0)))


PRESETS: dict[str, PQNConfig] = {
    "atari": PQNConfig(),
    # purejaxql's pqn_cartpole settings (vector obs -> MLP), without its LayerNorm (the ln intervention adds it).
    # learning_rate 1e-3 instead of purejaxql's 1e-4: without LayerNorm, 1e-4 (annealed) learns little on
    # CartPole-v1 (measured, 2 seeds: final returns 10-17 after 200k steps, 59-110 after 500k); 1e-3 reaches 500
    # within 150k steps (5 of 6 seeds); with LayerNorm, 1e-4 learns again (250-390 after 500k steps).
    "cartpole": PQNConfig(num_envs=32, num_steps=64, update_epochs=4, num_minibatches=16, learning_rate=1e-3,
                          q_lambda=0.95, eps_end=0.05, eps_fraction=0.2,
                          net=NetConfig(torso="mlp", widths=(128, 128), activation="relu", shared=True,
                                        value_gain=math.sqrt(2.0))),
    # Adam at a constant lr with LeCun init (no LayerNorm: that is the ln intervention). Measured on Breakout-MinAtar
    # (experiments/parity.py, 8 seeds x 1M steps, final return [95% CI]): 10.7 [8.3, 13.7]; rejax's PQN (64-64
    # with LayerNorm) 8.9 [7.8, 9.7]; the earlier preset (RAdam annealed, orthogonal) 7.3 [6.5, 8.2].
    "minatar": PQNConfig(num_envs=128, num_steps=32, update_epochs=2, num_minibatches=32, learning_rate=1e-4,
                         anneal_lr=False, optimizer="adam", q_lambda=0.65, eps_end=0.01, eps_fraction=0.1,
                         net=NetConfig(torso="mlp", widths=(256, 256), activation="relu", shared=True,
                                       value_gain=math.sqrt(2.0), init="lecun", head_init="lecun")),
}


def default_preset(env_id: str) -> str:
    name = env_id.split(":", 1)[-1].lower()
    if "minatar" in name:
        return "minatar"
    if env_id.startswith(("envpool:", "atari:")):
        return "atari"
    return "cartpole"


def validate(cfg: PQNConfig) -> None:
    """One clear line naming the flag and its valid range for any out-of-range value (called by the CLI)."""
    (Checks("pqn", cfg).ints("num_envs", "num_steps", "update_epochs", "num_minibatches")
     .divides("num_minibatches", cfg.num_envs * cfg.num_steps, "num_envs x num_steps")
     .positive("learning_rate", "adam_eps").one_of("optimizer", ("radam", "adam")).nonneg("max_grad_norm")
     .one_of("clip", CLIPS).unit("gamma")
     .unit("q_lambda", "eps_start", "eps_end", "eval_epsilon", "eps_fraction", open_low=False))
