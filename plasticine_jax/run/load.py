"""Load a finished (or interrupted) run back into Python: its learner and its checkpointed carry, typed as the
driver holds it, for analysis notebooks.

``load_final_state(run_dir)`` rebuilds the run's config from the command line recorded in its ``config.json``
(runs started by ``python -m plasticine_jax train``, or from Python with ``driver.run(cfg, argv)``), builds the
same learner, initialises a template carry for the run's seeds and sweep points and restores the latest
checkpoint into it (checksum verified). Runs started from Python without an argv are loaded by passing their
``RunConfig`` (``cfg=``). Every array in the carry has a leading run axis: runs are ``[(seed, point) for point
in sweep for seed in seeds]``, in the order of ``LoadedRun.labels`` (the same labels as metrics.jsonl's rows).

    learner, carry = load_final_state("runs/default")
    params = jax.tree.map(lambda x: x[0], carry.units["agent"].params)  # the first run's agent
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from plasticine_jax.config import RunConfig
from plasticine_jax.errors import ConfigError
from plasticine_jax.run import checkpoint as ckpt
from plasticine_jax.run.run_axis import over_runs

__all__ = ["LoadedRun", "checkpoint_steps", "config_from_argv", "load_final_state", "load_run", "run_config"]


@dataclass(frozen=True)
class LoadedRun:
    """A run directory loaded back: the learner, the carry at ``step`` (updates done) and what labels its runs."""

    learner: Any  # the ``Learner`` (ppo.PPO, pqn.PQN, ...) built from the run's config
    carry: Any  # the vmapped ``RunState`` restored from the checkpoint
    step: int  # updates done at the checkpoint
    position: ckpt.Position
    cfg: RunConfig
    labels: list[dict]  # per run (leading carry axis): {"seed": s, **swept hyperparameters}
    hparams: dict  # per run: the vmapped hyperparameters the run used ({name: [runs]})
    keys: jax.Array  # per run: the PRNG key it was initialised from (``learner.init(keys[i], hp_i)`` = its start)


def config_from_argv(argv: list[str]) -> RunConfig:
    """The ``RunConfig`` that ``python -m plasticine_jax train <argv>`` would run (parsed and validated)."""
    import tyro

    from plasticine_jax.config import TrainArgs, resolve_run

    return resolve_run(tyro.cli(TrainArgs, args=list(argv)))


def run_config(run_dir: str | Path) -> RunConfig:
    """The config of a run directory, rebuilt from the command line recorded in its config.json."""
    path = Path(run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{path} is missing or unreadable; give the --out directory of a run") from None
    if "argv" not in saved:
        raise ConfigError(f"{path} records no command line (the run was started from Python without argv); pass its "
                          f"RunConfig: load_final_state(run_dir, cfg=cfg)")
    return config_from_argv(saved["argv"])


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """Updates done at each checkpoint kept in the run directory, ascending."""
    directory = (Path(run_dir) / ckpt.DIRNAME).absolute()
    if not directory.is_dir():
        return []
    with ckpt._quiet():
        return sorted(ckpt._manager(directory, None, read_only=True).all_steps())


def _position(run_dir: Path, step: int) -> ckpt.Position:
    import orbax.checkpoint as ocp

    directory = (run_dir / ckpt.DIRNAME).absolute()
    with ckpt._quiet():
        raw = ckpt._manager(directory, None, read_only=True).restore(
            step, args=ocp.args.Composite(position=ocp.args.JsonRestore()))["position"]
    return ckpt.Position(**raw)


def load_run(run_dir: str | Path, step: int | None = None, cfg: RunConfig | None = None) -> LoadedRun:
    """Load the checkpoint at ``step`` (default: the latest) of ``run_dir`` into a typed carry. ``cfg``: the run's
    config when config.json records no command line (checked against the saved config's hash)."""
    from plasticine_jax.run.driver import build_learner, resolved_config_dict

    run_dir = Path(run_dir)
    cfg_given = cfg is not None
    cfg = cfg if cfg_given else run_config(run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise ConfigError(f"no checkpoint in {run_dir / ckpt.DIRNAME}")
    step = max(steps) if step is None else step
    if step not in steps:
        raise ConfigError(f"no checkpoint at update {step} in {run_dir / ckpt.DIRNAME}; kept: {steps}")
    position = _position(run_dir, step)
    if position.config_hash != ckpt.config_hash(saved):
        raise ConfigError(f"{run_dir / 'config.json'} was edited after its checkpoint at update {step} was written")
    learner = build_learner(cfg)
    seeds, sweep = list(saved["seeds"]), list(saved["sweep"])
    if cfg_given:  # a config passed in must resolve to the saved one (fields the driver adds itself aside)
        now = ckpt.config_view(resolved_config_dict(cfg, learner, seeds, sweep))
        diff = ckpt.first_difference(ckpt.config_view(saved), {**ckpt.config_view(saved), **now})
        if diff is not None:
            raise ConfigError(f"the config given differs from the run's config.json ({diff})")
    runs = [(s, p) for p in sweep for s in seeds]
    keys = jnp.stack([jax.random.PRNGKey(s) for s, _ in runs])
    hp = {k: jnp.asarray([p.get(k, v) for _, p in runs], jnp.float32) for k, v in learner.default_hparams().items()}
    template = jax.jit(over_runs(learner.init))(keys, hp)
    carry = ckpt.restore(run_dir, step, position, template, ckpt.is_host_env(cfg.run.env))
    labels = [{"seed": s, **p} for s, p in runs]
    return LoadedRun(learner, carry, step, position, cfg, labels, hp, keys)


def load_final_state(run_dir: str | Path, cfg: RunConfig | None = None) -> tuple[Any, Any]:
    """(learner, carry) of the run's latest checkpoint (its final state once the run finished)."""
    loaded = load_run(run_dir, cfg=cfg)
    return loaded.learner, loaded.carry
