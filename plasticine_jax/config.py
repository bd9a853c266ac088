"""Command-line configuration (tyro) and its resolution into validated, frozen run configs.

``TrainArgs`` is built from the dataclasses it exposes (PPO and network overrides, metric options, and
one option group per intervention named by its reference alias, e.g. ``--snp.coef``), so ``--help``
always lists every option with its default. ``resolve_run`` applies a preset, the overrides and the
intervention list, and raises ``ConfigError`` with one clear line on any bad value.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass, field, fields, make_dataclass, replace
from typing import Annotated, Any

import tyro

from plasticine_jax.algos.ppo_config import PRESETS, PPOConfig
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.registry import REGISTRY, canonical, options_class, parse_list
from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.nets import NetConfig

ALGOS = ("ppo",)


def _overrides_class(name: str, base: type, skip: tuple[str, ...] = ()) -> type:
    """A dataclass with every field of ``base`` optional (None = keep the preset's value)."""
    specs = []
    hints = typing.get_type_hints(base)
    for f in fields(base):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f"(preset value if unset; PPO default {default!r})"
        specs.append((f.name, Annotated[hints[f.name] | None, tyro.conf.arg(help=help_)], field(default=None)))
    return make_dataclass(name, specs, frozen=True)


PPOOverrides = _overrides_class("PPOOverrides", PPOConfig, skip=("net",))
NetOverrides = _overrides_class("NetOverrides", NetConfig, skip=("injection",))


@dataclass(frozen=True)
class RunOptions:
    """What to train and where to write it."""

    algo: str = "ppo"  # learner: ppo
    env: str = "gymnax:CartPole-v1"  # backend:id, e.g. gymnax:Breakout-MinAtar, craftax:Craftax-Classic-Symbolic-v1
    preset: str | None = None  # cartpole | minatar | continuous | procgen | craftax (default: chosen by env)
    num_seeds: int = 4  # independent seeds, vmapped in one compile
    seed: int = 0  # first seed; seeds are seed, seed+1, ...
    total_timesteps: int = 500_000  # env steps per seed
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


def _build_train_args() -> type:
    specs: list[tuple[str, Any, Any]] = [
        ("run", Annotated[RunOptions, tyro.conf.arg(name="")], field(default_factory=RunOptions)),
        ("ppo", PPOOverrides, field(default_factory=PPOOverrides)),
        ("net", NetOverrides, field(default_factory=NetOverrides)),
        ("metrics", MetricsConfig, field(default_factory=MetricsConfig)),
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
    ppo: PPOConfig
    metrics: MetricsConfig
    interventions: tuple[str, ...]
    intervention_options: dict[str, Any]
    sweep: tuple[dict[str, float], ...]  # one hparam override dict per grid point ({} when no sweep)


def default_preset(env: str) -> str:
    name = env.split(":", 1)[-1].lower()
    if env.startswith("craftax:"):
        return "craftax"
    if "minatar" in name:
        return "minatar"
    if any(k in name for k in ("pendulum", "continuous", "brax", "walker", "cheetah")):
        return "continuous"
    return "cartpole"


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
    if "." in key:
        iv, fld = key.split(".", 1)
        key = f"{canonical(iv)}.{fld}"
    if key not in valid:
        raise ConfigError(f"--sweep: '{key}' is not a vmappable hyperparameter of this run; "
                          f"choose from {', '.join(sorted(valid))}")
    return key


def resolve_run(args: Any) -> RunConfig:
    """Validate CLI args and produce a RunConfig (raises ConfigError with one clear line)."""
    run: RunOptions = args.run
    if run.algo not in ALGOS:
        raise ConfigError(f"unknown algorithm '{run.algo}'; available: {', '.join(ALGOS)}")
    from plasticine_jax.envs.registry import parse_env_id

    parse_env_id(run.env)
    preset = run.preset or default_preset(run.env)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; available: {', '.join(PRESETS)}")
    ppo = _apply_overrides(PRESETS[preset], args.ppo)
    ppo = replace(ppo, net=_apply_overrides(ppo.net, args.net))
    _validate_ppo(ppo)
    if run.num_seeds < 1:
        raise ConfigError(f"--num-seeds must be >= 1 (got {run.num_seeds})")
    if run.total_timesteps < 1:
        raise ConfigError(f"--total-timesteps must be positive (got {run.total_timesteps})")
    if args.metrics.dormant_formula not in ("redo", "june"):
        raise ConfigError(f"--metrics.dormant-formula must be redo or june (got {args.metrics.dormant_formula})")
    names = parse_list(run.interventions)
    opts = {n: getattr(args, REGISTRY[n][0]) for n in names}
    return RunConfig(run, ppo, args.metrics, tuple(names), opts, ())


def _validate_ppo(ppo: PPOConfig) -> None:
    positive = ("num_envs", "num_steps", "update_epochs", "num_minibatches")
    for k in positive:
        if getattr(ppo, k) < 1:
            raise ConfigError(f"--ppo.{k.replace('_', '-')} must be >= 1 (got {getattr(ppo, k)})")
    if not ppo.learning_rate > 0:
        raise ConfigError(f"--ppo.learning-rate must be > 0 (got {ppo.learning_rate})")
    if not 0 < ppo.gamma <= 1 or not 0 <= ppo.gae_lambda <= 1:
        raise ConfigError("--ppo.gamma must be in (0, 1] and --ppo.gae-lambda in [0, 1]")
    if (ppo.num_envs * ppo.num_steps) % ppo.num_minibatches:
        raise ConfigError(f"num_envs*num_steps={ppo.num_envs * ppo.num_steps} must be divisible by "
                          f"num_minibatches={ppo.num_minibatches}")
