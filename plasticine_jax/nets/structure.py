"""Neuron structure: for every hidden activation, which parameters produce its units and which consume them.

Declaring this once per network lets ReDo, layer resets, continual backprop and per-layer metrics be
written generically (DESIGN.md "Intervention"). Paths index the flax ``params`` dict; ``axis`` is the
unit axis of that array (Dense kernel [in, out]: producer axis 1, consumer axis 0; Conv kernel
[kh, kw, in, out]: producer 3, consumer 2; biases and LayerNorm scale/bias: axis 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class ParamRef:
    """One parameter array and the axis that indexes units. ``tile`` > 1 for a Dense after a flatten:
    NHWC flattening puts channel c at every index p*C + c, so the channel mask is tiled over positions."""

    path: tuple[str, ...]
    axis: int
    tile: int = 1
    flatten: bool = False  # resolved to tile = H*W of the activation by ``resolve_tiles``
    reset_value: float | None = None  # LayerNorm scale resets to 1, biases to 0; None = fresh init sample


@dataclass(frozen=True)
class UnitGroup:
    """A hidden activation (sow name) of ``width`` producer units, emitted ``copies`` times (CReLU/DFF = 2)."""

    name: str
    width: int
    copies: int
    activation: str
    producers: tuple[ParamRef, ...]
    consumers: tuple[ParamRef, ...] = field(default=())
    recyclable: bool = True  # False for residual-stream activations (no single producer)


def get_path(tree: dict, path: tuple[str, ...]) -> jax.Array:
    for k in path:
        tree = tree[k]
    return tree


def set_path(tree: dict, path: tuple[str, ...], value: jax.Array) -> dict:
    """Functional update of a nested dict (copies along the path only)."""
    if len(path) == 1:
        return {**tree, path[0]: value}
    return {**tree, path[0]: set_path(tree[path[0]], path[1:], value)}


def unit_mask_for(ref: ParamRef, shape: tuple[int, ...], units: jax.Array) -> jax.Array:
    """Broadcast a boolean mask over units (length = units on ``ref.axis`` / tile) to the parameter shape."""
    units = jnp.tile(units, ref.tile) if ref.tile > 1 else units
    bshape = [1] * len(shape)
    bshape[ref.axis] = shape[ref.axis]
    return jnp.broadcast_to(units.reshape(bshape), shape)


def output_mask(group: UnitGroup, producer_units: jax.Array) -> jax.Array:
    """Mask over the activation's output units from a mask over producer units (copies concatenated)."""
    return jnp.tile(producer_units, group.copies) if group.copies > 1 else producer_units


def producer_mask_from_outputs(group: UnitGroup, out_units: jax.Array) -> jax.Array:
    """A producer unit is selected when ALL its output copies are (a CReLU unit with one live half is alive)."""
    return out_units.reshape(group.copies, group.width).all(axis=0)
