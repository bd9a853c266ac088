"""What XLA:CPU's compile time pays for: distinct kernels, not kernels.

Compiles a loop whose body holds ``n`` independent small elementwise kernels (one ``where`` per array), once with
every array of a different shape and once with all of one shape, and prints the compile seconds and the seconds per
kernel. XLA:CPU emits and compiles a kernel per distinct fused computation; kernels that are the same computation on
the same shapes cost a fraction of that. So a learner's compile follows its distinct kernels (its layers' distinct
shapes, its distinct fused expressions), and fusion counts overstate it (README Performance).

    python experiments/kernel_compile_cost.py [--kernels 10 100 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time


def compile_seconds(n: int, distinct: bool) -> tuple[float, int]:
    """(seconds to compile, fusion instructions in the optimized HLO) of a 3-step scan over ``n`` arrays, each
    updated by its own ``where``: arrays of ``n`` distinct shapes or all of one."""
    import jax
    import jax.numpy as jnp

    shapes = [(7 + i if distinct else 7, 5) for i in range(n)]
    xs = [jnp.ones(s) for s in shapes]
    ys = [jnp.ones(s) for s in shapes]

    def run(pred, xs, ys):
        def body(carry, _):
            a, b = carry
            return ([jnp.where(pred, x * 1.5 + y, y) for x, y in zip(a, b, strict=True)], a), None

        return jax.lax.scan(body, (xs, ys), None, length=3)[0]

    lowered = jax.jit(run).lower(True, xs, ys)
    t0 = time.perf_counter()
    compiled = lowered.compile()
    return time.perf_counter() - t0, compiled.as_text().count(" fusion(")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernels", type=int, nargs="+", default=[10, 100, 200], help="kernels per program")
    p.add_argument("--rounds", type=int, default=2, help="builds per cell; the fastest is kept")
    args = p.parse_args(argv)

    from bench import machine_info

    m = machine_info()
    print(f"{m['cpu']}, {m['usable_cores']} usable cores, jax {m['jax']}, {m['device']}")
    print(f"{'kernels':>8} {'shapes':>9} {'fusions':>8} {'compile s':>10} {'ms / kernel':>12}")
    for n in args.kernels:
        for distinct in (True, False):
            best, fusions = min(compile_seconds(n, distinct) for _ in range(max(1, args.rounds)))
            print(f"{n:>8} {'distinct' if distinct else 'one':>9} {fusions:>8} {best:>10.2f} {1e3 * best / n:>12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
