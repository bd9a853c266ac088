"""Parseval regularisation (Chung et al. 2024): loss += lambda * sum_W ||W W^T - s I||_F^2 with W [out, in],
pushing each layer's output units to be orthonormal with squared norm s. Paper: every layer but the
output heads; the reference regularises only some layers (``layers="last"`` = the final layer of each torso).
The kernels come from the network's declared layout (every unit: actor, critics, Q-network)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.nets.structure import get_path


@dataclass(frozen=True)
class Options:
    weight: float = 1e-3  # lambda (vmappable: pr.weight); the reference's TD3 ran with 1.0 by mistake
    s: float = 1.0  # target squared row norm (vmappable: pr.s)
    layers: str = "all"  # all: every torso Dense/Conv (paper) | last: the last torso layer of each torso


def parseval_penalty(kernel: jax.Array, s: jax.Array) -> jax.Array:
    """||W W^T - s I||_F^2 for a flax kernel [..., in, out] viewed as W = [out, prod(...)*in]."""
    w = kernel.reshape(-1, kernel.shape[-1]).T
    gram = w @ w.T
    return jnp.sum((gram - s * jnp.eye(gram.shape[0], dtype=gram.dtype)) ** 2)


def make(opts: Options) -> Intervention:
    if opts.layers not in ("all", "last"):
        raise ConfigError(f"--pr.layers must be all or last (got {opts.layers})")
    if opts.weight < 0 or opts.s <= 0:
        raise ConfigError(f"--pr.weight must be >= 0 and --pr.s > 0 (got {opts.weight}, {opts.s})")

    def loss(ctx, params, istate, hp):
        total = jnp.zeros(())
        for path in ctx.network.torso_kernel_paths(last_only=opts.layers == "last"):
            total = total + parseval_penalty(get_path(params, path), hp["parseval.s"])
        return hp["parseval.weight"] * total

    return Intervention("parseval", order=10, hparams={"weight": opts.weight, "s": opts.s}, loss=loss)
