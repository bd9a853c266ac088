"""The minibatch shuffle's cost: ``jax.random.permutation`` against ``plasticine_jax.algos.shuffle.permutation``.

Two tables. (1) The shuffle alone, jit(vmap) over seeds, microseconds per call (best of 5 x 200 calls).
(2) Whole learners (``experiments/parity.py``'s speed workloads) compiled twice in ONE process, once with each
shuffle, timed alternately ``--rounds`` times (best kept), so the machine's drift cannot fake the ratio.

    python experiments/shuffle_bench.py                                   # both tables, PPO/PQN workloads
    python experiments/shuffle_bench.py --workloads none                  # the shuffle alone
    python experiments/shuffle_bench.py --workloads ppo-cartpole --seeds 1,64 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _per_call_us(fn, arg, calls: int = 200) -> float:
    import jax

    fn = jax.jit(fn)
    jax.block_until_ready(fn(arg))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = fn(arg)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def shuffle_table(sizes: list[int], seeds: list[int]) -> None:
    import jax

    from plasticine_jax.algos import shuffle

    print(f"{'samples':>8} {'seeds':>5} {'jax.random.permutation us':>26} {'packed sort us':>15} {'ratio':>6}")
    for n in sizes:
        for s in seeds:
            keys = jax.random.split(jax.random.PRNGKey(0), s)
            ref = _per_call_us(jax.vmap(lambda k, n=n: jax.random.permutation(k, n)), keys)
            ours = _per_call_us(jax.vmap(lambda k, n=n: shuffle.permutation(k, n)), keys)
            print(f"{n:>8} {s:>5} {ref:>26.1f} {ours:>15.1f} {ref / ours:>6.2f}", flush=True)


def learner_table(workloads: list[str], seeds: list[int], rounds: int) -> None:
    import jax
    import parity

    from plasticine_jax.algos import shuffle

    packed = shuffle.permutation
    print(f"{'workload':<14} {'seeds':>5} {'jax shuffle steps/s':>20} {'packed steps/s':>15} {'ratio':>6}")
    try:
        for name in workloads:
            w = parity.WORKLOADS[name]
            for s in seeds:
                built = []
                for fn in (jax.random.permutation, packed):
                    shuffle.permutation = fn  # the learners call shuffle.permutation at trace time
                    built.append(parity.speed_program(w, s))
                best = parity.best_alternating({i: b[:2] for i, b in enumerate(built)}, rounds)
                ref, ours = (b[2] / best[i] for i, b in enumerate(built))
                print(f"{name:<14} {s:>5} {ref:>20.0f} {ours:>15.0f} {ours / ref:>6.2f}", flush=True)
    finally:
        shuffle.permutation = packed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="500,2048,8192", help="samples per shuffle (table 1)")
    p.add_argument("--seeds", default="1,16,64", help="vmapped seed counts")
    p.add_argument("--workloads", default="ppo-cartpole,ppo-breakout,pqn-cartpole,pqn-breakout",
                   help="parity workloads for table 2 (none: skip it)")
    p.add_argument("--rounds", type=int, default=3, help="alternating timed calls per variant (table 2)")
    args = p.parse_args(argv)
    import jax

    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs")
    shuffle_table([int(n) for n in args.sizes.split(",")], seeds)
    if args.workloads not in ("", "none"):
        learner_table(args.workloads.split(","), seeds, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
