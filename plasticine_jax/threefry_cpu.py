"""Unrolled threefry on XLA:CPU: the same random bits, fewer kernels per draw, a little faster.

On CPU, jax lowers the threefry2x32 hash as a rolled ``fori_loop`` of 5 iterations (a compile-time saving for
large programs); a draw then runs a while loop of 5 trips x ~16 kernels, most of them loop-carry copies.
``enable()`` registers for CPU the unrolled lowering jax itself uses on GPU and TPU: the same integer arithmetic,
so the same random bits (tests/test_threefry_cpu.py), no loop. Measured with ``experiments/threefry_ab.py``
(README "Performance"): 1.00-1.11x steps/s on the parity workloads, never slower, compiles 0-0.9 s shorter.
Trained results are not bit-identical to the rolled program's: XLA fuses the float math around the draws
differently. Applied when ``plasticine_jax`` is imported; ``PLASTICINE_JAX_ROLLED_THREEFRY=1`` keeps jax's loop.
"""

from __future__ import annotations

import os

_unrolled = False  # whether the unrolled lowering is the registered CPU rule


def use_unrolled(on: bool = True) -> bool:
    """Register for CPU jax's unrolled threefry lowering (``on``) or jax's own rolled CPU lowering (``not on``),
    for programs lowered from now on. Returns False when this jax no longer has the private hooks it needs (then
    nothing changes). The one place that touches those internals (``experiments/threefry_ab.py`` A/Bs with it)."""
    global _unrolled
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as tf

        rule = tf._threefry2x32_lowering_rule if on else tf._threefry2x32_cpu_lowering_rule
    except (ImportError, AttributeError):  # a jax whose internals moved: keep its own (rolled) lowering
        return False
    mlir.register_lowering(tf.threefry2x32_p, rule, platform="cpu")
    _unrolled = on
    return True


def enable() -> bool:
    """Register the unrolled threefry lowering for CPU unless opted out. Returns whether it is in effect: False
    when opted out, or when this jax no longer has the private hooks it needs (then jax's own lowering stays)."""
    if _unrolled:
        return True
    if os.environ.get("PLASTICINE_JAX_ROLLED_THREEFRY", "") not in ("", "0"):
        return False
    return use_unrolled(True)
