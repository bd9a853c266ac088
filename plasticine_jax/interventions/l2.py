"""Coupled L2 regularisation ("l2n"): g <- g + wd * theta after clipping, before Adam's moments, on every
parameter (biases and heads included) -- torch's Adam(weight_decay=wd), not AdamW."""

from __future__ import annotations

from dataclasses import dataclass

import optax

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention


@dataclass(frozen=True)
class Options:
    weight_decay: float = 1e-3  # coupled L2 coefficient (vmappable: l2.weight_decay)


def make(opts: Options) -> Intervention:
    if opts.weight_decay < 0:
        raise ConfigError(f"--l2n.weight-decay must be >= 0 (got {opts.weight_decay})")
    return Intervention("l2", order=20, hparams={"weight_decay": opts.weight_decay},
                        grad_transform=lambda hp: optax.add_decayed_weights(hp["l2.weight_decay"]))
