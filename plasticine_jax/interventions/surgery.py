"""Parameter and optimizer-state surgery shared by resets: masked re-initialisation, and zeroing the
optimizer moments of re-initialised entries (every optimizer-state subtree shaped like the params)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

# Optimizer-state fields that are reference points, not moments: never zeroed by a reset.
_KEEP_FIELDS = ("theta_ref", "x")


def find_state(opt_state: Any, cls: type) -> Any:
    """The first optimizer-state node of type ``cls`` inside ``opt_state`` (any chain nesting). Raises if absent."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda v: isinstance(v, cls)) if isinstance(s, cls)]
    if not found:
        raise ValueError(f"no {cls.__name__} found in opt_state")
    return found[0]


def where_tree(mask: Any, new: Any, old: Any) -> Any:
    """Leafwise ``where(mask, new, old)`` over matching pytrees."""
    return jax.tree.map(lambda m, n, o: jnp.where(m, n, o), mask, new, old)


def reset_opt_state(opt_state: Any, params: Any, mask: Any) -> Any:
    """Zero every optimizer-state entry that shadows a masked parameter (Adam mu/nu, momenta, ...).

    A subtree is "param-shaped" when its tree structure and leaf shapes equal the params'. Scalars such as
    step counts are left alone, as are TRAC's reference point and base iterate (``_KEEP_FIELDS``).
    """
    p_def = jax.tree.structure(params)
    p_shapes = [x.shape for x in jax.tree.leaves(params)]

    def is_param_shaped(node: Any) -> bool:
        try:
            return jax.tree.structure(node) == p_def and [x.shape for x in jax.tree.leaves(node)] == p_shapes
        except Exception:
            return False

    def walk(node: Any) -> Any:
        if is_param_shaped(node):
            return jax.tree.map(lambda m, x: jnp.where(m, jnp.zeros_like(x), x), mask, node)
        if isinstance(node, tuple) and hasattr(node, "_fields"):  # NamedTuple
            return type(node)(*[v if f in _KEEP_FIELDS else walk(v) for f, v in zip(node._fields, node, strict=True)])
        if isinstance(node, tuple | list):
            return type(node)(walk(v) for v in node)
        if isinstance(node, dict):
            return type(node)((k, walk(v)) for k, v in node.items())  # keeps OrderedDict (named_chain)
        return node

    return walk(opt_state)


def path_mask(params: Any, predicate) -> Any:
    """Boolean tree: True on every leaf whose key path (tuple of str) satisfies ``predicate``."""

    def f(path, x):
        keys = tuple(getattr(k, "key", str(k)) for k in path)
        return jnp.full(x.shape, bool(predicate(keys)))

    return jax.tree_util.tree_map_with_path(f, params)


def is_frozen_copy(path: tuple[str, ...]) -> bool:
    """The plasticity-injection heads' frozen copy: no other intervention may move it (it must keep
    cancelling the value of ``new`` it was copied from)."""
    return len(path) > 1 and path[1] == "frozen"


def every(period: int, update_idx: jax.Array) -> jax.Array:
    """True on updates period, 2*period, ... (1-based count of completed updates); False if period <= 0."""
    if period <= 0:
        return jnp.zeros((), bool)
    return (update_idx + 1) % period == 0
