"""``python -m plasticine_jax {train,bench} ...``: bad input exits non-zero with one clear line, no traceback."""

from __future__ import annotations

import sys

USAGE = """usage: python -m plasticine_jax {train,sweep,plot,presets,bench} [options]

  train   train a learner over vmapped seeds (python -m plasticine_jax train --help)
  sweep   run a grid of trainings from an experiment file, e.g. experiments/cpu/cartpole_interventions.toml;
          numeric hyperparameters vmapped, finished cells skipped, one tidy table (sweep --help)
  plot    PNG plots (returns, plasticity metrics, per-task, IQM with bootstrap CIs) of a run or sweep directory
  presets list the scenario presets (--preset NAME) and every learner's presets, one line each
  bench   throughput / compile-time / memory benchmark of every learner; runs the repository's
          experiments/bench.py, so only from a clone (python -m plasticine_jax bench --help)
"""


def _print_summary(result, cfg) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{cfg.run.algo} on {cfg.run.env} [{'+'.join(cfg.interventions) or 'vanilla'}]"))
    sweep_keys = sorted({k for p in result.sweep for k in p})
    for col in ["seed", *sweep_keys, "final return", "max return"]:
        table.add_column(col, justify="right")
    i = 0
    for p in result.sweep:
        for s in result.seeds:
            mine = [r["charts/episodic_return"] for r in result.rows
                    if r["seed"] == s and all(r.get(k) == v for k, v in p.items())]
            finite = [x for x in mine if x == x]
            best = max(finite) if finite else float("nan")
            table.add_row(str(s), *[f"{p[k]:g}" for k in sweep_keys], f"{result.final_returns[i]:.1f}", f"{best:.1f}")
            i += 1
    Console(stderr=False).print(table)
    from plasticine_jax.run.driver import divergence_label

    for d in result.diverged:
        print(f"diverged: {divergence_label(d)} at update {d['update']} (non-finite {d['quantity']}), "
              f"frozen from then on")
    if result.per_task:
        _print_tasks(result, sweep_keys)
    n_runs = len(result.seeds) * len(result.sweep)
    sps = result.env_steps * n_runs / max(result.wall_time, 1e-9)
    print(f"{n_runs} run(s) x {result.env_steps:,} steps in {result.wall_time:.1f}s "
          f"(+{result.compile_time:.1f}s compile): {sps:,.0f} env steps/s; outputs in {cfg.run.out}")


