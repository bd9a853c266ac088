"""Aggregate statistics over runs with rliable: final scores per run, per-task min-max normalisation, IQM / mean /
median / optimality gap with stratified-bootstrap confidence intervals, and performance profiles.

No statistic is computed here by hand: point estimates, intervals and profiles are rliable's (Agarwal et al. 2021,
"Deep RL at the Edge of the Statistical Precipice"); this module only shapes the tidy table of
:mod:`plasticine_jax.analysis.table` into rliable's ``{group: scores[runs, tasks]}`` dictionaries.

* A run's **final score** is the mean episodic return over the last tenth of its logged rows (NaN rows, i.e.
  updates without a finished episode, ignored), the rule of ``summary.json``'s ``final_return``.
* A **task** is an environment (``run.env``); a **group** is what is compared (an intervention label, a sweep
  cell, a sweep point). A group's matrix has one row per seed and one column per task.
* **Normalisation** is per task, min-max: ``(x - low) / (high - low)``. By default ``low`` / ``high`` are the
  worst and best final scores observed for that task over every group and run, so 0 = the worst run seen and
  1 = the best; pass known random / maximum scores (``low={"gymnax:CartPole-v1": 9.0}``, ``high={...: 500.0}``)
  for scores comparable across studies. A task whose range is empty (all runs equal) maps to 1.0.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

AGGREGATES = ("Median", "IQM", "Mean", "Optimality Gap")
RETURN = "charts/episodic_return"


def final_score(returns: Sequence[float]) -> float:
    """Mean of the finite returns among the last tenth (at least one) of a run's logged rows, NaN if none."""
    tail = np.asarray(returns, float)[-max(1, len(returns) // 10):]
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if tail.size else float("nan")


def end_return(returns: Sequence[float]) -> float:
    """A continual task's end return: the mean of the last tenth (at least one) of its *finished-episode* returns
    (NaN rows dropped first, unlike ``final_score``), NaN if no episode finished; ``summary.json``'s ``per_task``."""
    ret = np.asarray(returns, float)
    ret = ret[np.isfinite(ret)]
    return float(ret[-max(1, len(ret) // 10):].mean()) if ret.size else float("nan")


@dataclass
class ScoreSet:
    """Final scores as rliable wants them: ``scores[group]`` is [runs, tasks] (raw returns), ``tasks`` the
    column names, ``dropped`` the (group, seed) runs left out because a task had no finished episode at the end."""

    scores: dict[str, np.ndarray]
    tasks: list[str]
    dropped: list[tuple[str, object]] = field(default_factory=list)


def score_matrix(finals, group_col: str = "group", task_col: str = "task_name", run_col: str = "seed",
                 value_col: str = "final") -> ScoreSet:
    """A table of final scores (one row per run and task) as a :class:`ScoreSet`. Runs are matched across
    tasks by ``run_col``; a run missing or NaN on any task is dropped from its group (and reported)."""
    tasks = sorted(finals[task_col].unique(), key=str)
    scores, dropped = {}, []
    for g, sub in finals.groupby(group_col, sort=False):
        m = sub.pivot_table(index=run_col, columns=task_col, values=value_col, aggfunc="first", dropna=False)
        m = m.reindex(columns=tasks)
        bad = ~np.isfinite(m.to_numpy(float)).all(axis=1)
        dropped += [(str(g), s) for s in m.index[bad]]
        if (~bad).any():
            scores[str(g)] = m.to_numpy(float)[~bad]
    return ScoreSet(scores, [str(t) for t in tasks], dropped)


def normalize(scores: Mapping[str, np.ndarray], tasks: Sequence[str], low: Mapping[str, float] | None = None,
              high: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
    """Per-task min-max normalisation (see the module docstring); ``low``/``high`` override the observed
    worst/best score of the tasks they name."""
    allx = np.concatenate([s for s in scores.values()], axis=0)
    lo = np.array([(low or {}).get(t, allx[:, i].min()) for i, t in enumerate(tasks)], float)
    hi = np.array([(high or {}).get(t, allx[:, i].max()) for i, t in enumerate(tasks)], float)
    span = hi - lo
    flat = span == 0
    out = {}
    for g, s in scores.items():
        n = (s - lo) / np.where(flat, 1.0, span)
        out[g] = np.where(flat, 1.0, n)
    return out


def _aggregates(x: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_median(x), metrics.aggregate_iqm(x), metrics.aggregate_mean(x),
                     metrics.aggregate_optimality_gap(x)])


def interval_estimates(scores: Mapping[str, np.ndarray], reps: int = 2000, seed: int = 0,
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's point estimates ``{group: [median, iqm, mean, optimality gap]}`` and 95% stratified-bootstrap
    percentile intervals ``{group: [[lows], [highs]]}`` (``reps`` resamples, seeded)."""
    from rliable import library as rly

    with warnings.catch_warnings():  # arch's notice that random_state= is deprecated in favour of generator=
        warnings.simplefilter("ignore", FutureWarning)
        return rly.get_interval_estimates(dict(scores), _aggregates, reps=reps,
                                          random_state=np.random.RandomState(seed))


def performance_profiles(scores: Mapping[str, np.ndarray], tau: np.ndarray | None = None, reps: int = 2000,
                         ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Score distributions (fraction of runs with normalised score > tau) with stratified-bootstrap 95% bands:
    ``(tau, profiles, cis)`` from rliable's ``create_performance_profile``."""
    from rliable import library as rly

    tau = np.linspace(0.0, 1.0, 41) if tau is None else np.asarray(tau, float)
    profiles, cis = rly.create_performance_profile(dict(scores), tau, reps=reps)
    return tau, profiles, cis


__all__ = ["AGGREGATES", "ScoreSet", "end_return", "final_score", "interval_estimates", "normalize",
           "performance_profiles", "score_matrix"]
