"""Weight, gradient and feature norms: RMS weight magnitude / difference over a parameter pytree, global L2
norm (gradient norm before clipping), and feature-batch norm and variance."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def _sum_sq_and_count(tree: PyTree) -> tuple[jax.Array, int]:
    leaves = jax.tree.leaves(tree)
    total = sum((jnp.sum(jnp.square(jnp.asarray(x, jnp.float32))) for x in leaves), jnp.float32(0.0))
    return total, sum(int(jnp.size(x)) for x in leaves)


def global_norm(tree: PyTree) -> jax.Array:
    """L2 norm over all leaves, sqrt(sum theta^2) (the gradient norm before clipping). Empty tree -> 0."""
    total, _ = _sum_sq_and_count(tree)
    return jnp.sqrt(total)


def weight_magnitude(params: PyTree) -> jax.Array:
    """RMS of all parameters, sqrt(sum theta^2 / #params), biases included (reference). Empty tree -> 0."""
    total, n = _sum_sq_and_count(params)
    return jnp.sqrt(total / max(n, 1))


def weight_difference(params: PyTree, ref_params: PyTree) -> jax.Array:
    """RMS distance to a reference point, sqrt(sum (theta - theta_ref)^2 / #params). The trees must have the
    same structure and shapes (jax raises otherwise)."""
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    diff = jax.tree.map(lambda x, r: f32(x) - f32(r), params, ref_params)
    total, n = _sum_sq_and_count(diff)
    return jnp.sqrt(total / max(n, 1))


def _features(features: jax.Array) -> jax.Array:
    f = jnp.asarray(features, jnp.float32)
    if f.ndim != 2:
        raise ValueError(f"feature metrics expect features [B, D], got shape {f.shape}")
    return f


def feature_norm(features: jax.Array) -> jax.Array:
    """Mean over samples of the L2 norm of each feature vector F_b. float32 scalar."""
    f = _features(features)
    return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(f), axis=1)))


def feature_variance(features: jax.Array, across: str = "features") -> jax.Array:
    """Mean unbiased (ddof = 1) variance of F [B, D].

    * ``"features"`` (reference, torch.var(F, dim=1).mean()): the spread across the D units within each
      sample, averaged over samples [ODD: not the usual per-unit variance].
    * ``"batch"``: per-unit variance across the B samples, averaged over units.

    A single element along the variance axis (D == 1, resp. B == 1) returns 0 instead of NaN.
    """
    f = _features(features)
    if across not in ("features", "batch"):
        raise ValueError(f"feature_variance: across must be 'features' or 'batch', got '{across}'")
    axis = 1 if across == "features" else 0
    n = f.shape[axis]
    if n < 2:
        return jnp.float32(0.0)
    centred = f - jnp.mean(f, axis=axis, keepdims=True)
    return jnp.mean(jnp.sum(jnp.square(centred), axis=axis) / (n - 1))
