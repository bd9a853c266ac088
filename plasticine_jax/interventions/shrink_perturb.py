"""Shrink & Perturb (Ash & Adams 2020): theta <- lambda * theta + (1 - lambda) * phi on every parameter.

``target`` picks phi: ``fresh`` (a new sample of the original initialisation each call, the June
reference), ``init`` (theta_0, the newest reference: a pull toward the initial weights), or ``noise``
(the paper's form: theta <- lambda * theta + sigma * eps, eps ~ N(0, 1)). ``mode=soft`` applies it after
every optimizer step (reference default), ``hard`` every ``frequency`` updates. lambda = 0.999999 per
minibatch (the reference's value) is nearly a no-op; it is exposed and vmappable (snp.coef).

Continual runs: ``on_task_switch`` applies it once more at every task switch, whatever the mode (Ash & Adams'
warm-start setting: shrink and perturb the weights trained on the old data before training on the new).
``mode=hard, frequency=0`` turns the periodic application off, so only the switches apply it; ``coef`` is then
the weight kept by one application (well below the reference's per-step 0.999999, which would do nothing)."""

from __future__ import annotations

from dataclasses import dataclass

import jax

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.interventions.surgery import every, where_tree


@dataclass(frozen=True)
class Options:
    coef: float = 0.999999  # lambda, the shrink factor (vmappable: snp.coef)
    sigma: float = 0.01  # noise std for target=noise (vmappable: snp.sigma)
    target: str = "fresh"  # fresh (reference R) | init (reference N) | noise (paper)
    mode: str = "soft"  # soft: after every optimizer step | hard: every `frequency` updates
    frequency: int = 10  # updates between hard applications; 0 (hard mode): none
    on_task_switch: bool = False  # also apply once at every task switch of a continual run (warm start)


def shrink_perturb(params, phi, coef):
    """lambda * theta + (1 - lambda) * phi, leafwise."""
    return jax.tree.map(lambda p, f: coef * p + (1.0 - coef) * f, params, phi)


def make(opts: Options) -> Intervention:
    if opts.target not in ("fresh", "init", "noise"):
        raise ConfigError(f"--snp.target must be fresh, init or noise (got {opts.target})")
    if opts.mode not in ("soft", "hard"):
        raise ConfigError(f"--snp.mode must be soft or hard (got {opts.mode})")

    if not 0.0 <= opts.coef <= 1.0:
        raise ConfigError(f"--snp.coef must be in [0, 1] (got {opts.coef}): it is the weight kept of theta")
    if opts.sigma < 0:
        raise ConfigError(f"--snp.sigma must be >= 0 (got {opts.sigma})")
    if opts.mode == "hard" and opts.frequency < 0:
        raise ConfigError(f"--snp.frequency must be >= 0 updates (0 = no periodic application) "
                          f"(got {opts.frequency})")
    if opts.mode == "hard" and opts.frequency == 0 and not opts.on_task_switch:
        raise ConfigError("--snp.frequency 0 in --snp.mode hard without --snp.on-task-switch never applies "
                          "shrink & perturb; give a period >= 1 or add --snp.on-task-switch")

    def init(ctx, unit, key):
        state = {"theta0": unit.params} if opts.target == "init" else {}
        return unit.replace(istate={**unit.istate, "shrink_perturb": state})

    def apply(ctx, unit, key):
        coef = unit.hp["shrink_perturb.coef"]
        if opts.target == "noise":
            leaves, treedef = jax.tree.flatten(unit.params)
            keys = jax.random.split(key, len(leaves))
            noise = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
            sigma = unit.hp["shrink_perturb.sigma"]
            params = jax.tree.map(lambda p, n: coef * p + sigma * n, unit.params, jax.tree.unflatten(treedef, noise))
        else:
            phi = ctx.fresh_params(key) if opts.target == "fresh" else unit.istate["shrink_perturb"]["theta0"]
            params = shrink_perturb(unit.params, phi, coef)
        keep = ctx.network.mask(params, ctx.network.is_frozen_copy)  # never move injection's frozen copy
        return unit.replace(params=where_tree(keep, unit.params, params))

    def after_update(ctx, unit, key, update_idx, acts):
        return jax.lax.cond(every(opts.frequency, update_idx), lambda u: apply(ctx, u, key), lambda u: u, unit)

    def on_task_switch(ctx, unit, key, task, acts):
        return apply(ctx, unit, key)

    soft = opts.mode == "soft"
    periodic = not soft and opts.frequency > 0
    return Intervention("shrink_perturb", order=40, hparams={"coef": opts.coef, "sigma": opts.sigma}, init=init,
                        after_step=apply if soft else None, after_update=after_update if periodic else None,
                        on_task_switch=on_task_switch if opts.on_task_switch else None,
                        task_flags=("--snp.on-task-switch",) if opts.on_task_switch else (),
                        schedules=(("--snp.frequency", opts.frequency),) if periodic else ())


