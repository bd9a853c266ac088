"""``python -m plasticine_jax sweep experiments/<file>.toml``: a grid of training runs from one experiment file.

An experiment file (TOML) has a ``[train]`` table of ``train`` flags shared by every cell (keys are the flags
without ``--``: ``algo``, ``env``, ``num-seeds``, ``ppo.learning-rate``, ``net.widths = [64, 64]``, ``no-wandb
= true``) and a ``[grid]`` table whose values are lists of values, one axis each; the grid is their cartesian
product. ``[[variants]]`` tables (optional) each give their own flags and grid, merged onto ``[train]``: a study
of "vanilla, ReDo with tau in {0.025, 0.1}, S&P" is three variants. See experiments/README.md.

Which axes share a compile: an axis whose key is a vmappable hyperparameter of the cell's learner (a numeric
``<algo>.<field>`` in the learner's hparams, an intervention's numeric option such as ``snp.coef``, or
``continual.fresh``) becomes ``--sweep key=v1,v2,...`` of one run, vmapped with the seeds; every other axis
(interventions, env, network shape, batch sizes, ...) gives separate cells, run one after another. An
intervention option axis in a cell without that intervention is dropped for that cell.

Each cell is an ordinary run directory ``<out>/cells/<name>/``; ``<out>/sweep.json`` lists the cells and their
command lines. Re-running the sweep skips finished cells, resumes a killed cell from its checkpoint and refuses
a cell directory that holds a different command line. After every cell the tidy table of all finished cells is
rewritten: ``<out>/results.parquet`` (or ``.csv``), a row per logged (run, update), a column per config field
and metric (``analysis.table``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plasticine_jax.errors import ConfigError

_TOP_KEYS = {"description", "out", "train", "grid", "variants"}


@dataclass
class Cell:
    """One compiled run of the sweep: its name, its looped axis values, its vmapped axes and its train argv."""

    name: str
    axes: dict[str, Any]  # looped axis values of this cell (flag key -> value)
    vmapped: dict[str, list[float]]  # hyperparameter -> values, vmapped inside the run
    argv: list[str] = field(default_factory=list)  # the train command line (without --out)
    warnings: tuple[str, ...] = ()  # the learner's start-up warnings (e.g. a schedule that never fires)

    @property
    def num_runs(self) -> int:
        n = 1
        for v in self.vmapped.values():
            n *= len(v)
        return n


def read_experiment(path: str | Path) -> dict:
    """Parse and shape-check an experiment file (one-line ConfigError on anything wrong)."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except OSError:
        raise ConfigError(f"experiment file {path} not found; give a .toml file such as "
                          f"experiments/cpu/cartpole_interventions.toml") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"experiment file {path} is not valid TOML: {e}") from None
    unknown = set(spec) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}; an experiment file has "
                          f"{', '.join(sorted(_TOP_KEYS))}")
    for name in ("train", "grid"):
        if not isinstance(spec.get(name, {}), dict):
            raise ConfigError(f"{path}: [{name}] must be a table of flags")
    variants = spec.get("variants", [{}])
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants) or not variants:
        raise ConfigError(f"{path}: variants must be [[variants]] tables")
    for v in [spec, *variants]:
        for k, vals in v.get("grid", {}).items():
            if not isinstance(vals, list) or not vals:
                raise ConfigError(f"{path}: grid axis '{k}' must be a non-empty list of values, e.g. {k} = [1, 2]")
    return spec


def apply_sets(spec: dict, sets: list[str]) -> dict:
    """``--set num-seeds=2 total-timesteps=20000``: override [train] flags of every variant (CPU smoke runs)."""
    train = dict(spec.get("train", {}))
    for s in sets:
        if "=" not in s:
            raise ConfigError(f"bad --set '{s}': use flag=value, e.g. --set num-seeds=2")
        k, v = s.split("=", 1)
        try:
            train[k.strip()] = tomllib.loads(f"x = {v}")["x"]
        except tomllib.TOMLDecodeError:
            train[k.strip()] = v  # a bare string
        for variant in spec.get("variants", []):
            variant.pop(k.strip(), None)
            variant.get("grid", {}).pop(k.strip(), None)
        spec.get("grid", {}).pop(k.strip(), None)
    return {**spec, "train": train}


