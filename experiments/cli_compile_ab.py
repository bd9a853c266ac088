"""What a CLI run waits before its first update: the driver's programs built as before 2026-12-02 (init compiled
and run, then one chunk program per chunk length: a second whole-update compile whenever the run does not divide
into chunks) vs now (``run.driver.compile_programs``: one chunk program with a traced update count, which the last,
shorter chunk reuses). Built in ONE process, ``--rounds`` times in alternation (caches cleared before each
build), best kept; then both chunk programs are called alternately on the fresh carry (best of ``--rounds``), so
the machine's drift hits both alike. Runs are the README's command-line examples at 1 seed, configured as the CLI
configures them (presets, chunking, metrics).

    python experiments/cli_compile_ab.py
    python experiments/cli_compile_ab.py --runs ppo-cartpole --rounds 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # parity.py: best_alternating

RUNS = {  # name: CLI arguments (the README's examples)
    "ppo-cartpole": ["--algo", "ppo", "--env", "gymnax:CartPole-v1", "--total-timesteps", "500000"],
    "ppo-cleanrl-cartpole": ["--algo", "ppo", "--env", "gymnax:CartPole-v1", "--preset", "cleanrl-cartpole",
                             "--total-timesteps", "500000"],
    "pqn-cartpole": ["--algo", "pqn", "--env", "gymnax:CartPole-v1", "--total-timesteps", "200000"],
    "c51-cartpole": ["--algo", "c51", "--env", "gymnax:CartPole-v1", "--total-timesteps", "50000"],
    "td3-pendulum": ["--algo", "td3", "--env", "gymnax:Pendulum-v1", "--total-timesteps", "20000"],
    "sac-pendulum": ["--algo", "sac", "--env", "gymnax:Pendulum-v1", "--total-timesteps", "15000"],
}


def one_seed_run(name: str) -> tuple[object, object, object, dict]:
    """(resolved config, learner, keys [1, 2], hyperparameters [1]) of the command-line example ``name`` at 1 seed,
    configured as the CLI configures it (presets, chunking, metrics)."""
    import jax
    import jax.numpy as jnp
    import tyro

    from plasticine_jax.config import TrainArgs, resolve_run
    from plasticine_jax.run.driver import build_learner

    cfg = resolve_run(tyro.cli(TrainArgs, args=[*RUNS[name], "--num-seeds", "1"]))
    learner = build_learner(cfg)
    hp = {k: jnp.full((1,), v, jnp.float32) for k, v in learner.default_hparams().items()}
    return cfg, learner, jax.random.PRNGKey(0)[None], hp


def build_before(learner, keys, hp, chunk: int) -> tuple[object, float]:
    """The former driver: init compiled and run, then ``run_updates`` compiled for each chunk length."""
    import jax

    from plasticine_jax.run.run_axis import over_runs

    jax.clear_caches()
    t0 = time.perf_counter()
    fresh = jax.block_until_ready(jax.jit(over_runs(learner.init)).lower(keys, hp).compile()(keys, hp))
    vstep = over_runs(learner.run_updates, in_axes=(0, None, None))
    lengths = [chunk] + ([learner.num_updates % chunk] if learner.num_updates % chunk else [])
    progs = [jax.jit(lambda c, s, n=n: vstep(c, s, n)).lower(fresh, 0).compile() for n in lengths]
    return (progs[0], fresh), time.perf_counter() - t0


def build_now(learner, keys, hp, chunk: int) -> tuple[object, float]:
    import jax

    from plasticine_jax.run.driver import compile_programs

    jax.clear_caches()
    t0 = time.perf_counter()
    fresh, run_chunk = compile_programs(learner, None, keys, hp, chunk)
    jax.block_until_ready(fresh)
    return (run_chunk, fresh), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma list from {','.join(RUNS)}")
    p.add_argument("--rounds", type=int, default=3, help="alternating builds and timed calls per variant (best kept)")
    args = p.parse_args(argv)

    import jax
    import parity

    from plasticine_jax.run.driver import chunk_updates, log_every

    jax.config.update("jax_enable_compilation_cache", False)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs, rounds {args.rounds}")
    print(f"{'run':<22} {'updates':>7} {'chunk':>6} {'compile s before':>17} {'now':>6} {'ratio':>6}"
          f" {'chunk call now/before':>22}")
    for name in args.runs.split(","):
        cfg, learner, keys, hp = one_seed_run(name)
        chunk = chunk_updates(learner.num_updates, log_every(cfg), cfg.run.chunk_updates)
        best = {"before": float("inf"), "now": float("inf")}
        progs = {}
        for _ in range(max(1, args.rounds)):
            for v, build in (("before", build_before), ("now", build_now)):
                progs[v], t = build(learner, keys, hp, chunk)
                best[v] = min(best[v], t)
        calls = {"before": (progs["before"][0], progs["before"][1], 0),
                 "now": (progs["now"][0], progs["now"][1], 0, chunk)}  # a whole chunk from the fresh carry
        for fn, *call_args in calls.values():
            jax.block_until_ready(fn(*call_args))  # warm-up
        run = parity.best_alternating(calls, args.rounds)
        print(f"{name:<22} {learner.num_updates:>7} {chunk:>6} {best['before']:>17.2f} {best['now']:>6.2f}"
              f" {best['now'] / best['before']:>6.2f} {run['now'] / run['before']:>22.3f}", flush=True)
        del progs, calls
    return 0


if __name__ == "__main__":
    sys.exit(main())
