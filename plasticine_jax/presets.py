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
    # ------------------------------------------------------------------ reference-sized
    "open-craftax": Preset(
        "PPO on Craftax-Symbolic-v1 for 1e8 steps (reference O/ppo_craftax_*: 1024 envs x 64 steps, 3x512 tanh "
        "towers, lr 2e-4 annealed), achievement success rates logged (GPU-scale)",
        "ppo", "craftax:Craftax-Symbolic-v1", "craftax", total_timesteps=100_000_000),
    "continual-procgen-level": Preset(
        "PPO on Procgen bigfish, single levels 5, 10, ..., 50 in sequence, 100 iterations (1.64M steps) each "
        "(reference C/ppo_procgen_*, cont_mode level)",
        "ppo", "envpool:BigfishEasy-v0", "procgen", needs="the envpool backend"),
    "continual-procgen-task": Preset(
        "PPO on the 16 Procgen games in sequence on level 200, 100 iterations each (reference cont_mode task)",
        "ppo", "envpool:BigfishEasy-v0", "procgen", needs="the envpool backend"),
    "continual-procgen-intra": Preset(
        "PPO on Procgen starpilot levels 0, 20, ..., 180, 2M steps each (newest reference, "
        "ContinualProcgenIntraTask)",
        "ppo", "envpool:StarpilotEasy-v0", "procgen", needs="the envpool backend"),
    "continual-dmc-walker": Preset(
        "PPO on DMC walker stand, walk, run, stand, walk, run, 1M steps each (newest reference)",
        "ppo", "envpool:WalkerStand-v1", "continuous", needs="the envpool backend"),
    "continual-dmc-quadruped": Preset(
        "PPO on DMC quadruped walk, run, walk, run, walk, run, 1M steps each (newest reference)",
        "ppo", "envpool:QuadrupedWalk-v1", "continuous", needs="the envpool backend"),
    "continual-dmc-dog": Preset(
        "PPO on DMC dog stand, walk, run, trot (twice), 1M steps each (newest reference)",
        "ppo", "envpool:DogStand-v1", "continuous", needs="the envpool backend"),
    "continual-dmc-dynamics": Preset(
        "TD3 on DMC quadruped walk whose toe friction changes every 1M steps (10 rounds, frictions_100x50 "
        "table; the reference's dynamics mode, fixed)",
        "td3", "dmc:quadruped-walk", "dmc", needs="the dm_control backend"),
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
