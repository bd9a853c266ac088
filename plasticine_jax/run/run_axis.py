"""Map a per-run function over the leading run axis: ``jax.vmap`` for several runs, a plain call for one.

``vmap`` of the update loop is costly to trace: jax batches every ``scan`` body until the set of batched carry
leaves stops growing (the nested rollout, epoch and minibatch scans are each batched several times), and the
batched program is larger to lower. A single run needs none of it, so ``over_runs`` traces it unbatched and puts
the run axis back on its outputs: same inputs and outputs as ``vmap``, the same math, a shorter compile (README,
Performance). XLA compiles another program for it, so its floats may differ from the ``vmap`` program's in the
last bits, as between any two batch shapes. Under ``--batch-invariant`` a run alone is batched with a copy of
itself instead: XLA's simplifier drops a run axis of size 1 (``vmap`` of one run is compiled like a plain call, a
weight gradient's ``dot`` then takes its operands the other way round), and on some CPUs (AMD Zen 3, measured)
that sums in another order; a run axis of 2 compiles the program of every larger batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from plasticine_jax.run import batch_invariance


def over_runs(fn: Callable, in_axes: int | None | tuple[int | None, ...] = 0) -> Callable:
    """``jax.vmap(fn, in_axes)``, except that a call with a run axis of size 1 runs ``fn`` unbatched on that run
    (under ``--batch-invariant``: batched with a copy of itself) and returns its outputs with a leading axis of 1.
    ``in_axes``: 0 (mapped) or None (shared) per argument."""
    if any(a not in (0, None) for a in (in_axes if isinstance(in_axes, tuple) else (in_axes,))):
        raise ValueError(f"over_runs maps axis 0 or nothing; got in_axes={in_axes}")
    batched = jax.vmap(fn, in_axes=in_axes)

    def call(*args: Any) -> Any:
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        sizes = {x.shape[0] for arg, a in zip(args, axes, strict=True) if a == 0 for x in jax.tree.leaves(arg)}
        if sizes != {1}:
            return batched(*args)
        if batch_invariance.active():
            twice = [arg if a is None else jax.tree.map(lambda x: jnp.concatenate([x, x]), arg)
                     for arg, a in zip(args, axes, strict=True)]
            return jax.tree.map(lambda x: x[:1], batched(*twice))
        one = [arg if a is None else jax.tree.map(lambda x: x[0], arg) for arg, a in zip(args, axes, strict=True)]
        return jax.tree.map(lambda x: x[None], fn(*one))

    return call
