"""``python -m plasticine_jax {train,bench} ...``: bad input exits non-zero with one clear line, no traceback."""

from __future__ import annotations

import sys

USAGE = """usage: python -m plasticine_jax {train,bench} [options]

  train   train a learner over vmapped seeds (python -m plasticine_jax train --help)
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
    n_runs = len(result.seeds) * len(result.sweep)
    sps = result.env_steps * n_runs / max(result.wall_time, 1e-9)
    print(f"{n_runs} run(s) x {result.env_steps:,} steps in {result.wall_time:.1f}s "
          f"(+{result.compile_time:.1f}s compile): {sps:,.0f} env steps/s; outputs in {cfg.run.out}")


def train_main(argv: list[str]) -> int:
    import tyro

    from plasticine_jax.config import TrainArgs, resolve_run
    from plasticine_jax.errors import ConfigError

    args = tyro.cli(TrainArgs, args=argv, prog="python -m plasticine_jax train",
                    description="Train PPO (+ interventions) over vmapped seeds; writes config.json and "
                                "metrics.jsonl to --out.")
    try:
        cfg = resolve_run(args)
        from plasticine_jax.run.driver import run

        result = run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    _print_summary(result, cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        return train_main(rest)
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
    print(f"error: unknown command '{cmd}'; use train or bench", file=sys.stderr)
    return 2
