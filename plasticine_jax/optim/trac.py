"""TRAC (Muppidi et al. 2024) as an optax wrapper: a parameter-free scale S_t on the base optimizer's iterate.

Plasticine's ``start_trac`` state machine (reference §3.11) re-written as a pure, jit/vmap-safe optax
``GradientTransformation``, plus an accurate float32 ``erfi`` (JAX has none).

What the official code does to x, in exact arithmetic. It stores only theta, built at the end of step t-1 as
theta_t = theta_ref + max(S_{t-1}, 0) x_{t-1}, and at step t reconstructs x_t = (theta_t - theta_ref) /
(S_{t-1} + eps) = rho_t x_{t-1} with rho_t = max(S_{t-1}, 0) / (S_{t-1} + eps) (rho = 0 for S <= 0: x erased;
rho = 1/2 at S = eps). ``x_mode="official"`` (default) keeps x explicitly and multiplies it by rho_t each step,
which is that algorithm without the float32 cancellation of theta_t - theta_ref (S ~ 1e-8 early on).
(The authors' optax port ``experimental/jax/trac.py`` omits the clamp: rho = S/(S+eps), theta = theta_ref + S x;
Plasticine copies the PyTorch package, which clamps; this module follows the PyTorch package.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from plasticine_jax.optim.state import find_state

__all__ = [
    "ERFI_MAX_ARG",
    "X_MODES",
    "TracState",
    "dawson",
    "erfi",
    "trac",
    "trac_scale",
    "trac_state",
]

# ---------------------------------------------------------------------------------------------------------
# erfi via the Dawson function
# ---------------------------------------------------------------------------------------------------------

_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_SQRT2 = math.sqrt(2.0)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
# Rybicki's sampling-theorem expansion of the Dawson function (Rybicki 1989; Press et al., Numerical Recipes
# §6.10): D(x) = lim_{h->0} 1/sqrt(pi) * sum_{n odd} exp(-(x - n h)^2) / n. With h = 0.4 and six terms on
# each side the truncation and sampling errors are ~2e-7 relative, below float32 resolution once rounded.
_RYBICKI_H = 0.4
_RYBICKI_N = 6
_RYBICKI_C = tuple(math.exp(-(((2 * i + 1) * _RYBICKI_H) ** 2)) for i in range(_RYBICKI_N))
_SMALL_X = 0.2  # below this a 4-term Maclaurin series of D is exact to float32 precision
_LARGE_X = 50.0  # above this the 3-term asymptotic series 1/(2x) (1 + 1/(2x^2) + 3/(4x^4)) is (error < 1e-10)

X_MODES = ("official", "keep", "reconstruct")
"""Values of :func:`trac`'s ``x_mode``."""

ERFI_MAX_ARG = 9.0
"""TRAC clips the erfi argument to [-ERFI_MAX_ARG, ERFI_MAX_ARG] (erfi(9) ~ 9.4e33, s_j <= ~1e26: finite)."""


