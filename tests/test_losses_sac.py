"""SAC pure functions (CleanRL sac_continuous_action conventions) against independent NumPy references: the
tanh-Gaussian sample and log-prob (CleanRL formula, and the change-of-variables density checked by finite
differences and by integrating to one), reparameterised gradients, the soft target, the critic / actor /
temperature losses with their stopped gradients, and the log-std squashing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from plasticine_jax.algos.sac_losses import (
    log_std_bounds,
    sac_actor_loss,
    sac_alpha_loss,
    sac_critic_loss,
    sac_critic_target,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
)

B, ACT = 16, 3


def _np_normal_logpdf(x, mu, std):
    return -0.5 * ((x - mu) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)


def test_tanh_gaussian_sample_matches_cleanrl_formula():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(B, ACT)).astype(np.float32)
    log_std = rng.uniform(-2, 0.5, size=(B, ACT)).astype(np.float32)
    scale = np.array([1.0, 2.0, 0.5], np.float32)
    bias = np.array([0.0, 1.0, -0.25], np.float32)
    key = jax.random.key(7)
    action, logp = tanh_gaussian_sample(key, jnp.asarray(mean), jnp.asarray(log_std), scale, bias)
    assert action.shape == (B, ACT) and logp.shape == (B,)
    # noise contract: eps = jax.random.normal(key, mean.shape)
    eps = np.asarray(jax.random.normal(key, (B, ACT)), np.float64)
    std = np.exp(log_std.astype(np.float64))
    x = mean + std * eps
    y = np.tanh(x)
    ref_action = y * scale + bias
    ref_logp = np.sum(_np_normal_logpdf(x, mean, std) - np.log(scale * (1 - y**2) + 1e-6), axis=-1)
    np.testing.assert_allclose(np.asarray(action), ref_action, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logp), ref_logp, rtol=1e-4, atol=1e-4)
    assert np.all(np.abs(np.asarray(action) - bias) <= scale)


def test_tanh_gaussian_log_prob_is_the_density_of_the_action():
    """1-D: log pi(a) = log N(x) + log|dx/da| with x = atanh((a - bias) / scale) (finite differences), and the
    density integrates to one over (bias - scale, bias + scale)."""
    mean, log_std, scale, bias = 0.3, np.log(0.7), 1.5, 0.2
    n = 4096
    m = jnp.full((n, 1), mean, jnp.float32)
    ls = jnp.full((n, 1), log_std, jnp.float32)
    action, logp = tanh_gaussian_sample(jax.random.key(1), m, ls, scale, bias)
    a = np.asarray(action, np.float64)[:, 0]
    keep = np.abs((a - bias) / scale) < 0.99  # away from saturation, where the 1e-6 and atanh dominate
    a, lp = a[keep], np.asarray(logp, np.float64)[keep]
    inv = lambda v: np.arctanh((v - bias) / scale)
    h = 1e-6
    dxda = (inv(a + h) - inv(a - h)) / (2 * h)
    ref = _np_normal_logpdf(inv(a), mean, np.exp(log_std)) + np.log(np.abs(dxda))
    np.testing.assert_allclose(lp, ref, rtol=1e-3, atol=1e-3)

    # integrate exp(log pi(a)) da on a grid of pre-tanh points x (a = tanh(x) scale + bias)
    xs = np.linspace(-8.0, 8.0, 20001)
    lp_grid = np.asarray(tanh_gaussian_log_prob(jnp.asarray(xs[:, None]), mean, log_std, scale), np.float64)
    a_grid = np.tanh(xs) * scale + bias
    integral = np.trapezoid(np.exp(lp_grid), a_grid)
    assert abs(integral - 1.0) < 1e-3, integral


def test_tanh_gaussian_reparameterised_gradient():
    mean = jnp.asarray([[0.1, -0.4]], jnp.float32)
    log_std = jnp.asarray([[-0.5, 0.2]], jnp.float32)
    key = jax.random.key(2)
    scale = 2.0
    eps = np.asarray(jax.random.normal(key, (1, 2)), np.float64)
    g_mean, g_ls = jax.grad(lambda m, s: tanh_gaussian_sample(key, m, s, scale, 0.0)[0].sum(), argnums=(0, 1))(
        mean, log_std
    )
    x = np.asarray(mean, np.float64) + np.exp(np.asarray(log_std, np.float64)) * eps
    d = scale * (1 - np.tanh(x) ** 2)
    np.testing.assert_allclose(np.asarray(g_mean), d, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(g_ls), d * np.exp(np.asarray(log_std, np.float64)) * eps, rtol=1e-4)
    # d logp / d mean: the Gaussian term is constant along the reparameterised path, only the tanh term moves
    g_lp = jax.grad(lambda m: tanh_gaussian_sample(key, m, log_std, scale, 0.0)[1].sum())(mean)
    t = np.tanh(x)
    ref = 2 * t * scale * (1 - t**2) / (scale * (1 - t**2) + 1e-6)  # -d/dx log(scale (1 - tanh^2) + 1e-6)
    np.testing.assert_allclose(np.asarray(g_lp), ref, rtol=1e-4, atol=1e-6)


def test_sac_critic_target():
    rng = np.random.default_rng(3)
    q1, q2, lp, r = (rng.normal(size=B).astype(np.float32) for _ in range(4))
    d = rng.random(B) < 0.3
    gamma, alpha = 0.99, 0.2
    y = sac_critic_target(
        jnp.asarray(q1)[:, None], jnp.asarray(q2)[:, None], jnp.asarray(lp)[:, None], jnp.asarray(r), d, gamma, alpha
    )
    assert y.shape == (B,)
    ref = r + gamma * (1 - d) * (np.minimum(q1, q2) - alpha * lp)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-6)
    f = lambda a, b, c, al: sac_critic_target(a, b, c, jnp.asarray(r), d, gamma, al).sum()
    grads = jax.grad(f, argnums=(0, 1, 2, 3))(jnp.asarray(q1), jnp.asarray(q2), jnp.asarray(lp), jnp.float32(alpha))
    assert all(np.all(np.asarray(g) == 0.0) for g in grads)


def test_sac_critic_loss():
    rng = np.random.default_rng(4)
    q1, q2, y = (rng.normal(size=B).astype(np.float32) for _ in range(3))
    loss, aux = sac_critic_loss(jnp.asarray(q1), jnp.asarray(q2), jnp.asarray(y))
    np.testing.assert_allclose(float(loss), np.mean((q1 - y) ** 2) + np.mean((q2 - y) ** 2), rtol=1e-6)
    np.testing.assert_allclose(float(aux["losses/qf1_loss"]), np.mean((q1 - y) ** 2), rtol=1e-6)
    gy = jax.grad(lambda t: sac_critic_loss(jnp.asarray(q1), jnp.asarray(q2), t)[0])(jnp.asarray(y))
    assert np.all(np.asarray(gy) == 0.0)


def test_sac_actor_loss():
    rng = np.random.default_rng(5)
    lp, q1, q2 = (rng.normal(size=B).astype(np.float32) for _ in range(3))
    alpha = 0.3
    ref = np.mean(alpha * lp - np.minimum(q1, q2))
    out = sac_actor_loss(jnp.asarray(lp)[:, None], jnp.asarray(q1)[:, None], jnp.asarray(q2), alpha)
    np.testing.assert_allclose(float(out), ref, rtol=1e-5)
    g_lp, g_q1, g_q2, g_alpha = jax.grad(sac_actor_loss, argnums=(0, 1, 2, 3))(
        jnp.asarray(lp), jnp.asarray(q1), jnp.asarray(q2), jnp.float32(alpha)
    )
    np.testing.assert_allclose(np.asarray(g_lp), alpha / B, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g_q1), -(q1 < q2).astype(np.float32) / B, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g_q2), -(q2 < q1).astype(np.float32) / B, rtol=1e-6)
    assert float(g_alpha) == 0.0


def test_sac_alpha_loss():
    rng = np.random.default_rng(6)
    lp = rng.normal(size=B).astype(np.float32)
    log_alpha, target_entropy = jnp.float32(-1.2), -float(ACT)
    ref = np.mean(-np.exp(-1.2) * (lp + target_entropy))
    np.testing.assert_allclose(float(sac_alpha_loss(log_alpha, jnp.asarray(lp), target_entropy)), ref, rtol=1e-5)
    g_la, g_lp = jax.grad(sac_alpha_loss, argnums=(0, 1))(log_alpha, jnp.asarray(lp), target_entropy)
    np.testing.assert_allclose(float(g_la), ref, rtol=1e-5)  # d/dla of -e^la c = -e^la c
    assert np.all(np.asarray(g_lp) == 0.0)


def test_log_std_bounds():
    raw = np.array([-50.0, -1.0, 0.0, 0.7, 50.0], np.float32)
    ref = -5.0 + 0.5 * (2.0 - -5.0) * (np.tanh(raw.astype(np.float64)) + 1)
    np.testing.assert_allclose(np.asarray(log_std_bounds(jnp.asarray(raw))), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(log_std_bounds(jnp.asarray(raw))[np.array([0, 2, 4])]), [-5.0, -1.5, 2.0], atol=1e-6
    )
    np.testing.assert_allclose(float(log_std_bounds(jnp.float32(0.0), min=-20.0, max=2.0)), -9.0, atol=1e-6)
