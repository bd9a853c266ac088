"""Uniform replay buffer as a pure pytree, so off-policy learners keep it inside their jit/vmap/scan training carry.

A ring buffer: one ``[capacity, ...]`` array per leaf of the transition pytree, an insertion position and a fill
count. Adding writes ``N`` transitions (one per env) over the oldest slots; sampling draws uniformly with
replacement from the filled part. Capacity, ``N`` and the sample size are static, so every shape is fixed; under
``jax.vmap`` over seeds each seed holds its own buffer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

PyTree = Any


@struct.dataclass
class ReplayState:
    """Buffer contents and bookkeeping: slot ``position`` is written next, slots ``[0, size)`` hold data."""

    storage: PyTree  # same structure as one transition; each leaf [capacity, *leaf_shape] in the leaf's dtype
    position: jax.Array  # int32 scalar in [0, capacity): where the next transition goes
    size: jax.Array  # int32 scalar in [0, capacity]: how many slots hold data
    capacity: int = struct.field(pytree_node=False)  # static, so it stays a Python int under jit and vmap


def replay_init(capacity: int, example: PyTree) -> ReplayState:
    """Empty buffer for ``capacity`` transitions shaped like ``example`` (ONE transition, no batch axis).

    Storage keeps each leaf's dtype, so uint8 observations stay uint8 (4x less memory than float32).
    """
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"replay capacity must be a positive int, got {capacity!r}")
    if not jax.tree.leaves(example):
        raise ValueError("replay example transition has no array leaves")

    def empty(leaf: Any) -> jax.Array:
        leaf = jnp.asarray(leaf)
        return jnp.zeros((capacity, *leaf.shape), leaf.dtype)

    zero = jnp.zeros((), jnp.int32)
    return ReplayState(storage=jax.tree.map(empty, example), position=zero, size=zero, capacity=capacity)


def replay_add(state: ReplayState, batch: PyTree) -> ReplayState:
    """Write ``N`` transitions (leading axis ``N`` on every leaf, ``N <= capacity``), overwriting the oldest.

    ``N`` is read from the shapes, so it is static; values are cast to the storage dtype.
    """
    capacity = state.capacity
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in map(jnp.asarray, jax.tree.leaves(batch))}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"replay_add needs one shared leading axis N on every leaf, got leading sizes {sizes}")
    (n,) = sizes
    if not 1 <= n <= capacity:
        raise ValueError(f"replay_add got N={n} transitions; need 1 <= N <= capacity={capacity}")

    # N <= capacity makes these slots distinct, so the scatter has no write conflicts.
    slots = (state.position + jnp.arange(n, dtype=jnp.int32)) % capacity

    def write(store: jax.Array, new: Any) -> jax.Array:
        new = jnp.asarray(new)
        if new.shape[1:] != store.shape[1:]:
            raise ValueError(f"replay_add leaf shape {new.shape[1:]} != stored transition shape {store.shape[1:]}")
        return store.at[slots].set(new.astype(store.dtype))

    return state.replace(
        storage=jax.tree.map(write, state.storage, batch),
        position=(state.position + n) % capacity,
        size=jnp.minimum(state.size + n, capacity),
    )


def replay_sample(state: ReplayState, key: jax.Array, batch_size: int) -> PyTree:
    """``batch_size`` transitions drawn uniformly with replacement from the filled slots ``[0, size)``.

    On an empty buffer this returns slot 0 (zeros) rather than failing, so it can sit unguarded in a compiled
    step; learners only use the result once ``size`` has passed their ``learning_starts``.
    """
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1), dtype=jnp.int32)
    return jax.tree.map(lambda store: store[idx], state.storage)


def replay_size(state: ReplayState) -> jax.Array:
    """Number of transitions currently held (int32 scalar, at most ``capacity``)."""
    return state.size
