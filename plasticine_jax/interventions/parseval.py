"""Parseval regularisation (Chung et al. 2024): loss += lambda * sum_W ||W W^T - s I||_F^2 with W [out, in],
pushing each layer's output units to be orthonormal with squared norm s. Paper: every layer but the
output heads; the reference regularises only some layers (``layers="last"`` = the final torso Dense)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from plasticine_jax.interventions.base import Intervention
from plasticine_jax.nets.structure import get_path


@dataclass(frozen=True)
class Options:
    weight: float = 1e-3  # lambda (vmappable: pr.weight); the reference's TD3 ran with 1.0 by mistake
    s: float = 1.0  # target squared row norm (vmappable: pr.s)
    layers: str = "all"  # all: every torso Dense/Conv (paper) | last: the last torso Dense of each torso


def parseval_penalty(kernel: jax.Array, s: jax.Array) -> jax.Array:
    """||W W^T - s I||_F^2 for a flax kernel [..., in, out] viewed as W = [out, prod(...)*in]."""
    w = kernel.reshape(-1, kernel.shape[-1]).T
    gram = w @ w.T
    return jnp.sum((gram - s * jnp.eye(gram.shape[0], dtype=gram.dtype)) ** 2)


TORSOS = ("torso", "actor_torso", "critic_torso")


def regularised_kernels(params: dict, layers: str) -> list[tuple[str, ...]]:
    """Paths of torso kernels (Dense and Conv; never the heads). ``last``: the last Dense of each torso."""
    paths = []
    for torso in TORSOS:
        if torso not in params:
            continue
        for name in params[torso]:  # flax keeps creation order
            if "kernel" in params[torso][name]:
                paths.append((torso, name, "kernel"))
    if layers == "last":
        last: dict[str, tuple[str, ...]] = {}
        for p in paths:
            if p[1].startswith("dense_") and (p[0] not in last or int(p[1][6:]) > int(last[p[0]][1][6:])):
                last[p[0]] = p
        paths = list(last.values())
    return paths


def make(opts: Options) -> Intervention:
    def loss(ctx, params, istate, hp):
        total = jnp.zeros(())
        for path in regularised_kernels(params, opts.layers):
            total = total + parseval_penalty(get_path(params, path), hp["parseval.s"])
        return hp["parseval.weight"] * total

    return Intervention("parseval", order=10, hparams={"weight": opts.weight, "s": opts.s}, loss=loss)
