"""Kron / PSGD (Li; Walters' kron) replaces Adam as the base optimizer (the newest reference's
``--use_kron_optimizer``). Its random probes use a per-seed key kept in the optimizer state, so vmapped seeds
draw different randomness (psgd_jax's fixed key would make them identical)."""

from __future__ import annotations

from dataclasses import dataclass

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.optim.kron import kron, set_kron_key


@dataclass(frozen=True)
class Options:
    b1: float = 0.9  # momentum
    weight_decay: float = 0.0
    max_size_triangular: int = 8192  # larger dims get diagonal preconditioner factors


def make(opts: Options) -> Intervention:
    def base(lr, hp):
        return kron(lr, b1=opts.b1, weight_decay=opts.weight_decay, max_size_triangular=opts.max_size_triangular)

    if not 0.0 <= opts.b1 < 1.0 or opts.weight_decay < 0 or opts.max_size_triangular < 1:
        raise ConfigError("--kron.b1 must be in [0, 1), --kron.weight-decay >= 0, --kron.max-size-triangular >= 1")

    def init(ctx, unit, key):
        return unit.replace(opt_state=set_kron_key(unit.opt_state, key))

    return Intervention("kron", order=31, base_optimizer=base, init=init)
