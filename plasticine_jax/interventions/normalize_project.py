"""Normalize-and-Project (Lyle et al. 2024): LayerNorm before every nonlinearity, and after every optimizer
step each weight matrix (Dense/Conv kernels, heads included) is rescaled to its initial Frobenius norm;
each LayerNorm's (scale, offset) pair is jointly rescaled to its initial joint norm. Biases are free.
The reference projected every 10 iterations on the vanilla net: ``insert_ln=False, mode=update``."""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.interventions.surgery import every
from plasticine_jax.nets.structure import get_path, set_path


@dataclass(frozen=True)
class Options:
    insert_ln: bool = True  # paper: add LayerNorm before nonlinearities; the reference did not
    mode: str = "step"  # step: project after every optimizer step (paper) | update: every `frequency` updates
    frequency: int = 10  # updates between projections in mode=update (reference: 10)
    project_heads: bool = False  # the reference also projects the heads; with their 0.01 init gain that pins
    # the policy logits near zero (a near-uniform policy forever), so by default heads are left free


def initial_norms(network, params: dict, heads: bool = True) -> dict:
    """{'kernels': {path: ||W_0||}, 'ln': {path: ||(scale_0, offset_0)||}} (paths joined with '/')."""
    kern = {"/".join(p): jnp.linalg.norm(get_path(params, p)) for p in network.kernel_paths(params, heads)}
    ln = {"/".join(p): jnp.sqrt(jnp.sum(get_path(params, p)["scale"] ** 2) + jnp.sum(get_path(params, p)["bias"] ** 2))
          for p in network.layer_norm_paths()}
    return {"kernels": kern, "ln": ln}


def project(params: dict, norms: dict) -> dict:
    """Rescale every kernel with a recorded norm, and every LayerNorm pair, to its recorded norm."""
    for name, n0 in norms["kernels"].items():
        p = tuple(name.split("/"))
        w = get_path(params, p)
        params = set_path(params, p, w * (n0 / (jnp.linalg.norm(w) + 1e-12)))
    for name in norms["ln"]:
        p = tuple(name.split("/"))
        ln = get_path(params, p)
        n = jnp.sqrt(jnp.sum(ln["scale"] ** 2) + jnp.sum(ln["bias"] ** 2))
        f = norms["ln"]["/".join(p)] / (n + 1e-12)
        params = set_path(params, p, {"scale": ln["scale"] * f, "bias": ln["bias"] * f})
    return params


def make(opts: Options) -> Intervention:
    if opts.mode not in ("step", "update"):
        raise ConfigError(f"--nap.mode must be step or update (got {opts.mode})")
    if opts.mode == "update" and opts.frequency < 1:
        raise ConfigError(f"--nap.frequency must be >= 1 update (got {opts.frequency})")

    def init(ctx, unit, key):
        norms = initial_norms(ctx.network, unit.params, opts.project_heads)
        return unit.replace(istate={**unit.istate, "normalize_project": norms})

    def apply(ctx, unit, key):
        return unit.replace(params=project(unit.params, unit.istate["normalize_project"]))

    def after_update(ctx, unit, key, update_idx, acts):
        return jax.lax.cond(every(opts.frequency, update_idx), lambda u: apply(ctx, u, key), lambda u: u, unit)

    step = opts.mode == "step"
    return Intervention(
        "normalize_project", order=45, init=init,
        transform_net=(lambda c: replace(c, layer_norm=True)) if opts.insert_ln else None,
        after_step=apply if step else None, after_update=None if step else after_update,
        schedules=() if step else (("--nap.frequency", opts.frequency),))
