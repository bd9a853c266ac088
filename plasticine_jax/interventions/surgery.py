"""Parameter and optimizer-state surgery shared by resets: masked re-initialisation, zeroing the optimizer
state that shadows re-initialised entries, mirroring edits into target networks, and schedules."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from plasticine_jax.algos.state import Unit

# Optimizer-state fields that are reference points, not moments: never zeroed by a reset (TRAC's theta_ref
# and base iterate x are param-shaped but must survive).
_KEEP_FIELDS = ("theta_ref", "x")


def where_tree(mask: Any, new: Any, old: Any) -> Any:
    """Leafwise ``where(mask, new, old)`` over matching pytrees."""
    return jax.tree.map(lambda m, n, o: jnp.where(m, n, o), mask, new, old)


def reset_opt_state(tx: optax.GradientTransformation, opt_state: Any, mask: Any) -> Any:
    """Zero every optimizer-state entry that shadows a masked parameter (Adam mu/nu, momenta, ...).

    Uses ``optax.tree_utils.tree_map_params`` (the optimizer says which of its state subtrees are
    param-shaped); step counts and other scalars are left alone, as are TRAC's reference point and base
    iterate (``_KEEP_FIELDS``) and per-parameter state that is not shaped like the parameter (Kron's
    preconditioner factors, a list per parameter: a fresh preconditioner is rebuilt from the new gradients)."""
    if tx is None:
        raise ValueError("reset_opt_state needs the unit's optimizer (Context.tx)")

    def zero(x, m):
        if isinstance(x, list) or getattr(x, "shape", None) != m.shape:
            return x
        return jnp.where(m, jnp.zeros_like(x), x)

    new = optax.tree_utils.tree_map_params(tx, zero, opt_state, mask, is_leaf=lambda v: isinstance(v, list))
    for f in _KEEP_FIELDS:
        old = optax.tree_utils.tree_get_all_with_path(opt_state, f)
        if old:
            new = optax.tree_utils.tree_set(new, **{f: old[0][1]})
    return new


def mirror_target(unit: Unit, mask: Any) -> Unit:
    """Copy the masked online params into the target network (resets, ReDo and injection act on both, as
    the papers' agents do); a unit without a target is returned unchanged."""
    if unit.target is None:
        return unit
    return unit.replace(target=where_tree(mask, unit.params, unit.target))


def every(period: int, update_idx: jax.Array) -> jax.Array:
    """True on updates period, 2*period, ... (1-based count of completed updates); False if period <= 0."""
    if period <= 0:
        return jnp.zeros((), bool)
    return (update_idx + 1) % period == 0
