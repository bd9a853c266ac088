"""A CPU-scale continual study: does PPO lose plasticity across a sequence of MinAtar games, and what do
interventions do about it?

Scenario: the ``cpu-continual-minatar`` preset (PPO with 64-64 MLP towers on SpaceInvaders -> Asterix -> Seaquest
-> Breakout -> Freeway, 400k steps per game per seed, one compiled run per configuration, the game switched by
``lax.switch`` inside it). Configurations, each with ``--seeds`` vmapped seeds:

* ``vanilla`` and the **fresh-network baseline** in one compile (``--sweep continual.fresh=0,1``: the same run,
  but the whole learner re-initialised at every switch), so per task we can read "continual vs fresh";
* ``redo``  ReDo every 10 updates (tau 0.025, the paper's recycling);
* ``snp``   shrink-and-perturb at every task switch (lambda 0.8 toward a fresh init; Ash & Adams' warm-start
            setting);
* ``ln``    LayerNorm before every hidden activation.

Outputs (``--out``, default ``experiments/results/continual_study``): ``results.md`` (the per-task table: the
seed-mean return at the end of each task with its standard error, the mean over tasks, and each configuration's
gap to the fresh network), ``continual_study.png`` (per-task returns; return, dormant ratio, stable rank and weight
magnitude over training with task boundaries), ``study.json`` (every figure), and each run's own directory
(config.json, metrics.jsonl, summary.json). The wall time is printed and recorded.

    python experiments/continual_study.py          # the study (18 min on a 2-core AMD EPYC, ~41 on an Intel Xeon)
    python experiments/continual_study.py --quick  # smoke: 2 seeds, 5 x 8k steps
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

PRESET = "cpu-continual-minatar"
CONFIGS: dict[str, list[str]] = {
    "vanilla": ["--sweep", "continual.fresh=0,1"],
    "redo": ["--interventions", "redo"],
    "snp": ["--interventions", "snp", "--snp.mode", "hard", "--snp.frequency", "0", "--snp.on-task-switch",
            "--snp.coef", "0.8"],
    "ln": ["--interventions", "ln"],
}
METRICS = {"return": "charts/episodic_return", "dormant ratio (actor)": "plasticity/dormant_ratio",
           "stable rank (actor)": "plasticity/stable_rank", "weight magnitude": "plasticity/weight_magnitude",
           "policy entropy": "plasticity/policy_entropy"}


def run_config(name: str, extra: list[str], out: Path, seeds: int, task_timesteps: int | None,
               log_every: int) -> float:
    """Train one configuration through the CLI entry point; returns its wall time in seconds."""
    from plasticine_jax.cli import main

    args = ["train", "--preset", PRESET, "--num-seeds", str(seeds), "--out", str(out / name), "--overwrite",
            "--no-wandb", "--no-progress", "--log-every", str(log_every), *extra]
    if task_timesteps:
        args += ["--continual.task-timesteps", str(task_timesteps)]
    t0 = time.time()
    rc = main(args)
    if rc != 0:
        raise SystemExit(f"configuration {name} failed (exit {rc})")
    return time.time() - t0


def load(out: Path, name: str) -> tuple[list[dict], dict, dict]:
    d = out / name
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows, json.loads((d / "summary.json").read_text()), json.loads((d / "config.json").read_text())


def _mean_se(x) -> tuple[float, float]:
    x = np.asarray([v for v in x if v is not None and np.isfinite(v)], float)
    if not x.size:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0


def per_task_table(out: Path, names: list[str]) -> dict[str, dict]:
    """{config: {"tasks": [(mean, se) for task 0..num_tasks-1], "games": [...]}} (NaN for a task without a
    logged finished episode); the vanilla run yields 'vanilla' and 'fresh'."""
    table = {}
    for name in names:
        _, summary, cfg = load(out, name)
        games = cfg["continual"].get("game", [])
        ntask = cfg["continual"]["num_tasks"]
        groups = {"vanilla": 0.0, "fresh": 1.0} if name == "vanilla" else {name: None}
        for label, fresh in groups.items():
            rows = [r for r in summary["per_task"] if fresh is None or r.get("continual.fresh") == fresh]
            table[label] = {"tasks": [_mean_se([r["end_return"] for r in rows if r["task"] == t])
                                      for t in range(ntask)], "games": games}
    return table


def curves(out: Path, names: list[str]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{config: {metric: (steps, seed-mean values)}} (vanilla split into vanilla and fresh)."""
    res = {}
    for name in names:
        rows, _, _ = load(out, name)
        groups = {"vanilla": 0.0, "fresh": 1.0} if name == "vanilla" else {name: None}
        for label, fresh in groups.items():
            mine = [r for r in rows if fresh is None or r.get("continual.fresh") == fresh]
            steps = np.asarray(sorted({r["step"] for r in mine}))
            res[label] = {}
            for title, key in METRICS.items():
                vals = []
                for s in steps:
                    v = np.asarray([r.get(key) for r in mine if r["step"] == s], float)
                    v = v[np.isfinite(v)]
                    vals.append(v.mean() if v.size else np.nan)
                res[label][title] = (steps, np.asarray(vals))
    return res


