"""PPO's pure losses against independent numpy references: GAE (CleanRL's backwards loop), the clipped
surrogate with clipped value loss, and the action distributions' log-probs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.algos.ppo_losses import distribution, gae, ppo_loss


def _gae_numpy(r, v, d, last_v, gamma, lam):
    T = r.shape[0]
    adv = np.zeros_like(r)
    last = np.zeros_like(last_v)
    for t in reversed(range(T)):
        next_v = last_v if t == T - 1 else v[t + 1]
        nonterminal = 1.0 - d[t]
        delta = r[t] + gamma * next_v * nonterminal - v[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv, adv + v


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_gae_matches_backwards_loop(lam):
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(7, 3)).astype(np.float32), rng.normal(size=(7, 3)).astype(np.float32)
    d = (rng.random((7, 3)) < 0.3).astype(np.float32)
    last_v = rng.normal(size=3).astype(np.float32)
    adv, ret = gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(d), jnp.asarray(last_v), 0.9, lam)
    adv_np, ret_np = _gae_numpy(r, v, d, last_v, 0.9, lam)
    np.testing.assert_allclose(adv, adv_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, ret_np, rtol=1e-5, atol=1e-6)


def test_ppo_loss_matches_numpy_and_clips():
    rng = np.random.default_rng(1)
    n = 16
    old_logp = rng.normal(size=n).astype(np.float32) - 1.0
    logp = old_logp + rng.normal(scale=0.5, size=n).astype(np.float32)  # many ratios outside [0.8, 1.2]
    adv, value, old_value, ret = (rng.normal(size=n).astype(np.float32) for _ in range(4))
    ent = np.abs(rng.normal(size=n)).astype(np.float32)
    loss, aux = ppo_loss(*(jnp.asarray(x) for x in (logp, old_logp, adv, value, old_value, ret, ent)),
                         0.2, 0.01, 0.5)
    ratio = np.exp(logp - old_logp)
    a = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
    pg = np.mean(np.maximum(-a * ratio, -a * np.clip(ratio, 0.8, 1.2)))
    vc = old_value + np.clip(value - old_value, -0.2, 0.2)
    vl = 0.5 * np.mean(np.maximum((value - ret) ** 2, (vc - ret) ** 2))
    np.testing.assert_allclose(float(loss), pg - 0.01 * ent.mean() + 0.5 * vl, rtol=1e-5)
    np.testing.assert_allclose(float(aux["losses/clipfrac"]), np.mean(np.abs(ratio - 1) > 0.2), rtol=1e-6)
    assert 0.0 < float(aux["losses/clipfrac"]) < 1.0
    # the clip bites: the gradient w.r.t. logp is zero where the clipped branch is the max
    g = jax.grad(lambda lp: ppo_loss(lp, jnp.asarray(old_logp), jnp.asarray(adv), jnp.asarray(value),
                                     jnp.asarray(old_value), jnp.asarray(ret), jnp.asarray(ent), 0.2, 0.0, 0.0)[0])(
        jnp.asarray(logp))
    clipped = ((a > 0) & (ratio > 1.2)) | ((a < 0) & (ratio < 0.8))
    assert clipped.any() and np.all(np.asarray(g)[clipped] == 0.0) and np.all(np.asarray(g)[~clipped] != 0.0)


def test_distributions_log_prob():
    logits = jnp.array([[0.0, 1.0, -1.0]])
    _, log_prob, entropy = distribution(logits, continuous=False)
    p = np.exp([0.0, 1.0, -1.0]) / np.exp([0.0, 1.0, -1.0]).sum()
    np.testing.assert_allclose(log_prob(jnp.array([1])), np.log(p[1])[None], rtol=1e-6)
    np.testing.assert_allclose(entropy(), [-(p * np.log(p)).sum()], rtol=1e-6)
    mean, log_std = jnp.array([[0.5, -1.0]]), jnp.array([[0.0, np.log(2.0)]])
    _, log_prob, entropy = distribution((mean, log_std), continuous=True)
    a = np.array([[1.0, 0.0]])
    std = np.array([1.0, 2.0])
    expect = np.sum(-0.5 * ((a - np.asarray(mean)) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi))
    np.testing.assert_allclose(log_prob(jnp.asarray(a)), [expect], rtol=1e-6)
    np.testing.assert_allclose(entropy(), [np.sum(0.5 + 0.5 * np.log(2 * np.pi) + np.log(std))], rtol=1e-6)
