"""Rank metrics of a feature batch F [B, D] (rows = samples): Kumar et al.'s srank and Roy & Vetterli's
effective rank, from the singular values of F (no centering)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from plasticine_jax.errors import ConfigError


def check_rank_batch(batch: int, width: int) -> None:
    """Raise ``ConfigError`` when the metric batch has fewer samples than feature units (rank capped at B)."""
    if batch < width:
        raise ConfigError(
            f"rank metrics need at least as many samples as feature units (batch {batch} < width {width}); "
            f"use a metric batch of >= {width} samples"
        )


@jax.custom_batching.sequential_vmap
def _svdvals(f: jax.Array) -> jax.Array:
    """Singular values, descending. Under vmap it loops over the batch: jaxlib's batched CPU LAPACK kernels
    wait on the intra-op thread pool they run on, and two of them at once starve a 2-thread pool (a hang)."""
    return jnp.linalg.svd(f, compute_uv=False)


def _singular_values(features: jax.Array) -> jax.Array:
    f = jnp.asarray(features, jnp.float32)
    if f.ndim != 2:
        raise ValueError(f"rank metrics expect features [B, D], got shape {f.shape}")
    return _svdvals(f)  # descending, length min(B, D)


def stable_rank(features: jax.Array, delta: float = 0.01) -> jax.Array:
    """srank_delta (Kumar et al. 2021): least k whose top-k singular values hold >= 1 - delta of sum(sigma).

    Equals the reference's #{k : cumsum(sigma)_k / sum(sigma) < 1 - delta} + 1. Cumulative shares within a
    relative 1e-5 of the threshold count as reaching it, so exact ties (e.g. sigma = [3, 1], delta = 0.25
    -> 1) do not depend on float rounding, and the result never exceeds min(B, D). All-zero features -> 0
    (no directions). With B < D the value is bounded by B (see ``check_rank_batch``). Not the
    ||F||_F^2 / ||F||_2^2 "stable rank". Returns an int32 scalar.
    """
    sv = _singular_values(features)
    cum = jnp.cumsum(sv)
    total = cum[-1]
    below = cum < (1.0 - delta) * total - 1e-5 * total
    k = jnp.minimum(jnp.sum(below.astype(jnp.int32)) + 1, sv.shape[0])
    return jnp.where(total > 0, k, 0).astype(jnp.int32)


def effective_rank(features: jax.Array) -> jax.Array:
    """Effective rank (Roy & Vetterli 2007): exp(-sum p log p) with p = sigma / sum|sigma|, zero p dropped.

    Lies in [1, min(B, D)]; with B < D it is bounded by B (see ``check_rank_batch``). All-zero features -> 0.
    NaN-free (where-based). Returns a float32 scalar.
    """
    sv = _singular_values(features)
    s1 = jnp.sum(jnp.abs(sv))
    nonzero = s1 > 0
    p = sv / jnp.where(nonzero, s1, 1.0)
    pos = p > 0
    plogp = jnp.where(pos, p * jnp.log(jnp.where(pos, p, 1.0)), 0.0)
    return jnp.where(nonzero, jnp.exp(-jnp.sum(plogp)), 0.0)
