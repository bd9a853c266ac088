"""Regenerative regularisation / L2-Init (Kumar et al. 2023): loss += lambda * ||theta - theta_0||^2.

The reference adds the *unsquared* norm (constant-magnitude gradient, §3.8); ``squared=False`` gives that,
with a NaN-safe norm (its gradient at theta = theta_0 is 0, as torch's, instead of NaN)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention


@dataclass(frozen=True)
class Options:
    weight: float = 0.01  # lambda (vmappable: rr.weight)
    squared: bool = True  # paper: squared L2 distance; False = the reference's unsquared norm


def safe_norm(sq: jax.Array) -> jax.Array:
    """sqrt with a zero (not NaN) gradient at 0."""
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def make(opts: Options) -> Intervention:
    if opts.weight < 0:
        raise ConfigError(f"--rr.weight must be >= 0 (got {opts.weight})")

    def init(ctx, unit, key):
        return unit.replace(istate={**unit.istate, "regenerative": {"theta0": unit.params}})

    def loss(ctx, params, istate, hp):
        sq = sum(jnp.sum((p - p0) ** 2) for p, p0 in zip(jax.tree.leaves(params),
                                                         jax.tree.leaves(istate["theta0"]), strict=True))
        dist = sq if opts.squared else safe_norm(sq)
        return hp["regenerative.weight"] * dist

    return Intervention("regenerative", order=10, hparams={"weight": opts.weight}, init=init, loss=loss)