def markdown(table: dict[str, dict], wall: float, seeds: int, task_timesteps: int) -> str:
    labels = list(table)
    games = table[labels[0]]["games"]
    ntask = len(table[labels[0]]["tasks"])
    head = [f"task {t}" + (f" ({games[t].replace('-MinAtar', '')})" if t < len(games) else "") for t in range(ntask)]
    lines = [f"Return at the end of each task (mean over {seeds} seeds +- standard error; {task_timesteps:,} steps "
             f"per task per seed; study wall time {wall / 60:.1f} min on this machine).", "",
             "| config | " + " | ".join(head) + " | mean over tasks | mean gap to fresh (tasks 1+) |",
             "|---" * (ntask + 3) + "|"]
    fresh = [m for m, _ in table["fresh"]["tasks"]] if "fresh" in table else None
    for label in labels:
        cells = [f"{m:.2f} +- {se:.2f}" for m, se in table[label]["tasks"]]
        means = [m for m, _ in table[label]["tasks"]]
        diff = np.asarray(means[1:]) - np.asarray(fresh[1:]) if fresh and label != "fresh" else np.asarray([np.nan])
        gap = diff[np.isfinite(diff)].mean() if np.isfinite(diff).any() else np.nan
        finite = [m for m in means if np.isfinite(m)]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {np.mean(finite) if finite else np.nan:.2f} | "
                     + ("" if np.isnan(gap) else f"{gap:+.2f}") + " |")
    return "\n".join(lines) + "\n"


def plot(table: dict, curve: dict, task_steps: int, ntask: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = 3
    nrow = -(-(1 + len(METRICS)) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.5 * ncol, 4 * nrow))
    axes = axes.ravel()
    for ax in axes[1 + len(METRICS):]:
        ax.axis("off")
    labels = list(table)
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        m = np.asarray([x for x, _ in table[label]["tasks"]])
        se = np.asarray([x for _, x in table[label]["tasks"]])
        axes[0].bar(np.arange(len(m)) + i * width, m, width, yerr=se, label=label)
    games = table[labels[0]]["games"]
    axes[0].set_xticks(np.arange(ntask) + 0.4 - width / 2,
                       [g.replace("-MinAtar", "") for g in games] if games else range(ntask), rotation=20)
    axes[0].set_title("return at the end of each task")
    axes[0].legend(fontsize=8)
    for ax, title in zip(axes[1:1 + len(METRICS)], METRICS, strict=True):
        for label in labels:
            steps, vals = curve[label][title]
            keep = np.isfinite(vals)  # heavy metrics exist every metrics.every updates, returns when episodes end
            ax.plot(steps[keep], vals[keep], label=label, lw=1.2)
        for t in range(1, ntask):
            ax.axvline(t * task_steps, color="grey", lw=0.6, ls="--")
        ax.set_title(title)
        ax.set_xlabel("env steps per seed")
    fig.suptitle(f"{PRESET}: continual PPO vs interventions vs a fresh network per task")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="experiments/results/continual_study")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--task-timesteps", type=int, default=0, help="override the preset's 400k steps per task")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma list of " + ", ".join(CONFIGS))
    ap.add_argument("--report", action="store_true", help="only rebuild the table and plot from --out")
    ap.add_argument("--log-every", type=int, default=5, help="log a row every N updates")
    ap.add_argument("--quick", action="store_true", help="smoke: 2 seeds, 8k steps per task")
    a = ap.parse_args(argv)
    if a.quick:
        a.seeds, a.task_timesteps, a.log_every = 2, a.task_timesteps or 8000, 1
    names = [n.strip() for n in a.configs.split(",") if n.strip()]
    bad = [n for n in names if n not in CONFIGS]
    if bad:
        ap.error(f"unknown config {bad[0]}; choose from {', '.join(CONFIGS)}")
    if "vanilla" not in names:
        ap.error("the vanilla configuration (with the fresh baseline) is required")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    walls = {}
    if not a.report:
        t0 = time.time()
        for n in names:
            walls[n] = run_config(n, CONFIGS[n], out, a.seeds, a.task_timesteps or None, a.log_every)
            print(f"[study] {n}: {walls[n]:.0f} s", flush=True)
        walls["total"] = time.time() - t0
    else:
        walls = json.loads((out / "study.json").read_text())["wall_s"]
    cfg = load(out, "vanilla")[2]
    task_steps, ntask = cfg["continual"]["task_timesteps"], cfg["continual"]["num_tasks"]
    seeds = len(cfg["seeds"])
    table = per_task_table(out, names)
    curve = curves(out, names)
    md = markdown(table, walls["total"], seeds, task_steps)
    (out / "results.md").write_text(md)
    plot(table, curve, task_steps, ntask, out / "continual_study.png")
    (out / "study.json").write_text(json.dumps({
        "preset": PRESET, "configs": {n: CONFIGS[n] for n in names}, "seeds": seeds, "task_timesteps": task_steps,
        "wall_s": walls, "per_task": {k: v["tasks"] for k, v in table.items()},
        "curves": {k: {m: [c[0].tolist(), [None if not np.isfinite(x) else float(x) for x in c[1]]]
                       for m, c in v.items()} for k, v in curve.items()}}, indent=1))
    print(md)
    print(f"[study] wall time {walls['total'] / 60:.1f} min; outputs in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
