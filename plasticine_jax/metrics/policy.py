"""Policy entropies: categorical (stable log-softmax, masked -inf logits allowed) and diagonal Gaussian."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_HALF_LOG_2PI_E = 0.5 + 0.5 * math.log(2.0 * math.pi)


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """Entropy -sum p log p over the last axis of ``logits`` [..., A] -> [...].

    Logits of -inf (masked actions) contribute 0, with NaN-free value and gradient; at least one logit per row
    must be finite.
    """
    logits = jnp.asarray(logits, jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    live = jnp.isfinite(logp)
    logp = jnp.where(live, logp, 0.0)
    p = jnp.where(live, jnp.exp(logp), 0.0)
    return -jnp.sum(p * logp, axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    """Entropy of a diagonal Gaussian, sum over the last (action) axis of 0.5 + 0.5 log(2 pi) + log_std."""
    log_std = jnp.asarray(log_std, jnp.float32)
    return jnp.sum(_HALF_LOG_2PI_E + log_std, axis=-1)
