"""Unrolled threefry on XLA:CPU: the same random bits, several times fewer kernels per draw.

On CPU, jax lowers the threefry2x32 hash as a rolled ``fori_loop`` of 5 iterations (a compile-time saving for
large programs); every draw then runs a while loop of 5 trips x ~16 kernels. An RL step draws 4-5 times (key
split, action sample, the env's key split and its auto-reset), so for small networks and envs the rolled loop is
most of an env step. ``enable()`` registers for CPU the unrolled lowering jax itself uses on GPU and TPU: one fused
kernel per draw, bit-identical numbers (the same integer arithmetic), and shorter compiles in our learners
(README "Performance"). Applied when ``plasticine_jax`` is imported; ``PLASTICINE_JAX_ROLLED_THREEFRY=1`` keeps
jax's rolled loop.
"""

from __future__ import annotations

import os

_enabled = False


def enable() -> bool:
    """Register the unrolled threefry lowering for CPU (once). Returns whether it is in effect: False when
    opted out, or when this jax no longer has the private hooks it needs (then jax's own lowering stays)."""
    global _enabled
    if _enabled:
        return True
    if os.environ.get("PLASTICINE_JAX_ROLLED_THREEFRY", "") not in ("", "0"):
        return False
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as tf

        mlir.register_lowering(tf.threefry2x32_p, tf._threefry2x32_lowering_rule, platform="cpu")
    except (ImportError, AttributeError):  # a jax whose internals moved: keep its own (rolled) lowering
        return False
    _enabled = True
    return True
