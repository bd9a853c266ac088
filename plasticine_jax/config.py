"""Command-line configuration (tyro) and its resolution into validated, frozen run configs.

``TrainArgs`` is built from the dataclasses it exposes (one override group per learner, ``--ppo.*``,
``--pqn.*``, ``--td3.*``, ``--sac.*``, ``--c51.*``; network overrides; metric options; one option group
per intervention named by its reference alias, e.g. ``--snp.coef``), so ``--help`` always lists every
option with its default. ``resolve_run`` applies the learner's preset, the overrides and the intervention
list, and raises ``ConfigError`` with one clear line on any bad value.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass, field, fields, make_dataclass, replace
from typing import Annotated, Any

import tyro

from plasticine_jax.algos import registry
from plasticine_jax.envs.tasks import ContinualConfig
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.registry import REGISTRY, canonical, options_class, parse_list
from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.nets import NetConfig

ALGOS = tuple(registry.ALGOS)


def _overrides_class(name: str, base: type, skip: tuple[str, ...] = ()) -> type:
    """A dataclass with every field of ``base`` optional (None = keep the preset's value)."""
    specs = []
    hints = typing.get_type_hints(base)
    for f in fields(base):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f"(preset value if unset; default {default!r})"
        specs.append((f.name, Annotated[hints[f.name] | None, tyro.conf.arg(help=help_)], field(default=None)))
    return make_dataclass(name, specs, frozen=True)


ALGO_OVERRIDES = {a: _overrides_class(f"{a.upper()}Overrides", registry.config_class(a), skip=("net",))
                  for a in ALGOS}
NetOverrides = _overrides_class("NetOverrides", NetConfig, skip=("injection",))
ContinualOverrides = _overrides_class("ContinualOverrides", ContinualConfig)
DEFAULT_ALGO, DEFAULT_ENV, DEFAULT_TIMESTEPS = "ppo", "gymnax:CartPole-v1", 500_000


@dataclass(frozen=True)
class RunOptions:
    """What to train and where to write it."""

    algo: str | None = None  # learner: ppo | pqn | td3 | sac | c51 (default ppo, or the scenario preset's)
    env: str | None = None  # backend:id, e.g. gymnax:Breakout-MinAtar, craftax:Craftax-Classic-Symbolic-v1
    # (default gymnax:CartPole-v1, or the scenario preset's)
    preset: str | None = None  # a scenario preset (python -m plasticine_jax presets: e.g. cpu-continual-minatar)
    # or the learner's own (ppo: cartpole|minatar|continuous|procgen|craftax; pqn/c51: cartpole|minatar|atari;
    # td3/sac: pendulum|dmc); default: chosen by env
    num_seeds: int = 4  # independent seeds, vmapped in one compile
    num_envs: int | None = None  # envs per seed (the learner's num_envs; the same as --<algo>.num-envs)
    seed: int = 0  # first seed; seeds are seed, seed+1, ...
    total_timesteps: int | None = None  # env steps per seed (default 500k, a preset's, or a continual run's
    # num_tasks x task_timesteps)
    out: str = "runs/default"  # output directory (config.json, metrics.jsonl, wandb/)
    overwrite: bool = False  # allow writing into a non-empty --out
    interventions: str = ""  # comma list of names or aliases, e.g. redo,ln,snp (empty = vanilla)
    sweep: tuple[str, ...] = ()  # vmapped hyperparameter grid, e.g. snp.coef=0.9,0.99 lr=1e-3,3e-4
    log_every: int = 0  # log a row every N updates (0 = every metrics.every updates, or 10)
    chunk_updates: int = 0  # updates per compiled chunk between host logging (0 = auto, ~20 chunks)
    track: bool = False  # W&B online; otherwise W&B runs offline under <out>/wandb (sync later)
    no_wandb: bool = False  # skip W&B entirely
    wandb_project: str = "plasticine-jax"
    wandb_entity: str | None = None
    wandb_group: str | None = None  # default: <env>__<interventions>
    progress: bool = True  # rich progress bar (steps, SPS, ETA, mean return)
    resume: str | None = None  # continue the run in this dir from its last checkpoint, with its saved flags
    checkpoint_every: int = 1  # save a checkpoint every N chunks (0 = only at the end; always at the end)
    checkpoint_keep: int = 2  # keep the last K checkpoints in <out>/checkpoints
    checkpoint_buffer: bool = True  # checkpoints hold the replay buffers (off-policy runs resume only with them)
    stop_after_chunks: int = 0  # testing/preemption: stop after N chunks in this process as if killed (0 = off)
    devices: int = 0  # split the runs (seeds x sweep points) over this many local devices (0 = all; CPU: 1 unless
    # XLA_FLAGS=--xla_force_host_platform_device_count=N); results equal a one-device run's up to float rounding,
    # bit for bit with --batch-invariant
    batch_invariant: bool = False  # XLA:CPU code whose results do not depend on how many runs share a program or
    # device: a seed alone, among others or on another device gives the same bits (no FMA/AVX2: slower)
    compile_cache: str = "auto"  # persistent XLA compile cache, so a re-run or --resume of the same program skips
    # XLA's compile: auto (JAX_COMPILATION_CACHE_DIR if set, else ~/.cache/plasticine-jax/xla, at most 2 GiB) |
    # off | a directory
    on_divergence: str = "stop"  # a seed's params went non-finite: stop (one line, last good checkpoint kept,
    # exit 3) | continue (the seed is frozen at its last finite params and marked; the others go on)


def _build_train_args() -> type:
    specs: list[tuple[str, Any, Any]] = [
        ("run", Annotated[RunOptions, tyro.conf.arg(name="")], field(default_factory=RunOptions)),
        *[(a, cls, field(default_factory=cls)) for a, cls in ALGO_OVERRIDES.items()],
        ("net", NetOverrides, field(default_factory=NetOverrides)),
        ("metrics", MetricsConfig, field(default_factory=MetricsConfig)),
        ("continual", Annotated[ContinualOverrides, tyro.conf.arg(help="task sequence of a continual run "
                                                                        "(envs/tasks.py)")],
         field(default_factory=ContinualOverrides)),
    ]
    for name, (alias, _) in REGISTRY.items():
        cls = options_class(name)
        specs.append((alias, Annotated[cls, tyro.conf.arg(help=f"{name} options")], field(default_factory=cls)))
    return make_dataclass("TrainArgs", specs, frozen=True)


TrainArgs = _build_train_args()


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, resolved and validated (written to config.json)."""

    run: RunOptions
    algo_cfg: Any  # the learner's resolved config (PPOConfig, PQNConfig, ...)
    metrics: MetricsConfig
    interventions: tuple[str, ...]
    intervention_options: dict[str, Any]
    sweep: tuple[dict[str, float], ...]  # one hparam override dict per grid point ({} when no sweep)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    scenario: str | None = None  # the scenario preset applied, if any


def _apply_overrides(base: Any, overrides: Any) -> Any:
    changes = {f.name: getattr(overrides, f.name) for f in fields(overrides) if getattr(overrides, f.name) is not None}
    return replace(base, **changes)


def parse_sweep(specs: tuple[str, ...], valid: dict[str, float]) -> tuple[dict[str, float], ...]:
    """``("snp.coef=0.9,0.99", "learning_rate=1e-3")`` -> the grid of override dicts (cartesian product)."""
    axes = []
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"bad --sweep '{spec}': use name=v1,v2,... e.g. snp.coef=0.9,0.99")
        key, values = spec.split("=", 1)
        key = _canonical_hparam(key.strip(), valid)
        try:
            vals = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"bad --sweep values in '{spec}': numbers separated by commas") from None
        if not vals:
            raise ConfigError(f"--sweep '{spec}' has no values")
        axes.append([(key, v) for v in vals])
    return tuple(dict(combo) for combo in itertools.product(*axes)) if axes else ({},)


def _canonical_hparam(key: str, valid: dict[str, float]) -> str:
    aliases = {"lr": "learning_rate"}
    key = aliases.get(key, key)
    if "." in key and not key.startswith("continual."):
        iv, fld = key.split(".", 1)
        key = f"{canonical(iv)}.{fld}"
    if key not in valid:
        raise ConfigError(f"--sweep: '{key}' is not a vmappable hyperparameter of this run; "
                          f"choose from {', '.join(sorted(valid))}")
    return key


def resolve_run(args: Any) -> RunConfig:
    """Validate CLI args and produce a RunConfig (raises ConfigError with one clear line). A scenario preset
    (``plasticine_jax.presets``) fills algo, env, budget, learner and task sequence; explicit flags win."""
    from plasticine_jax.envs import tasks
    from plasticine_jax.envs.registry import validate_env_id
    from plasticine_jax.presets import PRESETS as SCENARIOS

    run: RunOptions = args.run
    scenario = SCENARIOS.get(run.preset) if run.preset else None
    if scenario is not None and scenario.needs:
        raise ConfigError(f"preset {run.preset} needs {scenario.needs}, which this version does not have yet; "
                          f"run a cpu-* preset (python -m plasticine_jax presets)")
    continual = _apply_overrides(scenario.continual if scenario else ContinualConfig(), args.continual)
    tasks.validate(continual)
    algo = run.algo or (scenario.algo if scenario else DEFAULT_ALGO)
    env = run.env or (scenario.env if scenario else DEFAULT_ENV)
    if continual.enabled and "games" in continual.shifts:
        games = tasks.game_specs(continual, env)
        first = games[0]
        if run.env and run.env != first:
            raise ConfigError(f"--env {run.env} conflicts with --continual.games (the run's env is the first game, "
                              f"{first}); drop --env")
        env = first
        for game in dict.fromkeys(games[1:]):
            validate_env_id(game)
    total = run.total_timesteps or (scenario.total_timesteps if scenario else None)
    if continual.enabled:
        budget = continual.num_tasks * continual.task_timesteps
        if run.total_timesteps and run.total_timesteps != budget:
            raise ConfigError(f"--total-timesteps {run.total_timesteps} != --continual.num-tasks x "
                              f"--continual.task-timesteps = {budget}; drop --total-timesteps in a continual run")
        total = budget
    run = replace(run, algo=algo, env=env, total_timesteps=total or DEFAULT_TIMESTEPS)
    algo = registry.check_algo(run.algo)
    validate_env_id(run.env)
    for other in ALGOS:
        given = [f.name for f in fields(getattr(args, other)) if getattr(getattr(args, other), f.name) is not None]
        if other != algo and given:
            flag = f"--{other}.{given[0].replace('_', '-')}"
            raise ConfigError(f"{flag} applies to --algo {other}, not --algo {algo}; use --{algo}.* options")
    cm = registry.config_module(algo)
    if scenario is not None and algo != scenario.algo:
        raise ConfigError(f"preset {run.preset} is a {scenario.algo} scenario; drop --algo {algo} or pick another "
                          f"preset")
    preset = scenario.learner_preset if scenario else (run.preset or cm.default_preset(run.env))
    if preset not in cm.PRESETS:
        raise ConfigError(f"unknown {algo} preset '{preset}'; {algo} presets: {', '.join(cm.PRESETS)}; scenario "
                          f"presets: {', '.join(SCENARIOS)}")
    base = cm.PRESETS[preset]
    if scenario is not None:
        base = replace(base, **scenario.learner, net=replace(base.net, **scenario.net))
    cfg = _apply_overrides(base, getattr(args, algo))
    if run.num_envs is not None:
        own = getattr(args, algo).num_envs
        if own is not None and own != run.num_envs:
            raise ConfigError(f"--num-envs {run.num_envs} and --{algo}.num-envs {own} disagree; give one of them")
        cfg = replace(cfg, num_envs=run.num_envs)
    cfg = replace(cfg, net=_apply_overrides(cfg.net, args.net))
    validate_net(cfg.net)
    cm.validate(cfg)
    if run.num_seeds < 1:
        raise ConfigError(f"--num-seeds must be >= 1 (got {run.num_seeds})")
    if run.checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every must be >= 0 chunks (0 = only at the end) (got {run.checkpoint_every})")
    if run.checkpoint_keep < 1:
        raise ConfigError(f"--checkpoint-keep must be >= 1 (got {run.checkpoint_keep})")
    if run.on_divergence not in ("stop", "continue"):
        raise ConfigError(f"--on-divergence must be stop or continue (got {run.on_divergence!r})")
    if run.stop_after_chunks < 0:
        raise ConfigError(f"--stop-after-chunks must be >= 0 (got {run.stop_after_chunks})")
    if run.total_timesteps < 1:
        raise ConfigError(f"--total-timesteps must be positive (got {run.total_timesteps})")
    metrics = args.metrics
    preset_metrics = {**getattr(cm, "PRESET_METRICS", {}).get(preset, {}), **(scenario.metrics if scenario else {})}
    defaults = MetricsConfig()
    unset = {k: v for k, v in preset_metrics.items() if getattr(metrics, k) == getattr(defaults, k)}
    metrics = replace(metrics, **unset)
    validate_metrics(metrics)
    names = parse_list(run.interventions)
    opts = {n: getattr(args, REGISTRY[n][0]) for n in names}
    return RunConfig(run, cfg, metrics, tuple(names), opts, (), continual if continual.enabled else ContinualConfig(),
                     run.preset if scenario else None)


def validate_metrics(m: MetricsConfig) -> None:
    if m.every < 0:
        raise ConfigError(f"--metrics.every must be >= 0 updates (0 = off) (got {m.every})")
    if not 0.0 <= m.tau < 1.0:
        raise ConfigError(f"--metrics.tau must be in [0, 1) (got {m.tau})")
    if m.dormant_formula not in ("redo", "june"):
        raise ConfigError(f"--metrics.dormant-formula must be redo or june (got {m.dormant_formula})")
    if m.feature_variance_across not in ("features", "batch"):
        raise ConfigError(f"--metrics.feature-variance-across must be features or batch "
                          f"(got {m.feature_variance_across})")
    if m.cadence not in ("update", "minibatch"):
        raise ConfigError(f"--metrics.cadence must be update or minibatch (got {m.cadence})")


def validate_net(n: NetConfig) -> None:
    from plasticine_jax.nets.activations import _ACTIVATIONS
    from plasticine_jax.nets.initializers import INITS
    from plasticine_jax.nets.torsos import TORSOS

    if n.torso not in TORSOS:
        raise ConfigError(f"--net.torso must be one of {', '.join(TORSOS)} (got {n.torso})")
    if not n.widths or any(w < 1 for w in n.widths):
        raise ConfigError(f"--net.widths needs one or more positive layer widths, e.g. --net.widths 64 64 "
                          f"(got {n.widths})")
    if n.activation not in _ACTIVATIONS:
        raise ConfigError(f"--net.activation must be one of {', '.join(_ACTIVATIONS)} (got {n.activation})")
    for k in ("init", "head_init"):
        if getattr(n, k) not in INITS:
            raise ConfigError(f"--net.{k.replace('_', '-')} must be one of {', '.join(INITS)} (got {getattr(n, k)})")
    if n.ln_eps <= 0:
        raise ConfigError(f"--net.ln-eps must be > 0 (got {n.ln_eps})")
    if any(c < 1 for c in n.channels):
        raise ConfigError(f"--net.channels must be positive (got {n.channels})")