def dawson(x: jax.Array) -> jax.Array:
    """Dawson's integral D(x) = exp(-x^2) * int_0^x exp(t^2) dt, for real float inputs (odd function).

    Rybicki's exponentially convergent expansion for 0.2 <= |x| < 50, a Maclaurin series below and the
    asymptotic series above; relative error < 1e-6 in float32 over the whole real line (no overflow: every
    exponent is <= 0.64).
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    dtype = x.dtype
    a = jnp.abs(x)

    # Maclaurin: D(x) = x (1 - 2/3 x^2 (1 - 2/5 x^2 (1 - 2/7 x^2))) + O(x^9)
    a2 = a * a
    small = a * (1.0 - (2.0 / 3.0) * a2 * (1.0 - 0.4 * a2 * (1.0 - (2.0 / 7.0) * a2)))

    # Rybicki: choose the even n0 nearest a/h so that |xp| <= h, then sum the odd samples around it.
    n0 = 2.0 * jnp.round(0.5 * a / _RYBICKI_H)
    xp = a - n0 * _RYBICKI_H
    e1 = jnp.exp(2.0 * xp * _RYBICKI_H)
    e2 = e1 * e1
    d1 = n0 + 1.0
    d2 = n0 - 1.0
    acc = jnp.zeros_like(a)
    for c in _RYBICKI_C:  # unrolled, static length
        acc = acc + c * (e1 / d1 + 1.0 / (d2 * e1))
        d1 = d1 + 2.0
        d2 = d2 - 2.0
        e1 = e1 * e2
    large = _INV_SQRT_PI * jnp.exp(-xp * xp) * acc

    # Asymptotic series for large |x| (Rybicki's n0 would lose the fraction of a/h there); also D(inf) = 0.
    inv = 1.0 / jnp.maximum(a, _LARGE_X)
    inv2 = inv * inv
    asym = 0.5 * inv * (1.0 + inv2 * (0.5 + 0.75 * inv2))

    d = jnp.where(a < _SMALL_X, small, jnp.where(a < _LARGE_X, large, asym)).astype(dtype)
    return jnp.sign(x).astype(dtype) * d


def _two_square(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """a*a = hi + lo exactly (Dekker/Veltkamp split; float32 has a 24-bit mantissa -> split factor 2^12+1)."""
    split = 4097.0 if a.dtype == jnp.float32 else 134217729.0  # 2^12+1 (f32) / 2^27+1 (f64)
    hi = a * a
    c = split * a
    ah = c - (c - a)
    al = a - ah
    lo = ((ah * ah - hi) + 2.0 * ah * al) + al * al
    return hi, lo


def erfi(x: jax.Array) -> jax.Array:
    """Imaginary error function erfi(x) = -i erf(ix) = 2/sqrt(pi) * exp(x^2) * D(x), real float input.

    Accuracy: relative error < 1e-6 in float32 for |x| <= 9.5 (tested against ``scipy.special.erfi``).
    x^2 is formed exactly as hi + lo (double-float) so the exponential does not amplify the rounding of
    x^2 (which alone would cost ~x^2 ulp, i.e. ~5e-6 at x = 9). exp(x^2) is applied as two half-factors so
    intermediate values overflow only where erfi itself does: erfi(x) is +/-inf for |x| >~ 9.54 (float32),
    exactly like the true value rounded to float32. Callers that need finite values must clip the argument
    (TRAC clips at ``ERFI_MAX_ARG``). Pure elementwise jnp: jit/vmap-safe. Not meant to be differentiated.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    a = jnp.minimum(jnp.abs(x), 20.0)  # erfi(20) is already inf in float32; avoids inf - inf in lo
    hi, lo = _two_square(a)
    half = jnp.exp(0.5 * hi)  # exp(hi) = half * half; 0.5*hi is exact
    core = (_TWO_OVER_SQRT_PI * dawson(a)) * (1.0 + lo)  # exp(lo) = 1 + lo to O(lo^2) ~ 1e-14
    out = jnp.sign(x) * ((half * core) * half)
    return jnp.where(jnp.isinf(x), x, out)  # +/-inf -> +/-inf (otherwise inf * 0 = nan)


def _erfi_py(x: float) -> float:
    """Python-float erfi by its Maclaurin series (for the static prefactor; trace-safe, no jnp)."""
    term, total, n = x, x, 0
    while abs(term) > 1e-17 * abs(total):
        n += 1
        term *= x * x / n
        total += term / (2 * n + 1)
    return _TWO_OVER_SQRT_PI * total


# ---------------------------------------------------------------------------------------------------------
# TRAC
# ---------------------------------------------------------------------------------------------------------


