"""TRAC (Muppidi et al. 2024): a parameter-free scaling of the base optimizer's iterate around theta_0
(``optim.trac.trac``). It wraps each unit's Adam and sees the clipped gradients, as in the reference. The
reference passed TRAC's eps where Adam's was meant in some scripts (§3.11); here each keeps its own.
``x_mode``: ``official`` (default: the authors' algorithm in exact arithmetic, x erased whenever S <= 0),
``keep`` (x never erased) or ``reconstruct`` (the literal float32 reconstruction of x from theta).

Composition with interventions that edit parameters outside the optimizer (SnP, ReDo, resets, injection,
NaP): with an explicit x (official, keep) TRAC rebuilds theta_{t+1} = theta_ref + x * S from its own state,
which would silently undo any such edit at the next step. ``follow_edits`` (default) re-anchors theta_ref on
the current params before each step (theta_ref = theta_t - x_t * max(S_{t-1}, 0)); without edits that equals the stored
theta_ref up to float rounding, so the step is TRAC's, and with edits the step is added to the edited params."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.optim.trac import X_MODES, TracState, trac


@dataclass(frozen=True)
class Options:
    s_prev: float = 1e-8  # initial scale prefactor
    eps: float = 1e-8  # TRAC's own epsilon
    x_mode: str = "official"  # official (reference, exact arithmetic) | keep (x never erased) | reconstruct (literal)
    follow_edits: bool = True  # keep parameter edits made by other interventions (see the module docstring)


def follow_edits(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Wrap a ``trac`` with an explicit x so its reference point follows the params it is given (edits are
    kept)."""

    def update(updates: Any, state: TracState, params: Any = None, **extra: Any):
        if params is not None and state.x is not None:
            mult = jnp.maximum(state.scale, 0.0)
            ref = jax.tree.map(lambda p, x: p - x * mult.astype(x.dtype), params, state.x)
            state = state._replace(theta_ref=ref)
        return inner.update(updates, state, params, **extra)

    return optax.GradientTransformationExtraArgs(inner.init, update)


def make(opts: Options) -> Intervention:
    if opts.x_mode not in X_MODES:
        raise ConfigError(f"--trac.x-mode must be one of {', '.join(X_MODES)} (got {opts.x_mode!r})")
    if opts.eps <= 0 or opts.s_prev <= 0:
        raise ConfigError(f"--trac.eps and --trac.s-prev must be > 0 (got {opts.eps}, {opts.s_prev})")

    def wrap(tx, hp):
        t = trac(tx, s_prev=opts.s_prev, eps=opts.eps, x_mode=opts.x_mode)
        return follow_edits(t) if (opts.x_mode != "reconstruct" and opts.follow_edits) else t

    return Intervention("trac", order=30, wrap_base=wrap)
