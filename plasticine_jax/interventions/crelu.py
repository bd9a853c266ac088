"""Concatenated ReLU (Abbas et al. 2023): every hidden activation becomes concat(relu(x), relu(-x)).
Widths of the producing layers are kept, so the next layer's fan-in doubles (as the reference)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from plasticine_jax.interventions.base import Intervention


@dataclass(frozen=True)
class Options:
    pass


def make(opts: Options) -> Intervention:
    return Intervention("crelu", order=1, activation="crelu",
                        transform_net=lambda c: replace(c, activation="crelu"))
