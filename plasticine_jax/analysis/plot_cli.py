"""``python -m plasticine_jax plot DIR``: PNG figures (and optionally TensorBoard event files) of a run or sweep
directory. Bad input is one ``error:`` line on stderr naming the problem and the fix, exit 2, nothing written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE = "python -m plasticine_jax plot"
INSTALL = 'pip install -e ".[plots]"'


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the usage block first)
        raise _Refused(f"{message} (see {USAGE} --help)")


class _Refused(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=USAGE, description="Figures of a run (train --out) or sweep directory: returns.png, "
                "metrics/<metric>.png, tasks.png (continual runs), aggregate.png and profile.png (rliable IQM, "
                "mean, median, optimality gap with stratified-bootstrap CIs; performance profiles).")
    p.add_argument("dir", help="a run directory (config.json + metrics.jsonl) or a sweep directory (sweep.json)")
    p.add_argument("--out", help="folder for the PNGs (default: DIR/plots)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files with the reference's tag names (default: DIR/tensorboard)")
    p.add_argument("--tensorboard-dir", help="folder for the event files (implies --tensorboard)")
    p.add_argument("--metric-names", nargs="+", metavar="NAME",
                   help="metrics to plot over time: names or globs (default: every plasticity/* metric logged)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for the intervals (default 2000)")
    return p


def _load(d: Path):
    from plasticine_jax.analysis.table import is_sweep_dir, load

    if not d.is_dir():
        raise _Refused(f"{d} does not exist or is not a directory; give the --out directory of "
                       f"python -m plasticine_jax train (or a sweep directory)")
    if not is_sweep_dir(d) and not (d / "config.json").is_file():
        raise _Refused(f"{d} is neither a run directory (no config.json) nor a sweep directory (no sweep.json); "
                       f"give the --out directory of python -m plasticine_jax train or of a sweep")
    try:
        df = load(d)
    except (OSError, ValueError, KeyError) as e:
        raise _Refused(f"{d} could not be read ({type(e).__name__}: {e}); check its config.json/sweep.json") from None
    if df.empty or "step" not in df:
        raise _Refused(f"{d} has no logged rows (empty or missing metrics.jsonl); plot a run that has logged "
                       f"at least one update")
    return df


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.reps < 1:
        raise _Refused(f"--reps must be >= 1, got {args.reps}")
    try:
        import matplotlib  # noqa: F401
        import rliable  # noqa: F401
        import scipy  # noqa: F401
        if args.tensorboard or args.tensorboard_dir:
            import tensorboardX  # noqa: F401
    except ImportError as e:
        raise _Refused(f"plot needs the plots extra ({e.name} is missing): {INSTALL}") from None

    from plasticine_jax.analysis import plots
    from plasticine_jax.analysis.groups import label_runs

    d = Path(args.dir)
    df = label_runs(_load(d))
    p = plots.plan(df, args.metric_names)
    if args.metric_names and not p.metrics:
        raise _Refused(f"--metric-names {' '.join(args.metric_names)} matches no logged metric; logged: "
                       f"{', '.join(plots.select_metrics(df, ['*'])[:12])}, ...")
    if not (p.returns or p.metrics):
        raise _Refused(f"{d} has no finished episode and no plasticity metric logged yet; nothing to plot")
    out = Path(args.out) if args.out else d / "plots"
    written, warnings = plots.write_plots(df, out, p, reps=args.reps)
    for w in warnings:
        print(w, file=sys.stderr)
    print(f"{len(written)} figure(s) in {out}")
    if args.tensorboard or args.tensorboard_dir:
        from plasticine_jax.analysis.tensorboard import write_events

        tb = Path(args.tensorboard_dir) if args.tensorboard_dir else d / "tensorboard"
        runs = write_events(df, tb)
        print(f"{len(runs)} TensorBoard run(s) in {tb} (tensorboard --logdir {tb})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``plot``; returns the exit status (0, or 2 with one ``error:`` line on stderr)."""
    try:
        return _run(sys.argv[1:] if argv is None else list(argv))
    except _Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