def flag_argv(flags: dict[str, Any]) -> list[str]:
    """``{"num-seeds": 4, "no-wandb": True, "net.widths": [64, 64]}`` -> train's argv."""
    argv: list[str] = []
    for k, v in flags.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            if v:
                argv.append(flag)
            else:
                head, _, tail = flag[2:].rpartition(".")
                argv.append(f"--{head + '.' if head else ''}no-{tail}")
        elif isinstance(v, list):
            argv += [flag, *[str(x) for x in v]]
        else:
            argv += [flag, str(v)]
    return argv


def _hparam_key(key: str, algo: str, hparams: dict[str, float]) -> str | None:
    """The vmappable hyperparameter an axis key names, or None (a looped axis)."""
    from plasticine_jax.interventions.registry import canonical

    k = key.replace("-", "_")
    if k in ("lr", "learning_rate", f"{algo}.lr"):
        k = f"{algo}.learning_rate"
    if k.startswith(f"{algo}."):
        k = k[len(algo) + 1:]
        return k if k in hparams else None
    if k.startswith("continual."):
        return k if k in hparams else None
    if "." in k:
        head, tail = k.split(".", 1)
        try:
            name = f"{canonical(head)}.{tail}"
        except ConfigError:
            return None
        return name if name in hparams else None
    return k if k in hparams else None


def _intervention_of(key: str) -> str | None:
    """The intervention whose option an axis key sets (``snp.coef`` -> shrink_perturb), else None."""
    from plasticine_jax.interventions.registry import canonical

    head = key.split(".", 1)[0] if "." in key else None
    if head is None:
        return None
    try:
        return canonical(head)
    except ConfigError:
        return None


def _cell_name(axes: dict[str, Any], variant: str | None) -> str:
    parts = [variant] if variant else []
    for k, v in axes.items():
        if k == "interventions":
            parts.append(str(v) or "vanilla")
        else:
            short = k.split(".")[-1]
            parts.append(f"{short}={','.join(map(str, v)) if isinstance(v, list) else v}")
    name = "__".join(parts) or "base"
    return re.sub(r"[^A-Za-z0-9._=+,-]", "-", name)


def expand(spec: dict, resolve: bool = True) -> list[Cell]:
    """The cells of an experiment (``resolve``: build each cell's config and learner to sort its axes into vmapped
    and looped, and to refuse bad flags before anything runs)."""
    from plasticine_jax.interventions.registry import parse_list

    cells: list[Cell] = []
    variants = spec.get("variants") or [{}]
    for vi, variant in enumerate(variants):
        vname = variant.get("name") if len(variants) > 1 else None
        if len(variants) > 1 and not vname:
            vname = f"v{vi}"
        flags = {**spec.get("train", {}), **{k: v for k, v in variant.items() if k not in ("grid", "name")}}
        grid = {**spec.get("grid", {}), **variant.get("grid", {})}
        numeric = {k: v for k, v in grid.items() if all(isinstance(x, int | float) and not isinstance(x, bool)
                                                           for x in v)}
        other = {k: v for k, v in grid.items() if k not in numeric}
        for combo in itertools.product(*other.values()) if other else [()]:
            looped = dict(zip(other, combo, strict=True))
            base = {**flags, **looped}
            ivs = set(parse_list(str(base.get("interventions", ""))))
            hparams, algo, warns = _cell_hparams(base) if resolve else ({}, str(base.get("algo", "ppo")), ())
            vmapped: dict[str, list[float]] = {}
            more: dict[str, list] = {}
            for k, vals in numeric.items():
                iv = _intervention_of(k)
                if iv is not None and iv not in ivs:
                    continue  # an option of an intervention this cell does not use
                hk = _hparam_key(k, algo, hparams) if resolve else None
                if hk is not None:
                    vmapped[hk] = [float(x) for x in vals]
                else:
                    more[k] = vals
            for combo2 in itertools.product(*more.values()) if more else [()]:
                extra = dict(zip(more, combo2, strict=True))
                axes = {**looped, **extra}
                argv = flag_argv({**flags, **axes})
                sweep = [f"{k}={','.join(repr(x) for x in v)}" for k, v in vmapped.items()]
                if "sweep" in flags:
                    raise ConfigError("an experiment file sweeps with [grid] axes, not a 'sweep' flag; move "
                                      "its values into [grid]")
                if sweep:
                    argv += ["--sweep", *sweep]
                cells.append(Cell(_cell_name(axes, vname), axes, vmapped, argv, tuple(warns)))
    names = [c.name for c in cells]
    for i, c in enumerate(cells):
        if names.count(c.name) > 1:
            c.name = f"{c.name}__{i}"
    return cells


