"""Runs and sweeps as one tidy table: a row per logged (run, update), a column per config field and metric.

A run directory (``train --out``) holds ``config.json`` and ``metrics.jsonl``; a sweep directory holds
``sweep.json`` and one run directory per cell under ``cells/``. Config fields become dotted columns
(``run.algo``, ``ppo.learning_rate``, ``intervention_options.shrink_perturb.coef``); the row's own keys (``seed``,
swept hyperparameters such as ``learning_rate``, ``step``, ``charts/episodic_return``, ``plasticity/...``) are
the values that run actually used and logged, so a swept hyperparameter's column is the row's, not the base
config's. pandas reads the result directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_SKIP = {"argv", "devices", "warnings", "hparams", "sweep", "seeds", "net_after_interventions", "run.out",
         "run.sweep", "run.resume", "run.progress", "run.overwrite", "run.stop_after_chunks", "run.track",
         "run.no_wandb", "run.wandb_project", "run.wandb_entity", "run.wandb_group", "run.seed", "run.num_seeds"}


def flatten_config(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """config.json as dotted scalar columns; lists become strings (``"64,64"``), bookkeeping fields dropped."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        if name in _SKIP:
            continue
        if isinstance(v, dict):
            out.update(flatten_config(v, f"{name}."))
        elif isinstance(v, list | tuple):
            out[name] = ",".join(str(x) for x in v)
        else:
            out[name] = v
    return out


def read_rows(run_dir: str | Path) -> list[dict]:
    """metrics.jsonl of a run as dicts (a torn last line from a killed run is dropped)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def run_table(run_dir: str | Path, extra: dict[str, Any] | None = None):
    """One run directory as a pandas DataFrame (config columns + every logged row). ``extra``: constant
    columns to add (a sweep adds its cell name and axes)."""
    import pandas as pd

    run_dir = Path(run_dir)
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        raise FileNotFoundError(f"{run_dir} is not a run directory (no readable config.json); give the --out "
                                f"directory of python -m plasticine_jax train or sweep") from None
    rows = read_rows(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    df = pd.DataFrame(rows)
    consts = {**flatten_config(cfg), **(extra or {}), "run_dir": str(run_dir)}
    for k, v in consts.items():
        if k not in df.columns:
            df[k] = [v] * len(df) if len(df) else pd.Series(dtype=object)
    return df


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / "sweep.json").is_file()


def sweep_table(sweep_dir: str | Path):
    """Every cell of a sweep directory (``sweep.json`` + ``cells/<name>/``), one DataFrame, with a ``cell``
    column and a column per non-vmapped sweep axis."""
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    spec = json.loads((sweep_dir / "sweep.json").read_text())
    frames = []
    for cell in spec["cells"]:
        d = sweep_dir / "cells" / cell["name"]
        if (d / "config.json").is_file():
            frames.append(run_table(d, {"cell": cell["name"], **{f"axis.{k}": v for k, v in cell["axes"].items()}}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load(path: str | Path):
    """A run or a sweep directory as one tidy DataFrame."""
    return sweep_table(path) if is_sweep_dir(path) else run_table(path)
