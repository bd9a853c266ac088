"""PSGD-Kron (reference §3.12) as a self-contained optax transform whose PRNG key lives in the opt state.

``psgd_jax.kron`` (the JAX port by the kron_torch author) draws its randomness from
``fold_in(PRNGKey(5318008), count)``, identical for every seed of a vmapped run, and psgd_jax 0.2.9 does
not even import with optax >= 0.2.5 (``optax._src.clipping`` is gone). This module is an independent
implementation of the same algorithm (Li's Kronecker-factored PSGD with psgd_jax 0.2.9's defaults and
step structure) whose per-step key is ``fold_in(state.key, count)``, so seeds draw different probes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import tree_utils as otu

from plasticine_jax.optim.state import find_state

__all__ = [
    "PSGD_JAX_KEY",
    "KronState",
    "kron",
    "kron_state",
    "precond_update_prob_schedule",
    "scale_by_kron",
    "set_kron_key",
]

PSGD_JAX_KEY = np.array([0, 5318008], np.uint32)  # == jax.random.PRNGKey(5318008) (threefry raw key data)
"""psgd_jax's constant key (it folds the step count into it); ``key=PSGD_JAX_KEY`` reproduces psgd_jax."""

ScalarOrSchedule = float | Callable[[jax.Array], jax.Array]


def precond_update_prob_schedule(
    max_prob: float = 1.0, min_prob: float = 0.03, decay: float = 0.001, flat_start: float = 500
) -> Callable[[jax.Array], jax.Array]:
    """Update probability p(n) = clip(max_prob exp(-decay (n - flat_start)), min_prob, max_prob).

    Defaults = psgd_jax 0.2.9: 1.0 for the first 500 steps, then exponential decay to 0.03 at step ~4000.
    (psgd_jax's docstring says 250 steps; kron_torch releases used flat_start 200, 250 or 500.)
    """

    def schedule(n: jax.Array) -> jax.Array:
        return jnp.minimum(jnp.maximum(max_prob * jnp.exp(-decay * (n - flat_start)), min_prob), max_prob)

    return schedule


class KronState(NamedTuple):
    """State of :func:`scale_by_kron`.

    ``key`` is raw uint32 key data; step t (0-based) uses ``fold_in(key, t)``, so the key never changes.
    ``Qs_preconditioners`` mirrors the params tree with a list of Kronecker factors per leaf: an (n, n)
    upper-triangular matrix or an (n,) diagonal per tensor dimension, a single scalar for a scalar leaf.
    """

    count: jax.Array  # () int32
    key: jax.Array  # (2,) uint32 raw PRNG key data
    mu: Any  # momentum (None when b1 == 0)
    Qs_preconditioners: Any
    update_counter: jax.Array  # () int32, steps since the last preconditioner update


# ---------------------------------------------------------------------------------------------------------
# Kronecker-factor algebra on one tensor. "Apply M along axis i" = mode-i product: contract M's second index
# with axis i of X (for a diagonal factor: scale axis i elementwise).
# ---------------------------------------------------------------------------------------------------------


def _is_diag(q: jax.Array) -> bool:
    return q.ndim < 2


def _bcast(d: jax.Array, axis: int, ndim: int) -> jax.Array:
    shape = [1] * ndim
    shape[axis] = d.shape[0]
    return d.reshape(shape)


def _mode_mul(m: jax.Array, x: jax.Array, axis: int) -> jax.Array:
    """m (n, n) times x along ``axis``: out[.., a, ..] = sum_b m[a, b] x[.., b, ..]."""
    return jnp.moveaxis(jnp.tensordot(m, x, axes=(1, axis)), 0, axis)


def _gram(x: jax.Array, axis: int, diag: bool) -> jax.Array:
    """Mode-``axis`` Gram matrix X_(i) X_(i)^T of x (its diagonal when ``diag``)."""
    others = tuple(a for a in range(x.ndim) if a != axis)
    if diag:
        return jnp.sum(x * x, axis=others)
    return jnp.tensordot(x, x, axes=(others, others))


@jax.custom_batching.sequential_vmap
def _triangular_solve_right_upper(q: jax.Array, b: jax.Array) -> jax.Array:
    """b Q^{-1} for upper-triangular Q. Under vmap it loops over the batch: jaxlib's batched CPU solve
    waits on the intra-op pool it occupies, and two at once hang a 2-core machine (see nets.agent)."""
    return jax.lax.linalg.triangular_solve(q, b, left_side=False, lower=False)