class TracState(NamedTuple):
    """State of :func:`trac`.

    ``scale`` is S = sum_j s_j after the last step (0 before the first), the quantity the reference writes
    to ``trac.text`` each step; read it with :func:`trac_scale` (works on a chain containing TRAC).
    ``x`` is the base iterate relative to theta_ref, the one theta was built from: theta = theta_ref +
    max(S, 0) x (``x_mode`` "official" and "keep"; ``None`` for "reconstruct").
    """

    base_state: Any
    theta_ref: Any
    x: Any
    sigma: jax.Array  # (n_betas,) float32, init 1e-8
    variance: jax.Array  # (n_betas,) float32, init 0
    s: jax.Array  # (n_betas,) float32, the per-beta scales s_j of the last step
    scale: jax.Array  # () float32, S = sum_j s_j (S_{t-1} when entering step t); 0 initially
    count: jax.Array  # () int32, number of TRAC steps taken


def trac(
    base: optax.GradientTransformation,
    betas: Sequence[float] = (0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999),
    s_prev: float = 1e-8,
    eps: float = 1e-8,
    x_mode: str = "official",
    max_erfi_arg: float = ERFI_MAX_ARG,
    *,
    keep_x: bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Wrap ``base`` with TRAC (reference §3.11). ``update`` requires ``params`` (= theta_t).

    Per step t, with g_t the incoming (already clipped) gradients and u_t = base update at theta_t:

    1. theta_ref = the params given to ``init``; S_{t-1} = ``state.scale`` (0 before the first step);
    2. x_t = rho_t x_{t-1} with rho_t = max(S_{t-1}, 0) / (S_{t-1} + eps)                [``"official"``],
           x_{t-1}                                                                  [``"keep"``],
           (theta_t - theta_ref) / (S_{t-1} + eps), computed literally from theta   [``"reconstruct"``];
    3. h_t = sum over all leaves of <x_t, g_t>;  x <- x_t + u_t;
    4. for each beta_j: v_j <- beta_j^2 v_j + h_t^2 (init 0);  sigma_j <- beta_j sigma_j - h_t (init 1e-8);
    5. s_j = s_prev / erfi(1/sqrt(2)) * erfi(sigma_j / (sqrt(2) sqrt(v_j) + eps));  S_t = sum_j s_j;
    6. theta_{t+1} = theta_ref + x * max(S_t, 0);  the returned update is theta_{t+1} - theta_t.

    ``x_mode``. The reference stores only theta and reconstructs x each step from it; in exact arithmetic
    that is x_{t-1} times rho_t (see the module docstring): x is halved when S ~ eps and erased whenever
    S <= 0, which lets TRAC restart from theta_ref after a shift of the objective. ``"official"`` (default)
    is exactly that algorithm, but keeps x in the state and applies rho_t, so there is no float32
    cancellation of theta_t - theta_ref (which loses most of x while S ~ 1e-8 and theta_ref != 0).
    ``"keep"`` keeps x unscaled (rho = 1, never erased: the previous default ``keep_x=True``; a deviation
    from the official algorithm that tracks a moving optimum worse). ``"reconstruct"`` is the reference's
    literal float formula (previous ``keep_x=False``; the extra rounding of ``apply_updates`` is of the same
    size as torch's own). ``keep_x`` (deprecated) maps True -> "keep", False -> "reconstruct".
    With "official"/"keep" any change made to the params outside this transform (e.g. a reset) is undone
    at the next step, since theta_{t+1} is rebuilt from theta_ref and x (see
    ``interventions.trac.follow_edits``).

    Overflow: erfi overflows float32 for arguments beyond ~9.5 (possible after long runs of same-signed
    h_t, since |sigma|/sqrt(2v) can grow like sqrt(t/2)); the reference then produces inf/NaN and raises.
    Here the erfi argument is clipped to +/-``max_erfi_arg`` (default 9 -> each s_j <= ~1e26), so S stays
    finite. NaNs are not raised on (no host callbacks under jit); they propagate to ``trac_scale``.

    The Plasticine wiring puts global-norm clipping before this wrapper (``optax.chain(clip, trac(adam))``)
    so g_t is the clipped gradient, as in the reference.
    """
    if keep_x is not None:
        x_mode = "keep" if keep_x else "reconstruct"
    if x_mode not in X_MODES:
        raise ValueError(f"trac: x_mode must be one of {', '.join(X_MODES)} (got {x_mode!r})")
    store_x = x_mode != "reconstruct"
    base = optax.with_extra_args_support(base)
    betas_arr = tuple(float(b) for b in betas)
    n = len(betas_arr)
    prefactor = float(s_prev) / _erfi_py(1.0 / math.sqrt(2.0))
    eps_f = float(eps)

    def init_fn(params: optax.Params) -> TracState:
        zeros = jnp.zeros((n,), jnp.float32)
        return TracState(
            base_state=base.init(params),
            theta_ref=jax.tree.map(jnp.asarray, params),
            x=jax.tree.map(jnp.zeros_like, params) if store_x else None,
            sigma=jnp.full((n,), 1e-8, jnp.float32),
            variance=zeros,
            s=zeros,
            scale=jnp.zeros((), jnp.float32),
            count=jnp.zeros((), jnp.int32),
        )

    def update_fn(
        updates: optax.Updates, state: TracState, params: optax.Params | None = None, **extra_args: Any
    ) -> tuple[optax.Updates, TracState]:
        if params is None:
            raise ValueError("trac: update() needs params (theta_t).")
        grads = updates
        base_updates, base_state = base.update(grads, state.base_state, params, **extra_args)

        if x_mode == "keep":
            x_t = state.x
        elif x_mode == "official":
            # rho_t = max(S,0)/(S+eps); S > 0 implies S + eps > 0, and S <= 0 gives 0 (no 0/0)
            pos = state.scale > 0.0
            rho = jnp.where(pos, state.scale / jnp.where(pos, state.scale + eps_f, 1.0), 0.0)
            x_t = jax.tree.map(lambda xl: xl * rho.astype(xl.dtype), state.x)
        else:
            denom = state.scale + eps_f
            x_t = jax.tree.map(lambda p, r: (p - r) / denom.astype(p.dtype), params, state.theta_ref)

        h = sum(
            jnp.sum(xl.astype(jnp.float32) * gl.astype(jnp.float32))
            for xl, gl in zip(jax.tree.leaves(x_t), jax.tree.leaves(grads), strict=True)
        )
        h = jnp.asarray(h, jnp.float32)
        x_new = jax.tree.map(lambda xl, ul: xl + ul.astype(xl.dtype), x_t, base_updates)

        b = jnp.asarray(betas_arr, jnp.float32)
        variance = b * b * state.variance + h * h
        sigma = b * state.sigma - h
        arg = sigma / (_SQRT2 * jnp.sqrt(variance) + eps_f)
        s = prefactor * erfi(jnp.clip(arg, -max_erfi_arg, max_erfi_arg))
        scale = jnp.sum(s)
        mult = jnp.maximum(scale, 0.0)

        new_params = jax.tree.map(lambda r, xl: r + xl * mult.astype(xl.dtype), state.theta_ref, x_new)
        out = jax.tree.map(lambda new, p: (new - p).astype(p.dtype), new_params, params)
        new_state = TracState(
            base_state=base_state,
            theta_ref=state.theta_ref,
            x=x_new if store_x else None,
            sigma=sigma,
            variance=variance,
            s=s,
            scale=scale,
            count=optax.safe_increment(state.count),
        )
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def trac_state(opt_state: Any) -> TracState:
    """The (first) :class:`TracState` inside ``opt_state`` (e.g. a chain's tuple). Raises if absent."""
    return find_state(opt_state, TracState)


def trac_scale(opt_state: Any) -> jax.Array:
    """TRAC's current scale S_t = sum_j s_j (the value the reference logs) from a (chained) opt state."""
    return trac_state(opt_state).scale
