"""Unit-level plasticity metrics: dormant-unit scores/ratios (ReDo and the reference's June formula) and the
fraction of active units, all pure functions of one layer's activations (units on the last axis)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from plasticine_jax.errors import ConfigError

_FORMULAS = ("redo", "june")
_RELU_LIKE = ("relu", "ln-relu", "gn-relu")
_ACTIVATIONS = (*_RELU_LIKE, "crelu", "tanh", "sigmoid", "dff", "swish")

# Output magnitude above which a bounded unit (tanh, sin/cos) counts as saturated (reference §4.1).
SATURATION = 0.99


def _check_formula(formula: str) -> None:
    if formula not in _FORMULAS:
        raise ConfigError(f"unknown dormant-score formula '{formula}'; choose one of {', '.join(_FORMULAS)}")


def unit_scores(a: jax.Array, formula: str = "redo", use_abs: bool = False) -> jax.Array:
    """Per-unit dormancy score of one layer's activations ``a`` of shape [B, ..., D] (conv: NHWC).

    * ``"redo"`` (Sokar et al. 2023, the correct one): s_i = E|a_i| / (mean_j E|a_j| + 1e-9), the expectation
      over the batch and any spatial axes; always uses |a| (``use_abs`` is ignored).
    * ``"june"`` (the reference's older per-sample formula): for each sample (and spatial position)
      a_{b,i} / (mean_k a_{b,k} + 1e-6), averaged over the batch, then over spatial positions; |a| is used
      only when ``use_abs`` (the reference does so for tanh and dff).

    Returns float32 [D]. ``formula`` must be static under jit.
    """
    _check_formula(formula)
    a = jnp.asarray(a, jnp.float32)
    if a.ndim < 2:
        raise ValueError(f"unit_scores expects activations [B, ..., D], got shape {a.shape}")
    if formula == "redo":
        e = jnp.mean(jnp.abs(a), axis=tuple(range(a.ndim - 1)))
        return e / (jnp.mean(e) + 1e-9)
    x = jnp.abs(a) if use_abs else a
    per_sample = x / (jnp.mean(x, axis=-1, keepdims=True) + 1e-6)
    s = jnp.mean(per_sample, axis=0)  # over the batch -> [..., D]
    return jnp.mean(s.reshape(-1, s.shape[-1]), axis=0)  # then over spatial positions


def dormant_mask(a: jax.Array, tau: float, formula: str = "redo", use_abs: bool = False) -> jax.Array:
    """bool[D]: units whose score (``unit_scores``) is <= ``tau``; tau = 0 means exactly-zero score."""
    return unit_scores(a, formula, use_abs) <= tau


def _per_layer_abs(n: int, use_abs: bool | Sequence[bool]) -> list[bool]:
    if isinstance(use_abs, bool):
        return [use_abs] * n
    flags = [bool(u) for u in use_abs]
    if len(flags) != n:
        raise ValueError(f"use_abs has {len(flags)} entries for {n} layers")
    return flags


def dormant_ratio_per_layer(
    layers: Sequence[jax.Array],
    tau: float = 0.025,
    formula: str = "redo",
    use_abs: bool | Sequence[bool] = False,
) -> jax.Array:
    """float32 [L]: fraction of dormant units in each layer's activations (see ``unit_scores``)."""
    layers = list(layers)
    if not layers:
        raise ValueError("dormant_ratio needs at least one layer of activations")
    flags = _per_layer_abs(len(layers), use_abs)
    fractions = [
        jnp.mean(dormant_mask(a, tau, formula, u).astype(jnp.float32))
        for a, u in zip(layers, flags, strict=True)
    ]
    return jnp.stack(fractions)


def dormant_ratio(
    layers: Sequence[jax.Array],
    tau: float = 0.025,
    formula: str = "redo",
    use_abs: bool | Sequence[bool] = False,
) -> jax.Array:
    """Ratio of dormant units: unweighted mean over layers of the per-layer dormant fraction (as the
    reference; a wide layer counts as much as a narrow one). float32 scalar."""
    return jnp.mean(dormant_ratio_per_layer(layers, tau, formula, use_abs))


def active_fraction(features: jax.Array, activation: str, reference: bool = False) -> jax.Array:
    """Fraction of active units (FAU) of post-activation ``features`` [..., D] over all samples and units.

    * relu (also "ln-relu", "gn-relu"): 1 - mean(F == 0).
    * tanh: 1 - mean(|F| > 0.99) (saturated units are inactive).
    * sigmoid: 1 - mean(F < 0.01 or F > 0.99).
    * swish: F = x sigmoid(x) (not in the reference) is judged on the sign of its pre-activation, like relu:
      1 - mean(F <= 0); its negative branch has a small, vanishing gradient.
    * crelu: F = concat(relu(x), relu(-x)) on the last axis (width 2D'). The reference treats it like relu,
      but one half of every pair is 0 by construction, so its FAU is <= 0.5 [ODD]. Here a CReLU unit is the
      pair (i, i + D'); it is active on a sample when either half is non-zero (i.e. its pre-activation
      x != 0): 1 - mean over samples and pairs of (both halves == 0).
    * dff: F = concat(sin x, cos x). The reference's 1 - mean(|F| > sqrt(2) - 0.01) is identically 1 since
      |sin|, |cos| <= 1 [BUG]. Here each sin and each cos output is a bounded unit judged like tanh: it is
      saturated (inactive) when |F| > 0.99, where its local derivative (|cos x| resp. |sin x|) is < 0.141.
      FAU = 1 - mean(|F| > 0.99) over all 2D' outputs. Because sin^2 + cos^2 = 1, at most one unit of a pair
      is saturated at a time, so the value lies in [0.5, 1]; a pair as a whole never loses its gradient
      (d(sin x, cos x)/dx has norm 1, the point of DFF), so no meaningful pair-level "dead" state exists.

    ``reference=True`` reproduces the reference formulas exactly (crelu as relu; dff with sqrt(2) - 0.01).
    ``activation`` and ``reference`` must be static under jit. Returns a float32 scalar.
    """
    if activation not in _ACTIVATIONS:
        raise ConfigError(
            f"unknown activation '{activation}' for active_fraction; choose one of {', '.join(_ACTIVATIONS)}"
        )
    f = jnp.asarray(features, jnp.float32)
    if activation in _RELU_LIKE or (activation == "crelu" and reference):
        inactive = f == 0
    elif activation == "swish":
        inactive = f <= 0
    elif activation == "crelu":
        d2 = f.shape[-1]
        if d2 % 2:
            raise ValueError(f"crelu features must have an even last axis (relu(x), relu(-x)), got {d2}")
        inactive = (f[..., : d2 // 2] == 0) & (f[..., d2 // 2 :] == 0)
    elif activation == "tanh":
        inactive = jnp.abs(f) > SATURATION
    elif activation == "sigmoid":
        inactive = (f < 1.0 - SATURATION) | (f > SATURATION)
    elif reference:  # dff, reference formula
        inactive = jnp.abs(f) > jnp.sqrt(2.0) - 0.01
    else:  # dff
        inactive = jnp.abs(f) > SATURATION
    return 1.0 - jnp.mean(inactive.astype(jnp.float32))