def _cell_hparams(flags: dict[str, Any]) -> tuple[dict[str, float], str, list[str]]:
    """Resolve a cell's flags like ``train`` would (ConfigError on bad ones): its vmappable hparams, learner and
    start-up warnings."""
    from plasticine_jax.run.driver import build_learner
    from plasticine_jax.run.load import config_from_argv

    argv = flag_argv(flags)
    try:
        cfg = config_from_argv(argv)
    except SystemExit:  # tyro has printed what is wrong with the flags
        raise ConfigError(f"a cell's flags are not valid train flags: {' '.join(argv)} (see python -m "
                          f"plasticine_jax train --help)") from None
    learner = build_learner(cfg)
    return learner.default_hparams(), cfg.run.algo, list(learner.warnings)


def cell_state(cell_dir: Path, argv: list[str]) -> str:
    """``new`` (nothing there), ``finished``, ``partial`` (a checkpoint to resume from) or ``restart`` (started,
    no checkpoint yet); ConfigError when the directory holds another command line."""
    cfg_path = cell_dir / "config.json"
    if not cfg_path.is_file():
        if cell_dir.exists() and any(cell_dir.iterdir()):
            return "restart"
        return "new"
    try:
        saved = json.loads(cfg_path.read_text()).get("argv")
    except ValueError:
        return "restart"
    if saved is not None and _strip_out(saved) != _strip_out(argv):
        raise ConfigError(f"{cell_dir} holds a run of another command line ({' '.join(_strip_out(saved))}); the "
                          f"experiment file changed: use a new --out or pass --overwrite")
    if (cell_dir / "summary.json").is_file():
        return "finished"
    ckpts = cell_dir / "checkpoints"
    if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
        return "partial"
    return "restart"


