"""TD3 pure functions (reference §1.4, CleanRL td3) against independent NumPy references: the smoothed
clipped-double-Q target (noise clipped to ±noise_clip·scale before the bound clip, terminal masking, stopped
gradient), the twin-critic and actor losses, and exact Polyak averaging."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from plasticine_jax.algos.td3_losses import (
    polyak,
    target_policy_smoothing,
    td3_actor_loss,
    td3_critic_loss,
    td3_target,
)

B, OBS, ACT = 32, 5, 3


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(B, OBS)).astype(np.float32)
    rewards = rng.normal(size=B).astype(np.float32)
    dones = rng.random(B) < 0.3
    w_pi = rng.normal(size=(OBS, ACT)).astype(np.float32)
    w_q1 = rng.normal(size=(OBS + ACT,)).astype(np.float32)
    w_q2 = rng.normal(size=(OBS + ACT,)).astype(np.float32)
    return obs, rewards, dones, w_pi, w_q1, w_q2


def _np_target(noise01, obs, rewards, dones, w_pi, w_q1, w_q2, gamma, pn, nc, low, high, scale):
    """CleanRL: a' = clip(pi(s') + clip(pn * N, -nc, nc) * scale, low, high); y = r + (1-d) gamma min(Q1, Q2)."""
    a = np.tanh(obs @ w_pi) * scale
    a = np.clip(a + np.clip(pn * noise01, -nc, nc) * scale, low, high)
    x = np.concatenate([obs, a], axis=-1)
    q = np.minimum(x @ w_q1, x @ w_q2)
    return rewards + (1.0 - dones) * gamma * q


def _fns(w_pi, w_q1, w_q2, scale, shape="flat"):
    actor = lambda o: jnp.tanh(o @ w_pi) * scale

    def q_fn(o, a):
        x = jnp.concatenate([o, a], axis=-1)
        q1, q2 = x @ w_q1, x @ w_q2
        if shape == "keepdims":
            return q1[:, None], q2[:, None]
        if shape == "mixed":
            return q1[:, None], q2
        return q1, q2

    return actor, q_fn


def test_td3_target_matches_numpy():
    obs, rewards, dones, w_pi, w_q1, w_q2 = _problem()
    gamma, pn, nc, low, high, scale = 0.99, 0.2, 0.5, -0.8, 0.8, 0.8
    key = jax.random.key(3)
    # noise contract: policy_noise * jax.random.normal(key, actions.shape)
    noise01 = np.asarray(jax.random.normal(key, (B, ACT)), np.float64)
    ref = _np_target(noise01, obs, rewards, dones, w_pi, w_q1, w_q2, gamma, pn, nc, low, high, scale)
    for shape in ("flat", "keepdims", "mixed"):  # critics returning [B], [B, 1] or one of each
        actor, q_fn = _fns(w_pi, w_q1, w_q2, scale, shape)
        y = td3_target(key, actor, q_fn, obs, rewards, dones, gamma, pn, nc, low, high, scale)
        assert y.shape == (B,)
        np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)
    # noise actually enters: zero noise gives a different target
    y0 = td3_target(key, actor, q_fn, obs, rewards, dones, gamma, 0.0, nc, low, high, scale)
    ref0 = _np_target(0 * noise01, obs, rewards, dones, w_pi, w_q1, w_q2, gamma, pn, nc, low, high, scale)
    np.testing.assert_allclose(np.asarray(y0), ref0, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(y0) - ref).max() > 1e-2
    # terminal transitions do not bootstrap
    y_done = td3_target(key, actor, q_fn, obs, rewards, np.ones(B, bool), gamma, pn, nc, low, high, scale)
    np.testing.assert_array_equal(np.asarray(y_done), rewards)


def test_td3_target_noise_is_clipped_before_bounds():
    obs, rewards, dones, w_pi, w_q1, w_q2 = _problem(1)
    nc, scale = 0.5, 2.0
    actor, _ = _fns(w_pi, w_q1, w_q2, scale)
    pi = np.asarray(actor(obs))
    key = jax.random.key(0)
    # huge noise, no bound clip: every dimension saturates at exactly ±noise_clip·scale
    smoothed = np.asarray(target_policy_smoothing(key, actor(obs), 1e6, nc, -1e9, 1e9, scale, clip_to_bounds=False))
    dev = np.abs(smoothed - pi)
    assert dev.max() <= nc * scale + 1e-5
    np.testing.assert_allclose(dev, nc * scale, atol=1e-5)
    # the same through td3_target: a one-dimensional Q that reads the action back
    w1 = w_pi[:, :1]
    actor1 = lambda o: jnp.tanh(o @ w1) * scale
    q_read = lambda o, a: (a[:, 0], a[:, 0] + 1.0)
    y = td3_target(key, actor1, q_read, obs, np.zeros(B, np.float32), np.zeros(B, bool), 1.0, 1e6, nc, -1e9, 1e9, scale)
    dev1 = np.abs(np.asarray(y) - np.asarray(actor1(obs))[:, 0])
    assert dev1.max() <= nc * scale + 1e-5 and dev1.min() >= nc * scale - 1e-5
    # with bounds: the bound clip comes after the noise and is honoured
    low, high = -1.0, 1.5
    y = td3_target(key, actor1, q_read, obs, np.zeros(B, np.float32), np.zeros(B, bool), 1.0, 1e6, nc, low, high, scale)
    y = np.asarray(y)
    assert y.min() >= low and y.max() <= high
    assert np.any(y == low) and np.any(y == high)


def test_td3_target_is_stop_gradient():
    obs, rewards, dones, w_pi, w_q1, w_q2 = _problem(2)

    def f(wq1, wpi):
        actor, q_fn = _fns(wpi, wq1, w_q2, 1.0)
        return td3_target(jax.random.key(0), actor, q_fn, obs, rewards, dones, 0.99, 0.2, 0.5, -1, 1, 1.0).sum()

    g1, g2 = jax.grad(f, argnums=(0, 1))(jnp.asarray(w_q1), jnp.asarray(w_pi))
    assert np.all(np.asarray(g1) == 0.0) and np.all(np.asarray(g2) == 0.0)


def test_td3_critic_loss():
    rng = np.random.default_rng(4)
    q1, q2, y = (rng.normal(size=B).astype(np.float32) for _ in range(3))
    loss, aux = td3_critic_loss(jnp.asarray(q1)[:, None], jnp.asarray(q2)[:, None], jnp.asarray(y))  # [B, 1] ok
    l1, l2 = np.mean((q1 - y) ** 2), np.mean((q2 - y) ** 2)
    np.testing.assert_allclose(float(loss), l1 + l2, rtol=1e-6)
    np.testing.assert_allclose(float(aux["losses/qf1_loss"]), l1, rtol=1e-6)
    np.testing.assert_allclose(float(aux["losses/qf2_loss"]), l2, rtol=1e-6)
    np.testing.assert_allclose(float(aux["losses/qf_loss"]), (l1 + l2) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(aux["losses/qf1_values"]), q1.mean(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(aux["losses/qf2_values"]), q2.mean(), rtol=1e-5, atol=1e-7)

    f = lambda a, b, c: td3_critic_loss(a, b, c)[0]
    g1, g2, gy = jax.grad(f, argnums=(0, 1, 2))(jnp.asarray(q1), jnp.asarray(q2), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(g1), 2 * (q1 - y) / B, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(g2), 2 * (q2 - y) / B, rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(gy) == 0.0)


def test_td3_actor_loss():
    q = jnp.asarray(np.random.default_rng(5).normal(size=(B, 1)), jnp.float32)
    np.testing.assert_allclose(float(td3_actor_loss(q)), -float(np.mean(np.asarray(q))), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.grad(td3_actor_loss)(q)), -1.0 / B, rtol=1e-6)


def test_polyak_exact():
    rng = np.random.default_rng(6)
    target = {"a": {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}, "c": [rng.normal(size=4)]}
    online = jax.tree.map(lambda x: x + rng.normal(size=x.shape), target)
    target = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), target)
    online = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), online)
    tau = 0.005
    out = jax.jit(polyak)(target, online, tau)
    assert jax.tree.structure(out) == jax.tree.structure(target)
    for o, t, n in zip(jax.tree.leaves(out), jax.tree.leaves(target), jax.tree.leaves(online), strict=True):
        assert o.dtype == jnp.float32
        t64, n64 = np.asarray(t, np.float64), np.asarray(n, np.float64)
        np.testing.assert_allclose(np.asarray(o), tau * n64 + (1 - tau) * t64, rtol=1e-6, atol=1e-7)
    for o, t in zip(jax.tree.leaves(polyak(target, online, 0.0)), jax.tree.leaves(target), strict=True):
        np.testing.assert_array_equal(np.asarray(o), np.asarray(t))
    for o, n in zip(jax.tree.leaves(polyak(target, online, 1.0)), jax.tree.leaves(online), strict=True):
        np.testing.assert_array_equal(np.asarray(o), np.asarray(n))
