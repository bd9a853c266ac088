"""PNG figures of a run or sweep directory (matplotlib, Agg backend: no display needed).

* ``returns.png``: episodic return against env steps, one line per group (see :mod:`.groups`): the mean over
  the group's runs (seeds) at each logged step, with a 95% Student-t confidence band across those runs
  (``scipy.stats.t.interval``; no band where fewer than two runs have a finished episode at that step).
* ``metrics/<name>.png``: each ``plasticity/*`` metric (or those ``metric_names`` selects) over env steps, same
  grouping and band; metrics never logged (all NaN) are skipped.
* ``tasks.png`` (continual runs): the return curves with the task boundaries as dotted vertical lines, and the
  per-task end return (mean of the last tenth of the task's finished-episode returns, as ``summary.json``'s
  ``per_task``) as bars per group with 95% t-intervals across runs.
* ``aggregate.png`` and ``profile.png``: rliable's median / IQM / mean / optimality gap of the normalised final
  scores with 95% stratified-bootstrap intervals, and the performance profiles (:mod:`.stats`). Written for a
  single group too (one row: the spread over its seeds).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plasticine_jax.analysis import stats
from plasticine_jax.analysis.groups import is_metric

RETURN = stats.RETURN


@dataclass
class Plan:
    """What :func:`write_plots` will draw, decided before anything is written."""

    returns: bool
    metrics: list[str]
    continual: bool
    aggregate: bool


def _finite_any(df, col: str) -> bool:
    return col in df and np.isfinite(df[col].to_numpy(float, na_value=np.nan)).any()


def select_metrics(df, patterns: list[str] | None = None) -> list[str]:
    """Metric columns to plot: every ``plasticity/*`` one with a logged value, or those matching ``patterns``
    (exact names or shell globs, e.g. ``plasticity/*dormant*`` or ``losses/value_loss``)."""
    cols = [c for c in df.columns if is_metric(c) and _finite_any(df, c)]
    if not patterns:
        return sorted(c for c in cols if c.startswith("plasticity/"))
    return sorted(c for c in cols if any(fnmatch.fnmatchcase(c, p) for p in patterns))


def is_continual(df) -> bool:
    tasks = int(df["continual.num_tasks"].max()) if "continual.num_tasks" in df else 0
    return tasks > 1 or ("task" in df and df["task"].nunique() > 1)


def plan(df, metric_names: list[str] | None = None) -> Plan:
    has_ret = _finite_any(df, RETURN)
    return Plan(bool(has_ret), select_metrics(df, metric_names), bool(has_ret and is_continual(df)), bool(has_ret))


def mean_band(wide) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows = steps, columns = runs: (steps, mean, low, high) over the finite entries of each row, the band a
    95% t-interval (equal to the mean where fewer than two runs have a value or they all agree)."""
    from scipy import stats as st

    x = wide.to_numpy(float)
    keep = np.isfinite(x).any(axis=1)
    x, steps = x[keep], wide.index.to_numpy()[keep]
    n = np.isfinite(x).sum(axis=1)
    mean = np.nanmean(x, axis=1)
    sem = np.zeros_like(mean)
    many = n > 1
    sem[many] = st.sem(x[many], axis=1, nan_policy="omit")
    lo, hi = mean.copy(), mean.copy()
    ok = many & (sem > 0)
    lo[ok], hi[ok] = st.t.interval(0.95, n[ok] - 1, loc=mean[ok], scale=sem[ok])
    return steps, mean, lo, hi


def _colors(groups: list[str]) -> dict[str, object]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
    return {g: cmap(i % cmap.N) for i, g in enumerate(groups)}


def _curves(ax, df, col: str, colors: dict) -> None:
    for g, sub in df.groupby("group", sort=False):
        wide = sub.pivot_table(index="step", columns="run", values=col, aggfunc="mean", dropna=False)
        steps, mean, lo, hi = mean_band(wide)
        if not len(steps):
            continue
        n = sub["run"].nunique()
        ax.plot(steps, mean, color=colors[g], label=f"{g} (n={n})", lw=1.5)
        ax.fill_between(steps, lo, hi, color=colors[g], alpha=0.2, lw=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel(col)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def _faceted(df, col: str, colors: dict, title: str):
    """One panel per environment (returns of different envs are not averaged together), three per row."""
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(df["task_name"]))
    ncol = min(3, len(envs))
    nrow = -(-len(envs) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(7.5 * ncol, 4.2 * nrow), squeeze=False)
    for ax, env in zip(axes.flat, envs, strict=False):
        _curves(ax, df[df["task_name"] == env], col, colors)
        ax.set_title(f"{title} ({env})" if len(envs) > 1 else title)
    for ax in list(axes.flat)[len(envs):]:
        ax.set_visible(False)
    return fig


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def metric_file(name: str) -> str:
    """``plasticity/critic/dormant_ratio`` -> ``critic_dormant_ratio.png``; other prefixes are kept."""
    return name.removeprefix("plasticity/").replace("/", "_") + ".png"


def task_boundaries(df) -> list[float]:
    """Env steps at which a new task starts (multiples of ``continual.task_timesteps``, else the first logged
    step of each task)."""
    num = int(df["continual.num_tasks"].max()) if "continual.num_tasks" in df else 0
    span = int(df["continual.task_timesteps"].max()) if "continual.task_timesteps" in df else 0
    if num > 1 and span > 0:
        return [k * span for k in range(1, num)]
    return sorted(df.groupby("task")["step"].min().iloc[1:].tolist())


def task_end_returns(df):
    """One row per (group, run, task): the task's end return, the mean of the last tenth (at least one) of its
    finished-episode returns (the rule of ``summary.json``'s ``per_task``)."""
    import pandas as pd

    out = []
    for (g, r, t), sub in df.sort_values("update").groupby(["group", "run", "task"], sort=False):
        out.append({"group": g, "run": r, "task": t,
                    "end_return": stats.end_return(sub[RETURN].to_numpy(float, na_value=np.nan))})
    return pd.DataFrame(out)


def _tasks_figure(df, colors: dict):
    import matplotlib.pyplot as plt
    from scipy import stats as st

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    _curves(ax, df, RETURN, colors)
    for b in task_boundaries(df):
        ax.axvline(b, color="k", ls=":", lw=0.8)
    ax.set_title("return across tasks (dotted: task switch)")
    ends = task_end_returns(df)
    groups = list(colors)
    tasks = sorted(ends["task"].unique())
    width = 0.8 / max(1, len(groups))
    for i, g in enumerate(groups):
        sub = ends[ends["group"] == g]
        means, errs = [], []
        for t in tasks:
            v = sub.loc[sub["task"] == t, "end_return"].to_numpy(float)
            v = v[np.isfinite(v)]
            means.append(v.mean() if v.size else np.nan)
            errs.append(st.sem(v) * st.t.ppf(0.975, v.size - 1) if v.size > 1 else 0.0)
        bx.bar(np.arange(len(tasks)) + (i - (len(groups) - 1) / 2) * width, means, width, yerr=errs,
               color=colors[g], label=g, capsize=2)
    bx.set_xticks(np.arange(len(tasks)), [str(t) for t in tasks])
    bx.set_xlabel("task")
    bx.set_ylabel("end-of-task return")
    bx.set_title("per-task end return (95% t-interval)")
    bx.grid(alpha=0.3, axis="y")
    return fig


def final_scores(df):
    """One row per run: its group, task (environment), seed and final score (:func:`stats.final_score`)."""
    import pandas as pd

    out = []
    for _, sub in df.sort_values("update").groupby("run", sort=False):
        first = sub.iloc[0]
        out.append({"group": first["group"], "task_name": first["task_name"], "seed": first["seed"],
                    "final": stats.final_score(sub[RETURN].to_numpy(float, na_value=np.nan))})
    return pd.DataFrame(out)


def _aggregate_figures(df, colors: dict, reps: int, out: Path) -> tuple[list[Path], list[tuple[str, object]]]:
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    ss = stats.score_matrix(final_scores(df))
    if not ss.scores:
        return [], ss.dropped
    norm = stats.normalize(ss.scores, ss.tasks)
    groups = [g for g in colors if g in norm]
    point, ci = stats.interval_estimates(norm, reps=reps)
    fig, _ = plot_utils.plot_interval_estimates(point, ci, list(stats.AGGREGATES), algorithms=groups,
                                                colors={g: colors[g] for g in groups},
                                                xlabel="normalised final score (per-task min-max)",
                                                xlabel_y_coordinate=min(-0.1, -1.2 / len(groups)), max_ticks=3)
    fig.subplots_adjust(wspace=0.25)  # rliable packs the panels so that end ticks of neighbours collide
    written = [_save(fig, out / "aggregate.png")]
    tau, prof, pci = stats.performance_profiles(norm, reps=reps)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    plot_utils.plot_performance_profiles({g: prof[g] for g in groups}, tau,
                                         performance_profile_cis={g: pci[g] for g in groups},
                                         colors={g: colors[g] for g in groups}, ax=ax,
                                         xlabel=r"normalised final score $\tau$")
    ax.legend([plt.Line2D([], [], color=colors[g]) for g in groups], groups, fontsize=7)
    written.append(_save(fig, out / "profile.png"))
    return written, ss.dropped


def write_plots(df, out: str | Path, p: Plan, reps: int = 2000) -> tuple[list[Path], list[str]]:
    """Draw what ``p`` says for the labelled table ``df`` (:func:`.groups.label_runs`) into ``out``. Returns
    the written paths and warning lines (runs left out of the aggregate statistics)."""
    import matplotlib

    matplotlib.use("Agg")

    out = Path(out)
    colors = _colors(list(dict.fromkeys(df["group"])))
    written, warnings = [], []
    if p.returns:
        fig = _faceted(df, RETURN, colors, "episodic return (mean over runs, 95% t-band)")
        written.append(_save(fig, out / "returns.png"))
    for m in p.metrics:
        written.append(_save(_faceted(df, m, colors, m), out / "metrics" / metric_file(m)))
    if p.continual:
        cdf, ccolors = df, colors
        if df["task_name"].nunique() > 1:  # one bar series per (group, env)
            cdf = df.assign(group=df["group"] + " [" + df["task_name"] + "]")
            ccolors = _colors(list(dict.fromkeys(cdf["group"])))
        written.append(_save(_tasks_figure(cdf, ccolors), out / "tasks.png"))
    if p.aggregate:
        paths, dropped = _aggregate_figures(df, colors, reps, out)
        written += paths
        if dropped:
            some = ", ".join(f"{g} seed {s}" for g, s in dropped[:4]) + (", ..." if len(dropped) > 4 else "")
            warnings.append(f"warning: {len(dropped)} run(s) left out of aggregate.png/profile.png: no finished "
                            f"episode in the last tenth of their logged rows ({some})")
    return written, warnings


__all__ = ["Plan", "final_scores", "mean_band", "metric_file", "plan", "select_metrics", "task_boundaries",
           "task_end_returns", "write_plots"]
