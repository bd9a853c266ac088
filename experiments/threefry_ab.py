"""A/B of jax's rolled vs our unrolled threefry lowering on XLA:CPU, interleaved in one process.

``plasticine_jax`` registers jax's unrolled threefry2x32 lowering for CPU (``plasticine_jax/threefry_cpu.py``).
Timing the two in separate processes on a shared 2-core machine drowns a 5-10 % effect in the +-20 % drift of
the machine, so this script compiles both programs of a workload in ONE process (``threefry_cpu.use_unrolled``
switches the registered lowering, the caches are cleared between the two compiles) and times them alternately,
``--rounds`` times each, keeping the best. Prints steps/s, the ratio and both compile times per
(workload, seeds); the workloads are ``experiments/parity.py``'s.

    python experiments/threefry_ab.py                          # all parity workloads, 1 and 16 seeds
    python experiments/threefry_ab.py --workloads ppo-cartpole --seeds 1,4 --rounds 8
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="ppo-cartpole,ppo-breakout,pqn-cartpole,pqn-breakout,td3-pendulum,"
                   "sac-pendulum", help="comma list of experiments/parity.py workloads")
    p.add_argument("--seeds", default="1,16", help="comma list of vmapped seed counts")
    p.add_argument("--rounds", type=int, default=5, help="alternating timed calls per variant (best kept)")
    args = p.parse_args(argv)

    import jax
    import parity

    from plasticine_jax import threefry_cpu

    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs, rounds {args.rounds}")
    print(f"{'workload':<14} {'seeds':>5} {'rolled steps/s':>15} {'unrolled steps/s':>17} {'ratio':>6}"
          f" {'compile s rolled / unrolled':>28}")
    variants = ("rolled", "unrolled")
    for name in args.workloads.split(","):
        w = parity.WORKLOADS[name]
        for seeds in (int(s) for s in args.seeds.split(",")):
            built = {}
            for variant in variants:
                if not threefry_cpu.use_unrolled(variant == "unrolled"):
                    print("error: this jax lacks the threefry lowering hooks; nothing to compare", file=sys.stderr)
                    return 1
                jax.clear_caches()
                built[variant] = parity.speed_program(w, seeds)
            best = parity.best_alternating({v: built[v][:2] for v in variants}, args.rounds)
            sps = {v: built[v][2] / best[v] for v in variants}
            print(f"{name:<14} {seeds:>5} {sps['rolled']:>15,.0f} {sps['unrolled']:>17,.0f}"
                  f" {sps['unrolled'] / sps['rolled']:>5.2f}x {built['rolled'][3]:>14.1f} / {built['unrolled'][3]:.1f}",
                  flush=True)
            del built
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
