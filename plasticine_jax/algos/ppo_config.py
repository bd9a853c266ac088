"""PPO hyperparameters (frozen dataclass) and the reference's named presets."""

from __future__ import annotations

from dataclasses import dataclass, field

from plasticine_jax.algos.validation import Checks
from plasticine_jax.interventions.base import CLIPS
from plasticine_jax.nets import NetConfig


@dataclass(frozen=True)
class PPOConfig:
    """CleanRL/PureJaxRL-style PPO. Defaults: PureJaxRL's CartPole settings."""

    num_envs: int = 4
    num_steps: int = 128
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True  # linear to 0 over the run, constant within an iteration (CleanRL)
    update_epochs: int = 4
    num_minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    # gradient clip at max_grad_norm: global_norm = one norm over actor and critic (CleanRL) | per_network = one
    # per tower (two optimizers) | elementwise = optax.clip per entry (rejax)
    clip: str = "global_norm"
    norm_adv: bool = True  # per minibatch, (A - mean) / (std_unbiased + 1e-8)
    adam_eps: float = 1e-5
    bootstrap_truncation: bool = True  # r += gamma * V(final_obs) on truncated steps
    normalize_obs: bool = False
    normalize_reward: bool = False  # gym-0.23 NormalizeReward(gamma) + clip 10 (reference Procgen)
    net: NetConfig = field(default_factory=NetConfig)


# The reference's settings (reference.md §1.1, §1.2). Env ids are suggestions; any env works.
PRESETS: dict[str, PPOConfig] = {
    # The default a new user meets on CartPole: rejax's tuned CartPole shape (5 envs x 100 steps, 5 epochs x 5
    # minibatches, lr 7.5e-4) with our option defaults; measured (experiments/parity.py --ablation ppo-cartpole,
    # 16 seeds, 100k steps): 477 [462, 487] vs rejax's own default 433 [374, 472]. CleanRL/PureJaxRL's shape
    # (cleanrl-cartpole) needs about 500k steps: 228-264 after 100k.
    "cartpole": PPOConfig(num_envs=5, num_steps=100, learning_rate=7.5e-4, update_epochs=5, num_minibatches=5),
    "cleanrl-cartpole": PPOConfig(),
    # MinAtar: measured on Breakout-MinAtar (experiments/parity.py --ablation ppo-breakout, 8 seeds x 1M steps,
    # final return [95% CI]): this preset 19.3 [14.9, 22.1], rejax's defaults at the same shape 14.6 [8.0, 20.2];
    # the earlier preset (orthogonal init, annealed lr, Adam eps 1e-5, truncation bootstrap) 9.8 [7.8, 13.0], and
    # orthogonal init alone costs most of it (11.1 [6.9, 15.7]).
    "minatar": PPOConfig(num_envs=64, num_steps=128, learning_rate=5e-4, anneal_lr=False, update_epochs=4,
                         num_minibatches=8, adam_eps=1e-8, bootstrap_truncation=False,
                         net=NetConfig(torso="mlp", widths=(256, 256), activation="relu", init="lecun",
                                       head_init="lecun")),
    "continuous": PPOConfig(num_envs=16, num_steps=256, learning_rate=3e-4, anneal_lr=True, update_epochs=10,
                            num_minibatches=32, gae_lambda=0.95, ent_coef=0.0, normalize_obs=True,
                            normalize_reward=True, net=NetConfig(torso="mlp", widths=(64, 64), activation="tanh")),
    # S/ppo_procgen_vanilla.py: IMPALA CNN shared trunk, torch-default init, Adam 5e-4 eps 1e-5, no anneal.
    # The reference does not bootstrap truncated episodes (CleanRL's GAE treats every done alike).
    "procgen": PPOConfig(num_envs=64, num_steps=256, learning_rate=5e-4, anneal_lr=False, update_epochs=3,
                         num_minibatches=8, gamma=0.999, gae_lambda=0.95, ent_coef=0.01, max_grad_norm=0.5,
                         normalize_reward=True, bootstrap_truncation=False,
                         net=NetConfig(torso="impala_cnn", widths=(256,), activation="relu", shared=True,
                                       init="torch")),
    # O/ppo_craftax_vanilla.py: separate 3x512 tanh towers, orthogonal sqrt 2, lr 2e-4 annealed.
    # CleanRL ppo_atari(_envpool): Nature CNN shared trunk, 8 envs x 128 steps, 4 x 4, clip 0.1, lr annealed.
    "atari": PPOConfig(num_envs=8, num_steps=128, learning_rate=2.5e-4, anneal_lr=True, update_epochs=4,
                       num_minibatches=4, clip_coef=0.1, ent_coef=0.01, max_grad_norm=0.5,
                       net=NetConfig(torso="nature_cnn", widths=(512,), activation="relu", shared=True)),
    "craftax": PPOConfig(num_envs=1024, num_steps=64, learning_rate=2e-4, anneal_lr=True, update_epochs=4,
                         num_minibatches=8, gamma=0.99, gae_lambda=0.8, ent_coef=0.01, max_grad_norm=1.0,
                         bootstrap_truncation=False,
                         net=NetConfig(torso="mlp", widths=(512, 512, 512), activation="tanh", shared=False)),
}

# Metric options a preset changes unless the user sets them (O/ppo_craftax_*: dormant threshold 0.05, §4.2).
PRESET_METRICS: dict[str, dict] = {"craftax": {"tau": 0.05}}


def default_preset(env_id: str) -> str:
    """The preset a new user meets for an env id."""
    name = env_id.split(":", 1)[-1].lower()
    if env_id.startswith("craftax:"):
        return "craftax"
    if env_id.startswith(("brax:", "playground:", "dmc:")):
        return "continuous"
    if env_id.startswith("envpool:"):  # Procgen <Game><Mode>-v0, DMC <Domain><Task>-v1, Atari <Game>-v5
        if name.endswith("-v1"):
            return "continuous"
        return "atari" if name.endswith("-v5") else "procgen"
    if "minatar" in name:
        return "minatar"
    if any(k in name for k in ("pendulum", "continuous", "brax", "walker", "cheetah")):
        return "continuous"
    return "cartpole"


def validate(cfg: PPOConfig) -> None:
    """One clear line naming the flag and its valid range for any out-of-range value (called by the CLI)."""
    (Checks("ppo", cfg).ints("num_envs", "num_steps", "update_epochs", "num_minibatches")
     .divides("num_minibatches", cfg.num_envs * cfg.num_steps, "num_envs x num_steps")
     .positive("learning_rate", "clip_coef", "adam_eps").nonneg("ent_coef", "vf_coef", "max_grad_norm")
     .unit("gamma").unit("gae_lambda", open_low=False).one_of("clip", CLIPS))