def _strip_out(argv: list[str]) -> list[str]:
    """A train argv without the process-control flags a cell directory's saved argv may add or lack."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--out", "--stop-after-chunks", "--overwrite", "--no-progress", "--progress"):
            skip = a in ("--out", "--stop-after-chunks")
            continue
        out.append(a)
    return out


def write_table(out: Path, fmt: str) -> Path | None:
    """The tidy table of every cell that has rows (``analysis.table.sweep_table``), written atomically."""
    from plasticine_jax.analysis.table import sweep_table

    df = sweep_table(out)
    if df.empty:
        return None
    for col in df.columns:  # Parquet needs one type per column: config columns may mix str/None/numbers
        if df[col].dtype == object:
            df[col] = df[col].map(lambda x: None if x is None else str(x))
    path = out / f"results.{fmt}"
    tmp = out / f".results.{fmt}.{os.getpid()}.tmp"  # hosts sharing one --out never write the same tmp file
    if fmt == "parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def _batch_invariance(cells: list[Cell]) -> None:
    """``--batch-invariant`` is a setting of the whole process (XLA flags): every cell has it, or none."""
    flagged = {"--batch-invariant" in c.argv for c in cells}
    if flagged == {True}:
        from plasticine_jax.run import batch_invariance

        batch_invariance.enable()
    elif len(flagged) > 1:
        raise ConfigError("batch-invariant: set it for every cell of a sweep or for none (it sets XLA flags for the "
                          "whole process); put it under [train]")


def _compile_cache(cells: list[Cell]) -> None:
    """``--compile-cache`` is a setting of the whole process (jax's cache is chosen once): one value for every
    cell, applied before resolving the cells compiles anything."""
    from plasticine_jax.config import RunOptions
    from plasticine_jax.run import compile_cache

    values = {c.argv[c.argv.index("--compile-cache") + 1] if "--compile-cache" in c.argv
              else RunOptions().compile_cache for c in cells}
    if len(values) > 1:
        raise ConfigError("compile-cache: set it for every cell of a sweep or for none (jax chooses its cache once "
                          "per process); put it under [train]")
    compile_cache.enable(values.pop() if values else RunOptions().compile_cache)


def run_sweep(file: str, out: str | None = None, sets: list[str] | None = None, fmt: str = "parquet",
              dry_run: bool = False, overwrite: bool = False, only: list[str] | None = None) -> int:
    """Run (or continue) every cell of an experiment file; returns the exit code (0 = every cell finished)."""
    from plasticine_jax.cli import train_main

    spec = apply_sets(read_experiment(file), sets or [])
    out_dir = Path(out or spec.get("out") or f"runs/sweeps/{Path(file).stem}")
    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"--format must be parquet or csv (got {fmt})")
    unresolved = expand(spec, resolve=False)
    _batch_invariance(unresolved)  # before resolving the cells starts JAX's backend
    _compile_cache(unresolved)
    cells = all_cells = expand(spec)
    if only:
        missing = [n for n in only if n not in {c.name for c in cells}]
        if missing:
            raise ConfigError(f"--only: no cell named {missing[0]}; cells: {', '.join(c.name for c in cells)}")
        cells = [c for c in cells if c.name in only]
    states = {}
    for c in cells:  # every cell dir is checked before any is written
        d = out_dir / "cells" / c.name
        if overwrite and d.exists():
            states[c.name] = "overwrite"
        else:
            states[c.name] = cell_state(d, c.argv)
    runs = sum(c.num_runs for c in cells)
    print(f"{file}: {len(cells)} cell(s), {runs} vmapped run group(s) x seeds -> {out_dir}")
    for c in cells:
        vm = ", ".join(f"{k} x{len(v)}" for k, v in c.vmapped.items()) or "-"
        print(f"  {c.name}: {states[c.name]}; vmapped: {vm}")
        for w in c.warnings:
            print(f"    warning: {w}")
    if dry_run:
        for c in cells:
            print(f"python -m plasticine_jax train {' '.join(c.argv)} --out {out_dir / 'cells' / c.name}")
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    # every cell of the file, also under --only: hosts sharing one --out each run some cells, and the table and
    # plots read whichever cells have finished
    (out_dir / "sweep.json").write_text(json.dumps({
        "file": str(file), "experiment": spec,
        "cells": [{"name": c.name, "axes": c.axes, "vmapped": c.vmapped, "argv": c.argv} for c in all_cells],
    }, indent=2, default=str))
    failed, ran, table = [], False, None
    for i, c in enumerate(cells):
        d = out_dir / "cells" / c.name
        state = states[c.name]
        if state == "finished":
            print(f"[{i + 1}/{len(cells)}] {c.name}: finished, skipped")
            continue
        argv = list(c.argv)
        if state == "partial":
            argv = ["--resume", str(d)]
        else:
            argv += ["--out", str(d), "--overwrite"]
        print(f"[{i + 1}/{len(cells)}] {c.name}: {'resuming' if state == 'partial' else 'training'}", flush=True)
        t0 = time.time()
        code = train_main(argv)
        if code != 0 or not (d / "summary.json").is_file():
            failed.append(c.name)
            print(f"[{i + 1}/{len(cells)}] {c.name}: failed (exit {code})", file=sys.stderr)
        else:
            print(f"[{i + 1}/{len(cells)}] {c.name}: done in {time.time() - t0:.0f}s")
        ran, table = True, write_table(out_dir, fmt)  # after every cell: a killed sweep leaves a usable table
    if not ran:  # every cell was finished already (perhaps by other hosts): refresh the table once
        table = write_table(out_dir, fmt)
    if table is not None:
        print(f"table: {table} (pandas.read_{fmt}); plots: python -m plasticine_jax plot {out_dir}")
    if failed:
        print(f"error: {len(failed)} cell(s) failed: {', '.join(failed)}; fix and re-run the same command (finished "
              f"cells are skipped)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """``python -m plasticine_jax sweep FILE [--out DIR] [--set flag=value ...] [--format parquet|csv]
    [--only CELL ...] [--dry-run] [--overwrite]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m plasticine_jax sweep",
                                description="Run a grid of training runs from an experiment file (TOML).")
    p.add_argument("file", help="experiment file, e.g. experiments/cpu/cartpole_interventions.toml")
    p.add_argument("--out", help="sweep directory (default: the file's out, or runs/sweeps/<file stem>)")
    p.add_argument("--set", nargs="+", default=[], metavar="FLAG=VALUE",
                   help="override a [train] flag of every cell, e.g. --set num-seeds=2 total-timesteps=20000")
    p.add_argument("--format", default="parquet", choices=("parquet", "csv"), help="the tidy results table")
    p.add_argument("--only", nargs="+", metavar="CELL", help="run only these cells")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their train commands; run nothing")
    p.add_argument("--overwrite", action="store_true", help="retrain cells whose directories hold other runs")
    try:
        a = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return run_sweep(a.file, a.out, a.set, a.format, a.dry_run, a.overwrite, a.only)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