def _solve_right_upper(x: jax.Array, q: jax.Array, axis: int) -> jax.Array:
    """(Q^{-1})^T along ``axis``: each mode-``axis`` fibre v becomes v Q^{-1} (triangular solve, Q upper)."""
    moved = jnp.moveaxis(x, axis, -1)
    flat = moved.reshape(-1, q.shape[0])
    sol = _triangular_solve_right_upper(q, flat.astype(q.dtype))
    return jnp.moveaxis(sol.reshape(moved.shape), -1, axis)


def _norm_lower_bound(a: jax.Array) -> jax.Array:
    """Cheap lower bound on the spectral norm of a symmetric matrix (a power step from its largest column)."""
    m = jnp.max(jnp.abs(a))
    b = a / jnp.where(m > 0, m, 1.0)
    j = jnp.argmax(jnp.sum(b * b, axis=0))
    y = b @ b[:, j]
    y = y / jnp.maximum(jnp.linalg.norm(y), jnp.finfo(a.dtype).tiny)
    return jnp.where(m > 0, m * jnp.linalg.norm(b @ y), m)


def _init_factors(
    shape: tuple[int, ...], scale: float, max_size: int, min_ndim: int, mode: str | None, dtype
):
    if len(shape) == 0:
        return [jnp.asarray(scale, dtype)]
    s = scale ** (1.0 / len(shape))
    if mode is None:
        diag = [False] * len(shape)
    elif mode == "one_diag":
        diag = [False] * len(shape)
        diag[max(range(len(shape)), key=lambda i: (shape[i], i))] = True  # largest dim (last on ties)
    elif mode == "all_diag":
        diag = [True] * len(shape)
    else:
        raise ValueError(f"memory_save_mode must be None, 'one_diag' or 'all_diag', got {mode!r}")
    factors = []
    for n, d in zip(shape, diag, strict=True):
        if d or n == 1 or n > max_size or len(shape) < min_ndim:
            factors.append(s * jnp.ones((n,), dtype))
        else:
            factors.append(s * jnp.eye(n, dtype=dtype))
    return factors


def _precondition(qs: list[jax.Array], g: jax.Array) -> jax.Array:
    """P g with P = kron_i(Q_i^T Q_i)."""
    if g.ndim == 0:
        return qs[0] * qs[0] * g
    out = g
    for i, q in enumerate(qs):
        out = out * _bcast(q * q, i, g.ndim) if _is_diag(q) else _mode_mul(q.T @ q, out, i)
    return out


def _fit_step(qs: list[jax.Array], g: jax.Array, v: jax.Array, lr: float) -> list[jax.Array]:
    """One step of Li's Kronecker-factored fit of Q so that P = Q^T Q whitens g (probe v, ``A = Q g``)."""
    if g.ndim == 0:
        q = qs[0]
        a, b = q * g, v / q
        t1, t2 = a * a, b * b
        return [q - lr * (t1 - t2) * q / (jnp.abs(t1 + t2) + jnp.finfo(q.dtype).tiny)]
    a, b = g, v
    for i, q in enumerate(qs):  # A = Q g,  B = Q^{-T} v
        if _is_diag(q):
            a = a * _bcast(q, i, g.ndim)
            b = b / _bcast(q, i, g.ndim)
        else:
            a = _mode_mul(q, a, i)
            b = _solve_right_upper(b, q, i)
    new = []
    for i, q in enumerate(qs):
        diag = _is_diag(q)
        t1, t2 = _gram(a, i, diag), _gram(b, i, diag)
        tiny = jnp.finfo(q.dtype).tiny
        if diag:
            new.append(q - lr * (t1 - t2) * q / (jnp.max(jnp.abs(t1 + t2)) + tiny))
        else:
            step = jnp.triu(lr * (t1 - t2)) / (_norm_lower_bound(t1 + t2) + tiny)
            new.append(q - step @ q)
    return new


def _balance(qs: list[jax.Array]) -> list[jax.Array]:
    """Rescale a leaf's factors to a common max-abs (their geometric mean); the product is unchanged."""
    if len(qs) < 2:
        return qs
    norms = jnp.stack([jnp.max(jnp.abs(q)).astype(jnp.float32) for q in qs])
    gmean = jnp.prod(norms) ** (1.0 / len(qs))
    return [q * (gmean / n).astype(q.dtype) for q, n in zip(qs, norms, strict=True)]


def _precision(p: str | None):
    return contextlib.nullcontext() if p is None else jax.default_matmul_precision(p)


def _raw_key(key: jax.Array) -> jax.Array:
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return key.astype(jnp.uint32)


