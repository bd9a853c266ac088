"""TRAC (Muppidi et al. 2024): a parameter-free scaling of the base optimizer's iterate around theta_0
(``trac_optimizer.trac``). It wraps Adam and sees the clipped gradients, as in the reference. The reference
passed TRAC's eps where Adam's was meant in some scripts (§3.11); here each keeps its own."""

from __future__ import annotations

from dataclasses import dataclass

from plasticine_jax.interventions.base import Intervention
from plasticine_jax.interventions.trac_optimizer import trac


@dataclass(frozen=True)
class Options:
    s_prev: float = 1e-8  # initial scale prefactor
    eps: float = 1e-8  # TRAC's own epsilon
    keep_x: bool = True  # keep the base iterate explicitly (paper); False = rebuild from theta (reference)


def make(opts: Options) -> Intervention:
    return Intervention("trac", order=30,
                        wrap_base=lambda tx, hp: trac(tx, s_prev=opts.s_prev, eps=opts.eps, keep_x=opts.keep_x))
