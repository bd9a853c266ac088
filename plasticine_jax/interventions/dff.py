"""Deep Fourier features (Lewandowski et al. 2024): every hidden activation becomes concat(sin x, cos x).
Widths of the producing layers are kept, so the next layer's fan-in doubles (as the reference)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from plasticine_jax.interventions.base import Intervention


@dataclass(frozen=True)
class Options:
    pass


def make(opts: Options) -> Intervention:
    return Intervention("dff", order=1, activation="dff", transform_net=lambda c: replace(c, activation="dff"))
