"""Look up one optimizer's state node inside a chained optax state (TRAC, Kron)."""

from __future__ import annotations

from typing import Any

import jax


def find_state(opt_state: Any, cls: type) -> Any:
    """The first optimizer-state node of type ``cls`` inside ``opt_state`` (any chain nesting). Raises if absent."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda v: isinstance(v, cls)) if isinstance(s, cls)]
    if not found:
        raise ValueError(f"no {cls.__name__} found in opt_state")
    return found[0]
