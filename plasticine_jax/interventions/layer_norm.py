"""LayerNorm before every hidden nonlinearity (Lyle et al. 2024). Pure architecture change.

Reference placement differs per family (§3.5); ours is uniform: Dense/Conv -> LayerNorm -> activation
(channel-wise for convs; IMPALA: before each ResBlock ReLU and the final Dense's ReLU)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from plasticine_jax.interventions.base import Intervention


@dataclass(frozen=True)
class Options:
    eps: float = 1e-5  # LayerNorm epsilon (torch default)


def make(opts: Options) -> Intervention:
    return Intervention("layer_norm", order=0, transform_net=lambda c: replace(c, layer_norm=True, ln_eps=opts.eps))
