"""ReDo: recycle dormant neurons (Sokar et al. 2023), generic over any network's declared neuron structure.

Every ``frequency`` updates, on the metric batch: score every recyclable hidden unit (ReDo score
s_i = E|a_i| / mean_j E|a_j|, or the reference's per-sample formula), and for units with s <= tau
re-sample their incoming weights from the layer's own initializer, set their incoming bias to 0 (LayerNorm
scale/offset to 1/0), zero their outgoing weights in *every* consumer (both heads of a shared torso; the
conv->dense flatten is NHWC-tiled) and zero the optimizer moments of all touched entries. Heads are never
recycled. A CReLU/DFF unit is recycled only when all its output copies are dormant.
Reference options: ``zero_bias=False``, ``reset_optimizer=False`` give the June reference's recycling."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.interventions.surgery import every, reset_opt_state
from plasticine_jax.metrics.units import dormant_mask
from plasticine_jax.nets.activations import USES_ABS
from plasticine_jax.nets.structure import (
    get_path,
    output_mask,
    producer_mask_from_outputs,
    set_path,
    unit_mask_for,
)


@dataclass(frozen=True)
class Options:
    tau: float = 0.025  # dormancy threshold (vmappable: redo.tau)
    frequency: int = 10  # updates between recycling steps (reference: every 10 iterations)
    formula: str = "redo"  # redo (paper score) | june (the reference's per-sample score)
    zero_bias: bool = True  # paper: incoming bias <- 0; the reference keeps it
    reset_optimizer: bool = True  # paper: zero Adam moments of touched weights; the reference does not


def recycle(ctx, params: dict, opt_state, acts: dict, fresh: dict, tau, opts: Options):
    """Pure recycling step. Returns (params, opt_state, {group name: producer dormant mask})."""
    touched = jax.tree.map(lambda x: jnp.zeros(x.shape, bool), params)
    masks = {}
    for g in ctx.network.groups:
        if not g.recyclable:
            continue
        dead_out = dormant_mask(acts[g.name], tau, opts.formula, USES_ABS[g.activation])
        dead = producer_mask_from_outputs(g, dead_out)
        masks[g.name] = dead
        for ref in g.producers:
            old = get_path(params, ref.path)
            m = unit_mask_for(ref, old.shape, dead)
            if ref.reset_value is not None:
                new = jnp.full_like(old, ref.reset_value)
            elif ref.path[-1] == "bias":
                if not opts.zero_bias:  # the reference keeps the bias (and so its optimizer moments)
                    continue
                new = jnp.zeros_like(old)
            else:
                new = get_path(fresh, ref.path)
            params = set_path(params, ref.path, jnp.where(m, new, old))
            touched = set_path(touched, ref.path, get_path(touched, ref.path) | m)
        out_units = output_mask(g, dead)
        for ref in g.consumers:
            old = get_path(params, ref.path)
            m = unit_mask_for(ref, old.shape, out_units)
            params = set_path(params, ref.path, jnp.where(m, 0.0, old))
            touched = set_path(touched, ref.path, get_path(touched, ref.path) | m)
    if opts.reset_optimizer:
        opt_state = reset_opt_state(opt_state, params, touched)
    return params, opt_state, masks


def make(opts: Options) -> Intervention:
    if opts.formula not in ("redo", "june"):
        raise ConfigError(f"--redo.formula must be redo or june (got {opts.formula})")
    if opts.frequency < 1:
        raise ConfigError(f"--redo.frequency must be >= 1 update (got {opts.frequency})")

    def fire(ctx, learner, key, obs):
        _, acts = ctx.network.apply_with_activations(learner.params, learner.net_state, obs)
        params, opt_state, _ = recycle(ctx, learner.params, learner.opt_state, acts, ctx.fresh_params(key),
                                       learner.hp["redo.tau"], opts)
        return learner.replace(params=params, opt_state=opt_state)

    def after_update(ctx, learner, key, update_idx, obs):
        return jax.lax.cond(every(opts.frequency, update_idx), lambda lr: fire(ctx, lr, key, obs), lambda lr: lr,
                            learner)

    return Intervention("redo", order=50, hparams={"tau": opts.tau}, after_update=after_update)
