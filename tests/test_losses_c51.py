"""C51 pure functions (reference §1.5, CleanRL c51) against independent NumPy references: a per-sample,
per-atom projection loop with explicit l == u handling, mass conservation, hand-computed examples, the clamped
cross-entropy with its stopped target gradient, and Q = Σ softmax · z."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from plasticine_jax.algos.c51_losses import c51_loss, categorical_projection, make_support, q_values


def _np_projection(next_pmf, rewards, dones, gamma, support):
    """One sample, one atom at a time (float64)."""
    B, K = next_pmf.shape
    v_min, v_max = support[0], support[-1]
    dz = support[1] - support[0]
    out = np.zeros((B, K))
    for i in range(B):
        for j in range(K):
            tz = rewards[i] + gamma * (1.0 - dones[i]) * support[j]
            tz = min(max(tz, v_min), v_max)
            b = (tz - v_min) / dz
            lo = min(max(math.floor(b), 0), K - 1)
            hi = min(max(math.ceil(b), 0), K - 1)
            p = next_pmf[i, j]
            if lo == hi:  # b on an atom: all the mass goes there
                out[i, lo] += p
            else:
                out[i, lo] += (hi - b) * p
                out[i, hi] += (b - lo) * p
    return out


def _random_pmf(rng, shape):
    x = rng.normal(size=shape) * 2.0
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _project(next_pmf, rewards, dones, gamma, support):
    out = categorical_projection(
        jnp.asarray(next_pmf, jnp.float32),
        jnp.asarray(rewards, jnp.float32),
        jnp.asarray(dones),
        gamma,
        jnp.asarray(support, jnp.float32),
    )
    return np.asarray(out, np.float64)


def test_projection_matches_loop_and_conserves_mass():
    rng = np.random.default_rng(0)
    B, K = 64, 51
    support = np.linspace(-10.0, 10.0, K)
    next_pmf = _random_pmf(rng, (B, K))
    rewards = rng.normal(size=B) * 3.0
    rewards[:4] = [25.0, -25.0, 0.0, 9.9]  # clamped at both ends, exact atoms, near the edge
    dones = (rng.random(B) < 0.3).astype(np.float64)
    gamma = 0.99
    out = _project(next_pmf, rewards, dones, gamma, support)
    # float32 vs float64 arithmetic moves b by ~1e-6 atoms, so near-integer b may split a mass differently
    ref = _np_projection(next_pmf, rewards, dones, gamma, support)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    assert out.min() >= -1e-6
    # rewards +-25 clamp every atom to the edge
    np.testing.assert_allclose(out[0, -1], 1.0, atol=1e-5)
    np.testing.assert_allclose(out[1, 0], 1.0, atol=1e-5)


def test_projection_hand_example_with_exact_atoms():
    """support (-1, 0, 1), p = (0.2, 0.3, 0.5), r = 0.5, gamma = 1:
    Tz = (-0.5, 0.5, 1.5 -> 1), b = (0.5, 1.5, 2): atom 0 splits 0.1/0.1 into (0, 1), atom 1 splits 0.15/0.15
    into (1, 2), atom 2 lands exactly on atom 2 (l == u) and keeps all of its 0.5 -> (0.1, 0.25, 0.65)."""
    out = _project(np.array([[0.2, 0.3, 0.5]]), np.array([0.5]), np.array([0.0]), 1.0, np.array([-1.0, 0.0, 1.0]))
    np.testing.assert_allclose(out[0], [0.1, 0.25, 0.65], atol=1e-6)


def test_projection_identity_and_terminal():
    rng = np.random.default_rng(1)
    support = np.arange(-3.0, 4.0)  # 7 exact atoms, spacing 1
    p = _random_pmf(rng, (3, 7))
    # r = 0, gamma = 1, not done: every b is an exact atom -> identity (needs the l == u fix)
    out = _project(p, np.zeros(3), np.zeros(3), 1.0, support)
    np.testing.assert_allclose(out, p, atol=1e-6)
    # r = 1: shift by one atom, the top atom's mass piles up at v_max
    out = _project(p, np.ones(3), np.zeros(3), 1.0, support)
    np.testing.assert_allclose(out[:, 1:-1], p[:, :-2], atol=1e-6)
    np.testing.assert_allclose(out[:, -1], p[:, -2] + p[:, -1], atol=1e-6)
    assert np.all(out[:, 0] == 0.0)
    # terminal: all mass at r (a Dirac, split between the two neighbouring atoms when off-grid)
    out = _project(p, np.array([0.0, 1.25, -2.5]), np.ones(3), 0.99, support)
    np.testing.assert_allclose(out[0], np.eye(7)[3], atol=1e-6)
    np.testing.assert_allclose(out[1], 0.75 * np.eye(7)[4] + 0.25 * np.eye(7)[5], atol=1e-6)
    np.testing.assert_allclose(out[2], 0.5 * np.eye(7)[0] + 0.5 * np.eye(7)[1], atol=1e-6)


def test_projection_jit_with_traced_gamma():
    rng = np.random.default_rng(2)
    support = make_support(-10.0, 10.0, 51)
    np.testing.assert_allclose(np.asarray(support), np.linspace(-10, 10, 51), atol=1e-6)
    p = _random_pmf(rng, (8, 51))
    r = rng.normal(size=8)
    d = rng.random(8) < 0.5
    f = jax.jit(categorical_projection)
    out = f(jnp.asarray(p, jnp.float32), jnp.asarray(r, jnp.float32), jnp.asarray(d), jnp.float32(0.9), support)
    ref = _np_projection(p, r, d.astype(np.float64), 0.9, np.asarray(support, np.float64))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)


def _np_c51_loss(logits, target):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    pmf = e / e.sum(-1, keepdims=True)
    return np.mean(-np.sum(target * np.log(np.clip(pmf, 1e-5, 1 - 1e-5)), axis=-1))


def test_c51_loss_value_clamp_and_stopped_target():
    rng = np.random.default_rng(3)
    B, K = 16, 11
    logits = rng.normal(size=(B, K)) * 2.0
    logits[0] = -40.0
    logits[0, 0] = 40.0  # pmf ~ (1, 0, ..., 0): both clamps active
    target = _random_pmf(rng, (B, K))
    lj, tj = jnp.asarray(logits, jnp.float32), jnp.asarray(target, jnp.float32)
    np.testing.assert_allclose(float(c51_loss(lj, tj)), _np_c51_loss(logits, target), rtol=1e-5)
    # row 0 alone: -Σ t log(clamped) = -(t0 log(1 - 1e-5) + (1 - t0) log 1e-5), finite
    row0 = float(c51_loss(lj[:1], tj[:1]))
    t0 = target[0, 0]
    np.testing.assert_allclose(row0, -(t0 * np.log(1 - 1e-5) + (1 - t0) * np.log(1e-5)), rtol=1e-5)

    g_logits, g_target = jax.grad(c51_loss, argnums=(0, 1))(lj, tj)
    assert np.all(np.asarray(g_target) == 0.0)
    # unclamped rows: d/dlogits of mean CE = (softmax - target) / B
    e = np.exp(logits[1:] - logits[1:].max(-1, keepdims=True))
    pmf = e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(g_logits)[1:], (pmf - target[1:]) / B, atol=1e-6)


def test_q_values():
    rng = np.random.default_rng(4)
    support = np.linspace(-10.0, 10.0, 51)
    logits = rng.normal(size=(5, 4, 51))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    ref = np.einsum("bak,k->ba", e / e.sum(-1, keepdims=True), support)
    out = q_values(jnp.asarray(logits, jnp.float32), jnp.asarray(support, jnp.float32))
    assert out.shape == (5, 4)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(q_values(jnp.asarray(logits[0], jnp.float32), jnp.asarray(support, jnp.float32))), ref[0], atol=1e-5
    )
