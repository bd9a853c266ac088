"""Shrink & Perturb (Ash & Adams 2020): theta <- lambda * theta + (1 - lambda) * phi on every parameter.

``target`` picks phi: ``fresh`` (a new sample of the original initialisation each call, the June
reference), ``init`` (theta_0, the newest reference: a pull toward the initial weights), or ``noise``
(the paper's form: theta <- lambda * theta + sigma * eps, eps ~ N(0, 1)). ``mode=soft`` applies it after
every optimizer step (reference default), ``hard`` every ``frequency`` updates. lambda = 0.999999 per
minibatch (the reference's value) is nearly a no-op; it is exposed and vmappable (snp.coef)."""

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
    frequency: int = 10  # updates between hard applications


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
    if opts.mode == "hard" and opts.frequency < 1:
        raise ConfigError(f"--snp.frequency must be >= 1 update (got {opts.frequency})")

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

    soft = opts.mode == "soft"
    return Intervention("shrink_perturb", order=40, hparams={"coef": opts.coef, "sigma": opts.sigma}, init=init,
                        after_step=apply if soft else None, after_update=None if soft else after_update,
                        schedules=() if soft else (("--snp.frequency", opts.frequency),))


