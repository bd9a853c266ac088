"""ReDo: recycle dormant neurons (Sokar et al. 2023), generic over any network's declared neuron structure.

Every ``frequency`` updates, on the metric batch: score every recyclable hidden unit (ReDo score
s_i = E|a_i| / mean_j E|a_j|, or the reference's per-sample formula), and for units with s <= tau
re-sample their incoming weights from the layer's own initializer, set their incoming bias to 0 (LayerNorm
scale/offset to 1/0), zero their outgoing weights in *every* consumer (both heads of a shared torso; the
conv->dense flatten is NHWC-tiled) and zero the optimizer moments of all touched entries. Heads are never
recycled. A CReLU/DFF unit is recycled only when all its output copies are dormant. Works on every unit of
every learner (policy, value, Q, twin critics); the touched entries are mirrored into the target network
where the unit has one (``mirror_target``). The activations are the learner's, computed once per update on
its metric batch and shared with the plasticity metrics.
Reference options: ``zero_bias=False``, ``reset_optimizer=False`` give the June reference's recycling.

Continual runs: ``on_task_switch`` also recycles at every task switch, scoring the activations of the ending
task's last update (the hook asks the learner for them: ``switch_activations``), so units that went dormant on
the old task are fresh for the new one. ``frequency=0`` turns periodic recycling off (and asks for no
periodic activations). The newest reference fires every N_task // 10 updates: pass that as ``frequency``."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.interventions.surgery import every, mirror_target, reset_opt_state
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
    frequency: int = 10  # updates between recycling steps (reference: every 10 iterations); 0: none
    formula: str = "redo"  # redo (paper score) | june (the reference's per-sample score)
    zero_bias: bool = True  # paper: incoming bias <- 0; the reference keeps it
    reset_optimizer: bool = True  # paper: zero Adam moments of touched weights; the reference does not
    mirror_target: bool = True  # copy the touched entries into the target network (TD3/SAC/C51)
    on_task_switch: bool = False  # also recycle at every task switch, on the ending task's last activations


def recycle(ctx, params: dict, opt_state, acts: dict, fresh: dict, tau, opts: Options):
    """Pure recycling step. Returns (params, opt_state, {group name: producer dormant mask}, touched mask)."""
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
        opt_state = reset_opt_state(ctx.tx, opt_state, touched)
    return params, opt_state, masks, touched


def make(opts: Options) -> Intervention:
    if opts.formula not in ("redo", "june"):
        raise ConfigError(f"--redo.formula must be redo or june (got {opts.formula})")
    if opts.frequency < 0:
        raise ConfigError(f"--redo.frequency must be >= 0 updates (0 = no periodic recycling) (got {opts.frequency})")
    if opts.frequency == 0 and not opts.on_task_switch:
        raise ConfigError("--redo.frequency 0 without --redo.on-task-switch never recycles anything; give a "
                          "period >= 1 or add --redo.on-task-switch")
    if not 0.0 <= opts.tau < 1.0:
        raise ConfigError(f"--redo.tau must be in [0, 1) (got {opts.tau}): units scoring <= tau are recycled")

    def fire(ctx, unit, key, acts):
        params, opt_state, _, touched = recycle(ctx, unit.params, unit.opt_state, acts, ctx.fresh_params(key),
                                                unit.hp["redo.tau"], opts)
        unit = unit.replace(params=params, opt_state=opt_state)
        return mirror_target(unit, touched) if opts.mirror_target else unit

    def after_update(ctx, unit, key, update_idx, acts):
        return jax.lax.cond(every(opts.frequency, update_idx), lambda u: fire(ctx, u, key, acts), lambda u: u, unit)

    def on_task_switch(ctx, unit, key, task, acts):
        return fire(ctx, unit, key, acts)

    periodic = opts.frequency > 0  # activation_every must never hold 0 (activations_due takes it modulo)
    return Intervention("redo", order=50, hparams={"tau": opts.tau},
                        after_update=after_update if periodic else None,
                        on_task_switch=on_task_switch if opts.on_task_switch else None,
                        switch_activations=opts.on_task_switch,
                        task_flags=("--redo.on-task-switch",) if opts.on_task_switch else (),
                        activation_every=(opts.frequency,) if periodic else (),
                        schedules=(("--redo.frequency", opts.frequency),) if periodic else ())
