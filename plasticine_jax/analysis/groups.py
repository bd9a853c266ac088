"""Which rows belong to which run and which compared group: the labels plots, statistics and TensorBoard share.

A **run** is one seed of one sweep point of one run directory. A **group** is what a figure compares, one line
per group: in a run directory the intervention label (``vanilla`` or ``redo,ln``) plus the sweep point
(``learning_rate=0.001``); in a sweep directory the cell name plus any in-cell sweep point. When a sweep's cells
differ in environment, the environment is the *task* axis of the aggregate statistics rather than part of the
group, so the group is then named by the cell's other axes. Swept columns are found from the data: the
non-metric columns whose value differs between rows of the same run directory, seed and update.
"""

from __future__ import annotations

import re

FIXED = ("seed", "step", "update", "task", "run_dir", "cell")


def is_metric(col: str) -> bool:
    """A logged quantity (``charts/...``, ``losses/...``, ``plasticity/...``), not a config column (config
    columns are dotted before any slash, e.g. ``continual.param/length``)."""
    return "/" in col and "." not in col.split("/", 1)[0]


def swept_columns(df) -> list[str]:
    """Columns that tell apart the vmapped sweep points of one run directory (``learning_rate``, ...)."""
    cand = [c for c in df.columns if c not in FIXED and not is_metric(c) and not c.startswith("axis.")]
    keyed = df.groupby(["run_dir", "seed", "update"], sort=False)
    return [c for c in cand if (keyed[c].nunique(dropna=False) > 1).any()]


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _join(r) -> str:
    """``k=v k=v`` of a row's values, leaving out keys this run does not have (NaN: swept in another cell); an
    ``interventions`` value is shown as its label (``vanilla``, ``redo,ln``)."""
    return " ".join(intervention_label(v) if k == "interventions" else f"{k}={_fmt(v)}"
                    for k, v in r.items() if not _missing(v))


def intervention_label(v) -> str:
    return str(v) if isinstance(v, str) and v else "vanilla"


def label_runs(df):
    """``df`` with added columns ``group`` (figure label), ``task_name`` (the environment), ``run`` (a unique
    run id) and ``run_name`` (a file-system-safe TensorBoard run name ``<env>__<group>__<seed>``); metric columns
    become floats (null -> NaN; a non-numeric value, should one be logged, -> NaN)."""
    import pandas as pd

    df = df.copy()
    for c in [c for c in df.columns if is_metric(c)]:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    swept = swept_columns(df)
    env = df["run.env"].astype(str) if "run.env" in df else "env"
    df["task_name"] = env
    many_envs = "run.env" in df and df["run.env"].nunique() > 1
    ivs = df["interventions"].map(intervention_label) if "interventions" in df else "vanilla"
    if "cell" in df and not many_envs:
        base = df["cell"].astype(str)
    elif "cell" in df:
        axes = [c for c in df.columns if c.startswith("axis.") and not c.lower().endswith("env")]
        base = df[axes].rename(columns=lambda c: c[5:]).apply(_join, axis=1) if axes \
            else ivs
    else:
        base = ivs
    extra = df[swept].apply(_join, axis=1) if swept else ""
    df["group"] = (base + " " + extra).str.strip() if swept else base
    df["run"] = df["run_dir"].astype(str) + "|" + df["group"] + "|" + df["task_name"] + "|" + df["seed"].astype(str)
    df["run_name"] = (df["task_name"] + "__" + df["group"] + "__" + df["seed"].astype(str)).map(safe_name)
    return df


def safe_name(s: str) -> str:
    """A path component: characters other than letters, digits and ``._=+,-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._=+,-]+", "_", s).strip("_") or "run"


__all__ = ["is_metric", "label_runs", "safe_name", "swept_columns"]
