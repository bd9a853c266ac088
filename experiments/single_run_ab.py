"""A/B of one run compiled through ``vmap`` (a batch of 1) vs unbatched (``run.run_axis.over_runs``), in one process.

The driver traces a single run without ``vmap``: ``jax.jit(jax.vmap(train))`` spends most of its trace and
lowering time batching the nested scans of the update loop. This script builds both programs of a workload at
1 seed in ONE process, ``--rounds`` times in alternation (caches cleared before each build), and reports the best
trace, lowering and XLA compile seconds of each; then it times both compiled programs alternately (best of
``--rounds`` calls) so the machine's drift hits both alike. Workloads are ``experiments/parity.py``'s.

    python experiments/single_run_ab.py                           # every parity workload
    python experiments/single_run_ab.py --workloads ppo-cartpole --rounds 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build(learner, keys, batched: bool) -> tuple[object, tuple[float, float, float]]:
    """(compiled program over ``keys`` [1, 2], (trace s, lower s, XLA compile s))."""
    import jax

    from plasticine_jax.run.run_axis import over_runs

    jax.clear_caches()
    fn = jax.vmap(learner.train) if batched else over_runs(learner.train)
    t0 = time.perf_counter()
    traced = jax.jit(fn).trace(keys)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    return compiled, (t1 - t0, t2 - t1, t3 - t2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="ppo-cartpole,ppo-breakout,pqn-cartpole,pqn-breakout,td3-pendulum,"
                   "sac-pendulum", help="comma list of experiments/parity.py workloads")
    p.add_argument("--rounds", type=int, default=3, help="alternating builds and timed calls per variant (best kept)")
    args = p.parse_args(argv)

    import jax
    import numpy as np
    import parity

    jax.config.update("jax_enable_compilation_cache", False)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs, rounds {args.rounds}")
    print(f"{'workload':<14} {'trace+lower+XLA s, vmap':>26} {'unbatched':>18} {'saved':>7}"
          f" {'steps/s vmap':>13} {'unbatched':>10} {'ratio':>6}")
    variants = {"vmap": True, "unbatched": False}
    for name in args.workloads.split(","):
        learner = parity.our_learner(parity.WORKLOADS[name], parity.WORKLOADS[name].speed_timesteps)
        keys = jax.random.split(jax.random.PRNGKey(0), 1)
        times = {v: [] for v in variants}
        compiled = {}
        for _ in range(max(1, args.rounds)):
            for v, batched in variants.items():
                compiled[v], t = build(learner, keys, batched)
                times[v].append(t)
        best = {v: np.min(np.asarray(t), axis=0) for v, t in times.items()}
        for c in compiled.values():
            jax.block_until_ready(c(keys))  # warm-up call
        run = parity.best_alternating({v: (compiled[v], keys) for v in variants}, args.rounds)
        steps = learner.num_updates * learner.env_steps_per_update
        fmt = {v: " + ".join(f"{x:.2f}" for x in best[v]) for v in variants}
        total = {v: float(best[v].sum()) for v in variants}
        print(f"{name:<14} {fmt['vmap']:>26} {fmt['unbatched']:>18} {total['vmap'] - total['unbatched']:>6.2f}s"
              f" {steps / run['vmap']:>13,.0f} {steps / run['unbatched']:>10,.0f}"
              f" {run['vmap'] / run['unbatched']:>5.2f}x", flush=True)
        del compiled
    return 0


if __name__ == "__main__":
    sys.exit(main())
