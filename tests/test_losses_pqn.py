"""PQN pure functions (reference §1.3) against independent NumPy references: the CleanRL-storage backwards
Q(lambda) loop (dones shifted by one, ``next_done`` for the last step), closed forms at lambda = 0 and 1, a
hand-computed example, the TD loss and its stopped target gradient, the epsilon schedule and epsilon-greedy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.algos.pqn_losses import epsilon_greedy, linear_schedule, pqn_loss, q_lambda_targets


def _cleanrl_q_lambda(rewards, cl_dones, values, next_value, next_done, gamma, lam):
    """CleanRL ``pqn_atari_envpool.py`` loop in its own storage convention (float64):
    cl_dones[t] = 's_t starts a new episode', next_done = 'the last step ended an episode'."""
    T = rewards.shape[0]
    returns = np.zeros_like(rewards)
    for t in reversed(range(T)):
        if t == T - 1:
            nextnonterminal = 1.0 - next_done
            returns[t] = rewards[t] + gamma * next_value * nextnonterminal
        else:
            nextnonterminal = 1.0 - cl_dones[t + 1]
            returns[t] = rewards[t] + gamma * (lam * returns[t + 1] + (1 - lam) * values[t + 1]) * nextnonterminal
    return returns


def _rollout(T=9, N=4, p_done=0.3, seed=0):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N))
    dones = rng.random((T, N)) < p_done  # clean convention: episode ended at step t
    q_max = rng.normal(size=(T, N)) * 3.0
    last_q = rng.normal(size=(N,)) * 3.0
    return rewards, dones, q_max, last_q


def _to_cleanrl(dones, rng):
    """Clean -> CleanRL storage: cl_dones[t + 1] = dones[t], next_done = dones[T - 1], cl_dones[0] = anything."""
    cl = np.zeros_like(dones, dtype=np.float64)
    cl[1:] = dones[:-1]
    cl[0] = rng.random(dones.shape[1]) < 0.5  # end of the previous rollout: must not matter
    return cl, dones[-1].astype(np.float64)


def _targets(rewards, dones, q_max, last_q, gamma, lam):
    out = q_lambda_targets(
        jnp.asarray(rewards, jnp.float32),
        jnp.asarray(dones),
        jnp.asarray(q_max, jnp.float32),
        jnp.asarray(last_q, jnp.float32),
        gamma,
        lam,
    )
    return np.asarray(out, np.float64)


@pytest.mark.parametrize("lam", [0.0, 0.65, 1.0])
def test_q_lambda_matches_cleanrl_loop(lam):
    gamma = 0.99
    rng = np.random.default_rng(1)
    for seed in range(3):
        rewards, dones, q_max, last_q = _rollout(seed=seed)
        cl_dones, next_done = _to_cleanrl(dones, rng)
        ref = _cleanrl_q_lambda(rewards, cl_dones, q_max, last_q, next_done, gamma, lam)
        np.testing.assert_allclose(_targets(rewards, dones, q_max, last_q, gamma, lam), ref, rtol=1e-5, atol=1e-5)


def test_q_lambda_closed_forms():
    """lambda = 0: one-step targets; lambda = 1: discounted return to episode end or the final bootstrap."""
    gamma = 0.9
    rewards, dones, q_max, last_q = _rollout(T=8, N=5, seed=3)
    T, N = rewards.shape
    nd = 1.0 - dones
    next_q = np.concatenate([q_max[1:], last_q[None]])
    one_step = rewards + gamma * nd * next_q
    np.testing.assert_allclose(_targets(rewards, dones, q_max, last_q, gamma, 0.0), one_step, rtol=1e-5, atol=1e-5)

    mc = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            g, disc = 0.0, 1.0
            for k in range(t, T):
                g += disc * rewards[k, n]
                disc *= gamma
                if dones[k, n]:
                    break
            else:
                g += disc * last_q[n]
            mc[t, n] = g
    np.testing.assert_allclose(_targets(rewards, dones, q_max, last_q, gamma, 1.0), mc, rtol=1e-5, atol=1e-5)


def test_q_lambda_hand_example():
    """T = 3, one env, episode ends at t = 1 (so q_max[2], the reset state's value, is not used at t = 1).

    G2 = 1 + 0.5 * 10 = 6
    G1 = 2 + 0 (terminal)                               = 2
    G0 = 0 + 0.5 * (0.5 * G1 + 0.5 * q_max[1] = 0.5 * 2 + 0.5 * 4 = 3) = 1.5
    """
    rewards = np.array([[0.0], [2.0], [1.0]])
    dones = np.array([[False], [True], [False]])
    q_max = np.array([[100.0], [4.0], [-50.0]])
    last_q = np.array([10.0])
    out = _targets(rewards, dones, q_max, last_q, 0.5, 0.5)
    np.testing.assert_allclose(out[:, 0], [1.5, 2.0, 6.0], rtol=1e-6)


def test_q_lambda_jit_vmap_traced_hparams():
    rewards, dones, q_max, last_q = _rollout(T=6, N=3, seed=4)
    args = [jnp.asarray(x, jnp.float32) for x in (rewards, dones, q_max, last_q)]
    f = jax.jit(jax.vmap(q_lambda_targets, in_axes=(None, None, None, None, 0, 0)))
    gammas, lams = jnp.array([0.99, 0.9]), jnp.array([0.65, 0.3])
    out = np.asarray(f(*args, gammas, lams))
    for i in range(2):
        ref = _targets(rewards, dones, q_max, last_q, float(gammas[i]), float(lams[i]))
        np.testing.assert_allclose(out[i], ref, rtol=1e-5, atol=1e-5)


def test_pqn_loss_value_and_stopped_target_gradient():
    rng = np.random.default_rng(5)
    q = rng.normal(size=(32,)).astype(np.float32)
    y = rng.normal(size=(32,)).astype(np.float32)
    np.testing.assert_allclose(float(pqn_loss(jnp.asarray(q), jnp.asarray(y))), np.mean((q - y) ** 2), rtol=1e-6)
    gq, gy = jax.grad(pqn_loss, argnums=(0, 1))(jnp.asarray(q), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(gq), 2.0 * (q - y) / q.size, rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(gy) == 0.0)


def _cleanrl_linear_schedule(start_e, end_e, duration, t):
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


def test_linear_schedule():
    start, end, duration = 1.0, 0.01, 1e6
    ts = [0, 1, 250_000, 500_000, 999_999, 1_000_000, 1_000_001, 5_000_000, 1e7]
    f = jax.jit(linear_schedule)
    for t in ts:
        ref = _cleanrl_linear_schedule(start, end, duration, t)
        np.testing.assert_allclose(float(linear_schedule(start, end, duration, t)), ref, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(float(f(start, end, duration, jnp.float32(t))), ref, rtol=1e-6, atol=1e-7)
    assert float(linear_schedule(start, end, duration, 5e6)) == np.float32(end)  # exactly constant after
    # increasing schedules work too
    assert float(linear_schedule(0.0, 2.0, 10.0, 5.0)) == pytest.approx(1.0)
    assert float(linear_schedule(0.0, 2.0, 10.0, 50.0)) == pytest.approx(2.0)


def test_epsilon_greedy():
    n, a = 20_000, 6
    rng = np.random.default_rng(6)
    q = jnp.asarray(rng.normal(size=(n, a)), jnp.float32)
    greedy = np.argmax(np.asarray(q), axis=-1)
    f = jax.jit(epsilon_greedy)
    key = jax.random.key(0)

    act0 = f(key, q, 0.0)
    assert act0.shape == (n,) and act0.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(act0), greedy)

    act1 = np.asarray(f(key, q, 1.0))
    assert act1.min() == 0 and act1.max() == a - 1
    counts = np.bincount(act1, minlength=a) / n
    np.testing.assert_allclose(counts, 1.0 / a, atol=0.02)

    # P(greedy) = 1 - eps + eps / A, independently per env
    eps = 0.4
    act = np.asarray(f(key, q, jnp.float32(eps)))
    frac_greedy = np.mean(act == greedy)
    assert abs(frac_greedy - (1 - eps + eps / a)) < 0.02
    assert not np.array_equal(np.asarray(f(jax.random.key(1), q, eps)), act)  # the key matters


def test_epsilon_greedy_action_distribution():
    """P(a = k) = (1 - eps) [k = greedy] + eps / A: the coin and the random action are independent draws."""
    n, a, eps = 40_000, 4, 0.5
    q = jnp.zeros((n, a)).at[:, 2].set(1.0)  # greedy action 2 everywhere
    act = np.asarray(jax.jit(epsilon_greedy)(jax.random.key(3), q, eps))
    expected = np.full(a, eps / a)
    expected[2] += 1 - eps
    np.testing.assert_allclose(np.bincount(act, minlength=a) / n, expected, atol=0.01)
