"""Scenario presets: ``--preset NAME`` sets the learner, env, hyperparameters, budget and task sequence of a
study in one word; any explicit flag overrides it. ``python -m plasticine_jax presets`` lists them.

CPU-sized presets run on a laptop in minutes; reference-sized ones reproduce the reference's scenarios
(reference.md §2) and need the backends they name. A learner's own presets (``ppo: cartpole, minatar, ...``)
are still accepted by ``--preset`` and listed beside these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plasticine_jax.envs.tasks import DEFAULT_GAMES, ContinualConfig


@dataclass(frozen=True)
class Preset:
    """One named scenario. ``learner`` / ``net`` / ``metrics`` are field overrides on top of the learner's
    preset ``learner_preset``; ``needs`` names a missing backend (the preset is reserved, not runnable yet)."""

    summary: str
    algo: str
    env: str
    learner_preset: str
    total_timesteps: int | None = None  # None: num_tasks x task_timesteps (continual) or the CLI default
    learner: dict = field(default_factory=dict)
    net: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    needs: str | None = None


_MINATAR_GAMES = DEFAULT_GAMES  # SpaceInvaders -> Asterix -> Seaquest -> Breakout -> Freeway

_PROCGEN_BATCH = 64 * 256  # one reference PPO iteration (64 envs x 256 steps)
_PROCGEN_GAMES = tuple(f"envpool:{g}Easy-v0" for g in (
    "Bigfish", "Bossfight", "Caveflyer", "Chaser", "Climber", "Coinrun", "Dodgeball", "Fruitbot", "Heist", "Jumper",
    "Leaper", "Maze", "Miner", "Ninja", "Plunder", "Starpilot"))
# N: CleanRL ppo_continuous_action: 1 env x 2048 steps, 10 epochs x 32 minibatches, lr 3e-4 constant, no entropy
# bonus, 256-256 ReLU actor and a separate critic, obs and reward normalisation (reference.md §1.5).
_N_DMC_PPO = {"num_envs": 1, "num_steps": 2048, "num_minibatches": 32, "update_epochs": 10, "learning_rate": 3e-4,
              "anneal_lr": False, "ent_coef": 0.0, "normalize_obs": True, "normalize_reward": True}
_N_DMC_NET = {"widths": (256, 256), "activation": "relu", "shared": False}


def _n_dmc(games: tuple[str, ...]) -> ContinualConfig:
    """N's continual DMC: 1M steps per task, floored to whole 2048-step iterations (488, as the reference)."""
    return ContinualConfig(num_tasks=len(games), task_timesteps=488 * 2048, shifts=("games",),
                           games=tuple(f"envpool:{g}" for g in games))