def _print_tasks(result, sweep_keys: list[str]) -> None:
    """Per-task results of a continual run: seed-mean return at the end of each task (and over it), and the
    continual - fresh gap when the run swept continual.fresh."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from plasticine_jax.run.driver import fresh_gaps

    table = Table(title="per task (mean over seeds): return at the end of the task / over the task")
    for col in [*sweep_keys, "task", "end return", "mean return"]:
        table.add_column(col, justify="right")
    groups: dict[tuple, list[dict]] = {}
    for r in result.per_task:
        groups.setdefault((*[r[k] for k in sweep_keys], r["task"]), []).append(r)
    for g, rs in groups.items():
        end = np.asarray([r["end_return"] for r in rs], float)
        mean = np.asarray([r["mean_return"] for r in rs], float)
        fmt = lambda x: f"{np.nanmean(x):.1f}" if np.isfinite(x).any() else "nan"
        table.add_row(*[f"{v:g}" for v in g[:-1]], str(g[-1]), fmt(end), fmt(mean))
    Console(stderr=False).print(table)
    gaps = fresh_gaps(result.per_task)
    if gaps:
        t2 = Table(title="plasticity: continual vs fresh network on each task (end return; gap < 0 = lost)")
        others = [k for k in gaps[0] if k not in ("task", "continual", "fresh", "gap")]
        for col in [*others, "task", "continual", "fresh", "gap"]:
            t2.add_column(col, justify="right")
        for r in gaps:
            t2.add_row(*[f"{r[k]:g}" for k in others], str(r["task"]), f"{r['continual']:.1f}", f"{r['fresh']:.1f}",
                       f"{r['gap']:+.1f}")
        Console(stderr=False).print(t2)


def train_main(argv: list[str]) -> int:
    import tyro

    from plasticine_jax.config import TrainArgs, resolve_run
    from plasticine_jax.errors import ConfigError

    args = tyro.cli(TrainArgs, args=argv, prog="python -m plasticine_jax train",
                    description="Train PPO (+ interventions) over vmapped seeds; writes config.json and "
                                "metrics.jsonl to --out.")
    from plasticine_jax.run.checkpoint import AlreadyFinished, RunStopped

    try:
        if args.run.resume:
            args = resume_args(args)
        if args.run.batch_invariant:  # before anything starts JAX's backend
            from plasticine_jax.run import batch_invariance

            batch_invariance.enable()
        from plasticine_jax.run import compile_cache

        compile_cache.enable(args.run.compile_cache)  # before this process's first compile: jax decides once
        cfg = resolve_run(args)
        from plasticine_jax.run.driver import run

        result = run(cfg, argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (AlreadyFinished, RunStopped) as e:
        print(e)
        return 0
    _print_summary(result, cfg)
    return 0


def resume_args(args):
    """``train --resume <out>``: the run's own arguments, rebuilt from the argv recorded in its config.json, with
    this command's process options (--stop-after-chunks, --no-progress, --devices, --compile-cache). When the
    command gives config flags too they are used as given; the driver then refuses them unless they resolve to
    the saved config."""
    import json
    from dataclasses import replace
    from pathlib import Path

    import tyro

    from plasticine_jax.config import RunOptions, TrainArgs
    from plasticine_jax.errors import ConfigError

    run = args.run
    out = run.resume
    if run.out not in (RunOptions().out, out) and Path(run.out).absolute() != Path(out).absolute():
        raise ConfigError(f"--out {run.out} differs from --resume {out}; a resumed run writes into its own directory")
    control = {"resume": out, "out": out, "stop_after_chunks": run.stop_after_chunks, "progress": run.progress}
    for name in ("devices", "compile_cache"):
        if getattr(run, name) != getattr(RunOptions(), name):
            control[name] = getattr(run, name)
    bare = replace(args, run=replace(run, resume=None, out=RunOptions().out, stop_after_chunks=0, progress=True,
                                     devices=RunOptions().devices, compile_cache=RunOptions().compile_cache))
    if bare == TrainArgs():  # only --resume (and process options): the saved command line
        try:
            saved = json.loads((Path(out) / "config.json").read_text())
        except (OSError, ValueError):
            raise ConfigError(f"--resume: {Path(out) / 'config.json'} is missing or unreadable; --resume takes the "
                              f"--out directory of a run started by python -m plasticine_jax train") from None
        if "argv" not in saved:
            raise ConfigError(f"--resume: {Path(out) / 'config.json'} records no command line (the run was started "
                              f"from Python); resume it from Python with run(cfg) and cfg.run.resume set")
        args = tyro.cli(TrainArgs, args=saved["argv"])
    return replace(args, run=replace(args.run, **control))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        return train_main(rest)
    if cmd == "sweep":
        from plasticine_jax.run.sweep import main as sweep_main

        return sweep_main(rest)
    if cmd == "plot":
        from plasticine_jax.analysis.plot_cli import main as plot_main

        return plot_main(rest)
    if cmd == "presets":
        from plasticine_jax.presets import describe_all

        print(describe_all())
        return 0
    if cmd == "bench":  # the benchmark is the repository's experiments/bench.py, not part of the package
        import importlib.util
        from pathlib import Path

        import plasticine_jax

        path = Path(plasticine_jax.__file__).resolve().parents[1] / "experiments" / "bench.py"
        if not path.is_file():
            print("error: the benchmark lives in the repository's experiments/bench.py; run it from a clone "
                  "(python experiments/bench.py)", file=sys.stderr)
            return 2
        spec = importlib.util.spec_from_file_location("plasticine_bench", path)
        bench = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = bench
        spec.loader.exec_module(bench)
        return bench.main(rest)
    print(f"error: unknown command '{cmd}'; use train, sweep, plot, presets or bench", file=sys.stderr)
    return 2
