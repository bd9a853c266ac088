"""A/B of the single-run program: through ``vmap`` (a batch of 1) vs unbatched (``run.run_axis.over_runs``), in one
process; for TD3 and SAC also unbatched with plain ``jax.random.split`` instead of ``algos.rng.split``.

The driver traces a single run without ``vmap``: ``jax.jit(jax.vmap(train))`` spends most of its trace and
lowering time batching the nested scans of the update loop. Unbatched, XLA copies more key hashes into their
consumers, which ``algos.rng.split`` prevents in the off-policy learners' chains of splits. This script builds the
programs of a workload at 1 seed in ONE process, ``--rounds`` times in alternation (caches cleared before each
build), and reports the best trace, lowering and XLA compile seconds of each; then it times the compiled programs
alternately (best of ``--rounds`` calls) so the machine's drift hits all alike. Workloads are
``experiments/parity.py``'s.

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


def build(learner, keys, batched: bool, split_once: bool = True) -> tuple[object, tuple[float, float, float]]:
    """(compiled program over ``keys`` [1, 2], (trace s, lower s, XLA compile s)); ``split_once=False`` builds it
    with ``algos.rng.split`` reduced to ``jax.random.split``."""
    import jax

    from plasticine_jax.algos import rng
    from plasticine_jax.run.run_axis import over_runs

    jax.clear_caches()
    once = rng.computed_once
    if not split_once:
        rng.computed_once = lambda x: x
    try:
        fn = jax.vmap(learner.train) if batched else over_runs(learner.train)
        t0 = time.perf_counter()
        traced = jax.jit(fn).trace(keys)
        t1 = time.perf_counter()
        lowered = traced.lower()
        t2 = time.perf_counter()
        compiled = lowered.compile()
        t3 = time.perf_counter()
    finally:
        rng.computed_once = once
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
    print(f"{'workload':<14} {'variant':<26} {'trace + lower + XLA s':>24} {'total':>6} {'steps/s':>9}"
          f" {'vs vmap':>8}")
    for name in args.workloads.split(","):
        w = parity.WORKLOADS[name]
        learner = parity.our_learner(w, w.speed_timesteps)
        keys = jax.random.split(jax.random.PRNGKey(0), 1)
        variants = {"vmap": (True, True), "unbatched": (False, True)}
        if w.algo in ("td3", "sac"):
            variants["unbatched, jax.random.split"] = (False, False)
        times = {v: [] for v in variants}
        compiled = {}
        for _ in range(max(1, args.rounds)):
            for v, (batched, once) in variants.items():
                compiled[v], t = build(learner, keys, batched, once)
                times[v].append(t)
        best = {v: np.min(np.asarray(t), axis=0) for v, t in times.items()}
        for c in compiled.values():
            jax.block_until_ready(c(keys))  # warm-up call
        run = parity.best_alternating({v: (compiled[v], keys) for v in variants}, args.rounds)
        steps = learner.num_updates * learner.env_steps_per_update
        for v in variants:
            parts = " + ".join(f"{x:.2f}" for x in best[v])
            print(f"{name:<14} {v:<26} {parts:>24} {best[v].sum():>6.2f} {steps / run[v]:>9,.0f}"
                  f" {run['vmap'] / run[v]:>7.2f}x", flush=True)
        del compiled
    return 0


if __name__ == "__main__":
    sys.exit(main())