def _key_from_params(params: Any) -> jax.Array:
    """A key that differs whenever the params differ (vmapped seeds): a bit-level hash folded into a key."""
    h = jnp.uint32(0)
    for i, leaf in enumerate(jax.tree.leaves(params)):
        flat = jnp.ravel(jnp.asarray(leaf)).astype(jnp.float32)
        if flat.size == 0:
            continue
        bits = jax.lax.bitcast_convert_type(flat, jnp.uint32)
        w = (jnp.arange(flat.size, dtype=jnp.uint32) * jnp.uint32(2654435761)) | jnp.uint32(1)
        h = (h ^ jnp.sum(bits * w, dtype=jnp.uint32)) * jnp.uint32(16777619) + jnp.uint32(i + 1)
    return jax.random.fold_in(PSGD_JAX_KEY, h)


# ---------------------------------------------------------------------------------------------------------
# optax transforms
# ---------------------------------------------------------------------------------------------------------


def scale_by_kron(
    b1: float = 0.9,
    preconditioner_update_probability: ScalarOrSchedule | None = None,
    key: jax.Array | None = None,
    max_size_triangular: int = 8192,
    min_ndim_triangular: int = 2,
    memory_save_mode: str | None = None,
    momentum_into_precond_update: bool = True,
    preconditioner_lr: float = 0.1,
    preconditioner_init_scale: float = 1.0,
    mu_dtype: Any = None,
    precond_dtype: Any = None,
    precond_update_precision: str | None = "float32",
    precond_grads_precision: str | None = None,
    stochastic_update: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """PSGD-Kron direction (psgd_jax 0.2.9 ``scale_by_kron`` semantics) with the PRNG key in the state.

    Per step: momentum mu (b1, bias-corrected); maybe update the preconditioner factors Q from the
    (momentum) gradient plus a tiny probe-damped perturbation; output P mu with P = kron(Q_i^T Q_i), each
    leaf's RMS capped at 1.1. Triangular factors for dims <= ``max_size_triangular`` of tensors with
    ndim >= ``min_ndim_triangular``, diagonal otherwise (1-D leaves, size-1 or huge dims).

    Args (beyond psgd_jax's; scanned layers / flax Partitioned are not supported):
      key: PRNG key (raw or typed) stored by ``init``. ``None``: derived from a hash of the params given to
        ``init`` (differs across vmapped seeds whenever their params differ). It may be a tracer (optimizer
        built inside the vmapped function); or set it after ``init`` with :func:`set_kron_key`.
      stochastic_update: ``False`` (psgd_jax 0.2.9): update the preconditioner deterministically every
        ceil(1/p) steps. ``True`` (kron_torch): update when a uniform draw < p.
      precond_update_precision: default ``"float32"`` (psgd_jax: ``"tensorfloat32"``): kron_torch uses plain
        float32 matmuls, and TF32 means nothing on CPU. ``None`` = JAX's global default.

    Randomness at step t (key ``k_t = fold_in(key, t)``, split as in psgd_jax): a balancing coin
    (p = 0.01 per preconditioner update), the Gaussian probes V of the fit, and in stochastic mode the
    update coin.
    """
    prob_fn = preconditioner_update_probability
    if prob_fn is None:
        prob_fn = precond_update_prob_schedule()
    fixed_key = None if key is None else _raw_key(key)
    # None -> JAX's default float (float32; float64 under jax_enable_x64), as psgd_jax
    q_dtype = jax.dtypes.canonicalize_dtype(precond_dtype if precond_dtype is not None else jnp.float64)
    init_args = (preconditioner_init_scale, max_size_triangular, min_ndim_triangular, memory_save_mode)

    def init_fn(params: optax.Params) -> KronState:
        mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype), params) if b1 > 0 else None
        leaves, treedef = jax.tree.flatten(params)
        qs = [_init_factors(jnp.shape(p), *init_args, q_dtype) for p in leaves]
        return KronState(
            count=jnp.zeros([], jnp.int32),
            key=_key_from_params(params) if fixed_key is None else fixed_key,
            mu=mu,
            Qs_preconditioners=treedef.unflatten(qs),
            update_counter=jnp.zeros([], jnp.int32),
        )

    def update_fn(
        updates: optax.Updates, state: KronState, params: optax.Params | None = None, **extra_args: Any
    ) -> tuple[optax.Updates, KronState]:
        del params, extra_args
        count = optax.safe_increment(state.count)
        key = jax.random.fold_in(state.key, state.count)
        prob = prob_fn(count) if callable(prob_fn) else prob_fn

        mu, momentum = None, updates
        if state.mu is not None:
            mu = otu.tree_update_moment(updates, state.mu, b1, 1)
            momentum = otu.tree_bias_correction(mu, b1, count)

        grads, treedef = jax.tree.flatten(updates)
        moms = treedef.flatten_up_to(momentum)
        qs = treedef.flatten_up_to(state.Qs_preconditioners)

        def fit(key: jax.Array, qs: list) -> list:
            with _precision(precond_update_precision):
                g_in = moms if momentum_into_precond_update else grads
                key, sub = jax.random.split(key)
                qs = jax.lax.cond(
                    jax.random.uniform(sub) < 0.01, lambda q: [_balance(f) for f in q], lambda q: q, qs
                )
                key, sub = jax.random.split(key)
                probes = [
                    jax.random.normal(k, jnp.shape(g), g.dtype)
                    for k, g in zip(jax.random.split(sub, len(g_in)), g_in, strict=True)
                ]
                damp = math.sqrt(float(jnp.finfo(jnp.float32).eps))
                new = []
                for q, g, v in zip(qs, g_in, probes, strict=True):
                    g = g + (damp * jnp.mean(jnp.abs(g))).astype(g.dtype) * v
                    fitted = _fit_step(q, g, v, preconditioner_lr)
                    new.append([f.astype(o.dtype) for f, o in zip(fitted, q, strict=True)])
                return new

        counter = optax.safe_increment(state.update_counter)
        if stochastic_update:
            do_update = jax.random.uniform(jax.random.fold_in(key, 1)) < prob
        else:
            do_update = counter >= 1.0 / prob
        counter = jnp.where(do_update, 0, counter)
        key, sub = jax.random.split(key)
        qs = jax.lax.cond(do_update, fit, lambda _, q: q, sub, qs)

        with _precision(precond_grads_precision):
            pre = [_precondition(q, m) for q, m in zip(qs, moms, strict=True)]
        # the preconditioned gradient should have RMS ~ 1: cap each leaf's RMS at 1.1
        pre = [u / jnp.maximum(1.0, jnp.sqrt(jnp.mean(jnp.square(jnp.abs(u)))) / 1.1) for u in pre]

        new_state = KronState(
            count=count,
            key=state.key,
            mu=otu.tree_cast(mu, mu_dtype),
            Qs_preconditioners=treedef.unflatten(qs),
            update_counter=counter,
        )
        return treedef.unflatten(pre), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def kron(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    weight_decay: float = 0.0,
    preconditioner_update_probability: ScalarOrSchedule | None = None,
    key: jax.Array | None = None,
    **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    """PSGD-Kron optimizer (the N reference's ``--use_kron_optimizer``) with per-seed randomness.

    ``chain(scale_by_kron, [add_decayed_weights(weight_decay, weight_decay_mask)],
    scale_by_learning_rate(learning_rate))``, as ``psgd_jax.kron``. ``weight_decay_mask`` may be passed in
    ``kwargs``; all other ``kwargs`` go to :func:`scale_by_kron` (``max_size_triangular=8192``,
    ``min_ndim_triangular=2``, ``precond_update_precision="float32"``, ``stochastic_update=False``, ...).

    ``preconditioner_update_probability=None`` -> :func:`precond_update_prob_schedule` (psgd_jax's default:
    1.0 for 500 steps, then exponential decay to 0.03 by step ~4000).

    Per-seed randomness: ``key=None`` derives the key from the params given to ``init`` (distinct per seed
    when the seeds' params differ); pass ``key`` (it may be a tracer), or call :func:`set_kron_key` on the
    state after ``init``, to control it. ``key=PSGD_JAX_KEY`` reproduces ``psgd_jax.kron`` (same draws for
    every seed).
    """
    wd_mask = kwargs.pop("weight_decay_mask", None)
    parts = [
        scale_by_kron(
            b1=b1, preconditioner_update_probability=preconditioner_update_probability, key=key, **kwargs
        )
    ]
    if weight_decay > 0.0:
        parts.append(optax.add_decayed_weights(weight_decay, wd_mask))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


def kron_state(opt_state: Any) -> KronState:
    """The (first) :class:`KronState` inside ``opt_state`` (e.g. a chain's tuple). Raises if absent."""
    return find_state(opt_state, KronState)


def set_kron_key(opt_state: Any, key: jax.Array) -> Any:
    """``opt_state`` with every :class:`KronState`'s key replaced by ``key`` (a per-seed key, under vmap)."""
    raw = _raw_key(key)

    def fix(s: Any) -> Any:
        return s._replace(key=raw) if isinstance(s, KronState) else s

    return jax.tree.map(fix, opt_state, is_leaf=lambda v: isinstance(v, KronState))
