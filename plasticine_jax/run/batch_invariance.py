"""Batch-invariant XLA:CPU code: every run gets the same bits however many runs share its program.

XLA compiles one program per batch shape, and on CPU two of its choices depend on that shape: YNNPACK fusions
(taken for large enough reductions, summing in another order) and LLVM's contraction of ``a * b + c`` into one
FMA instruction (which happens inside fusions whose boundaries move with the shape). So by default seed 3 of an
8-seed run and seed 3 run alone agree only to float rounding (~1e-7 after one update), and a run split over
devices (2 runs per device) agrees with the one-device run only to rounding too. ``--batch-invariant`` turns both
off: results are then bit-identical whether a seed runs alone, with others or on another device, at the cost of
plain AVX arithmetic (no AVX2/FMA). A run axis of 1 is compiled like a plain call (another program), so under
the flag a run alone is batched with a copy of itself (``run_axis``) and a split keeps two runs per device
(``devices``). It must be set before JAX starts its backend (the CLI does so first thing).
"""

from __future__ import annotations

import os
import platform

from plasticine_jax.errors import ConfigError

FLAGS = ("--xla_cpu_max_isa=AVX", "--xla_cpu_experimental_ynn_fusion_type=")


def active() -> bool:
    """Whether this process's XLA_FLAGS hold every batch-invariance flag."""
    have = os.environ.get("XLA_FLAGS", "").split()
    return all(f in have for f in FLAGS)


def enable() -> None:
    """Add the flags to XLA_FLAGS, or explain in one line why this process cannot have them."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise ConfigError(f"--batch-invariant: available on x86-64 CPUs only (this is {platform.machine()}); drop it")
    if not active():
        from jax._src import xla_bridge

        started = getattr(xla_bridge, "backends_are_initialized", lambda: bool(getattr(xla_bridge, "_backends", {})))
        if started():
            raise ConfigError("--batch-invariant: JAX already started its backend in this process; start a fresh "
                              f"process, or set XLA_FLAGS='{' '.join(FLAGS)}' before importing jax")
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *FLAGS]).strip()
    import jax

    if jax.default_backend() != "cpu":
        raise ConfigError(f"--batch-invariant: XLA:CPU only (this process runs on {jax.default_backend()}); run "
                          f"with JAX_PLATFORMS=cpu or drop it")