# Continual presets keep the learning rate constant (the newest reference's continual PPO does): an annealed
# rate would confound a loss of plasticity with a shrinking step size.
PRESETS: dict[str, Preset] = {
    # ------------------------------------------------------------------ CPU-sized, native JAX
    "cpu-continual-minatar": Preset(
        "PPO (64-64 MLP towers) on 5 MinAtar games in sequence (SpaceInvaders, Asterix, Seaquest, Breakout, "
        "Freeway), 400k steps each; lax.switch over games, padded channels, the full 6-action set",
        "ppo", "gymnax:SpaceInvaders-MinAtar", "minatar",
        learner={"num_envs": 32, "num_steps": 125}, net={"widths": (64, 64)},
        continual=ContinualConfig(num_tasks=5, task_timesteps=400_000, shifts=("games",), games=_MINATAR_GAMES),
        metrics={"every": 10}),
    "cpu-continual-cartpole": Preset(
        "PPO on CartPole-v1 whose pole length and gravity change every 100k steps (10 tasks, factors "
        "log-uniform in [0.25, 4], task 0 the stock env): the native counterpart of the friction shift",
        "ppo", "gymnax:CartPole-v1", "cartpole", learner={"anneal_lr": False},
        continual=ContinualConfig(num_tasks=10, task_timesteps=100_000, shifts=("params",),
                                  params=("length", "gravity"))),
    "cpu-permuted-cartpole": Preset(
        "PPO on CartPole-v1 with a new random permutation of the observation features every 100k steps "
        "(10 tasks, task 0 unpermuted)",
        "ppo", "gymnax:CartPole-v1", "cartpole", learner={"anneal_lr": False},
        continual=ContinualConfig(num_tasks=10, task_timesteps=100_000, shifts=("permute",))),
    # ------------------------------------------------------------------ reference-sized: standard (reference §2.1)
    "standard-procgen": Preset(
        "PPO on Procgen starpilot (easy, unlimited levels) for 25M steps: IMPALA CNN, 64 envs x 256 steps, "
        "3 epochs x 8 minibatches, lr 5e-4, reward normalisation (R: S/ppo_procgen_vanilla.py)",
        "ppo", "envpool:StarpilotEasy-v0", "procgen", total_timesteps=25_000_000),
    "standard-atari-pqn": Preset(
        "PQN on Atari Breakout-v5 for 10M steps: Nature CNN without LayerNorm, 8 envs x 128 steps, RAdam 2.5e-4 "
        "annealed, Q(lambda 0.65), episodic life + reward clip, games logged on raw scores "
        "(R: S/pqn_atari_vanilla.py)",
        "pqn", "envpool:Breakout-v5", "atari", total_timesteps=10_000_000),
    "standard-atari-c51": Preset(
        "C51 on Atari Breakout for 10M steps: Nature CNN (torch init), 51 atoms on [-10, 10], buffer 1M, "
        "hard target every 10k steps, learning starts 80k (N: c51_atari_plasticine.py; envpool's Breakout-v5 "
        "stands in for gymnasium's BreakoutNoFrameskip-v4 with the same Atari wrappers)",
        "c51", "envpool:Breakout-v5", "atari", total_timesteps=10_000_000),
    "standard-dmc-td3": Preset(
        "TD3 on DMC quadruped walk for 1M steps from proprioceptive state: 256-256 torch-init nets, 25k random "
        "warm-up steps, one critic step per env step (R: S/td3_dmc_vanilla.py, dm_control directly)",
        "td3", "dmc:quadruped_walk", "dmc", total_timesteps=1_000_000),
    # ------------------------------------------------------------------ reference-sized: continual and open-ended
    "open-craftax": Preset(
        "PPO on Craftax-Symbolic-v1 for 1e8 steps (reference O/ppo_craftax_*: 1024 envs x 64 steps, 3x512 tanh "
        "towers, lr 2e-4 annealed), achievement success rates logged (GPU-scale)",
        "ppo", "craftax:Craftax-Symbolic-v1", "craftax", total_timesteps=100_000_000),
    "continual-procgen-level": Preset(
        "PPO on Procgen bigfish, single levels 5, 10, ..., 50 in sequence, 100 iterations (1,638,400 steps) each; "
        "interventions on the global schedule, reward normalisation restarts per level "
        "(R: C/ppo_procgen_*.py, cont_mode level)",
        "ppo", "envpool:BigfishEasy-v0", "procgen",
        continual=ContinualConfig(num_tasks=10, task_timesteps=100 * _PROCGEN_BATCH, shifts=("levels",),
                                  levels=tuple(range(5, 55, 5)))),
    "continual-procgen-task": Preset(
        "PPO on the 16 Procgen games in alphabetical order (bigfish ... starpilot), each on the single level 200, "
        "100 iterations each (R: C/ppo_procgen_*.py, cont_mode task)",
        "ppo", "envpool:BigfishEasy-v0", "procgen",
        continual=ContinualConfig(num_tasks=16, task_timesteps=100 * _PROCGEN_BATCH, shifts=("games", "levels"),
                                  games=_PROCGEN_GAMES, levels=(200,))),
    "continual-procgen-intra": Preset(
        "PPO on Procgen starpilot levels 0, 20, ..., 180, 2M steps each, 1 env x 1000 steps, lr 1e-3, gamma 0.99 "
        "(N: ppo_continual_procgen_plasticine.py, ContinualProcgenIntraTask; N keys interventions to tasks: add "
        "--<iv>.on-task-switch)",
        "ppo", "envpool:StarpilotEasy-v0", "procgen",
        learner={"num_envs": 1, "num_steps": 1000, "learning_rate": 1e-3, "gamma": 0.99},
        continual=ContinualConfig(num_tasks=10, task_timesteps=2_000_000, shifts=("levels",),
                                  levels=tuple(range(0, 200, 20)))),
    "continual-dmc-walker": Preset(
        "PPO on DMC walker stand, walk, run, stand, walk, run, 488 iterations of 1 env x 2048 steps (999,424 "
        "steps) per task, obs/reward normalisation restarting per task (N: ppo_continual_dmc_plasticine.py)",
        "ppo", "envpool:WalkerStand-v1", "continuous", learner=_N_DMC_PPO, net=_N_DMC_NET,
        continual=_n_dmc(("WalkerStand-v1", "WalkerWalk-v1", "WalkerRun-v1") * 2)),
    "continual-dmc-quadruped": Preset(
        "PPO on DMC quadruped walk, run, walk, run, walk, run, 999,424 steps per task (N, as walker)",
        "ppo", "envpool:QuadrupedWalk-v1", "continuous", learner=_N_DMC_PPO, net=_N_DMC_NET,
        continual=_n_dmc(("QuadrupedWalk-v1", "QuadrupedRun-v1") * 3)),
    "continual-dmc-dog": Preset(
        "PPO on DMC dog stand, walk, run, trot, stand, walk, run, trot, 999,424 steps per task (N, as walker)",
        "ppo", "envpool:DogStand-v1", "continuous", learner=_N_DMC_PPO, net=_N_DMC_NET,
        continual=_n_dmc(("DogStand-v1", "DogWalk-v1", "DogRun-v1", "DogTrot-v1") * 2)),
    "continual-dmc-dynamics": Preset(
        "TD3 on DMC quadruped walk whose toe friction changes every 1M steps: 10 rounds, round 0 the stock model, "
        "then row 1 of the frictions_100x50 table (--continual.friction-row R for the reference's seed R); "
        "replay, networks and optimizers kept (R: C/td3_dmc_*.py cont_mode dynamics, which never ran there)",
        "td3", "dmc:quadruped_walk", "dmc",
        continual=ContinualConfig(num_tasks=10, task_timesteps=1_000_000, shifts=("params",),
                                  params=("friction",), friction_row=1)),
}


def describe_all() -> str:
    """The text of ``python -m plasticine_jax presets``: one line per scenario and learner preset."""
    from plasticine_jax.algos import registry

    lines = ["scenario presets (--preset NAME; explicit flags override them):"]
    width = max(len(n) for n in PRESETS)
    for name, p in PRESETS.items():
        status = f" [needs {p.needs}]" if p.needs else ""
        lines.append(f"  {name:<{width}}  {p.summary}{status}")
    lines.append("")
    lines.append("learner presets (--preset NAME with the matching --algo; chosen by env when --preset is unset):")
    for algo in registry.ALGOS:
        names = ", ".join(registry.config_module(algo).PRESETS)
        lines.append(f"  {algo:<5} {names}")
    return "\n".join(lines)
