"""PQN (reference §1.3, ``S/pqn_atari_vanilla.py``; CleanRL ``pqn_atari_envpool.py``) as pure functions.

Q(lambda) targets, the TD loss, the epsilon schedule and epsilon-greedy action selection. Everything here is
jit/vmap-able; hyperparameters (gamma, lambda, epsilon) may be traced scalars.

Storage convention used here ("clean"): index t is one env step, ``dones[t]`` says the episode *ended at* step t
(the transition s_t -> s_{t+1} was terminal, so s_{t+1} is a reset observation and must not be bootstrapped).
CleanRL stores instead ``dones[t]`` = "s_t is the first observation after an episode end" (set *before* step t is
taken) and keeps the flag of the last step in ``next_done``. The two are related by

    clean dones[t] == cleanrl dones[t + 1]   for t < T - 1
    clean dones[T - 1] == cleanrl next_done

and CleanRL's ``dones[0]`` (the end of the previous rollout) is not used by the targets at all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def q_lambda_targets(
    rewards: jax.Array,
    dones: jax.Array,
    q_max: jax.Array,
    last_q_max: jax.Array,
    gamma: float | jax.Array,
    lam: float | jax.Array,
) -> jax.Array:
    """Peng's Q(lambda) returns over a rollout, computed backwards with ``lax.scan(reverse=True)``.

    Reproduces ``S/pqn_atari_vanilla.py:270-284`` (written in the clean convention of the module docstring):

        G_{T-1} = r_{T-1} + gamma (1 - d_{T-1}) last_q_max
        G_t     = r_t + gamma (1 - d_t) (lam G_{t+1} + (1 - lam) q_max[t+1])      for t < T-1

    The termination mask multiplies the whole bootstrap (both the lambda-return and the one-step value), as in
    the reference.

    Args:
        rewards: [T, N] rewards r_t.
        dones: [T, N] bool/float, episode terminated at step t.
        q_max: [T, N] max_a Q(s_t, a) recorded during the rollout (pre-update network).
        last_q_max: [N] max_a Q(s_T, a) for the observation after the last step.
        gamma, lam: discount and lambda.

    Returns:
        [T, N] targets G_t (not stop-gradiented: the inputs are rollout data; ``pqn_loss`` stops the gradient).
    """
    dtype = rewards.dtype
    not_done = 1.0 - dones.astype(dtype)
    next_q = jnp.concatenate([q_max[1:], last_q_max[None]], axis=0)  # q_max[t+1], with q_max[T] = last_q_max
    is_last = jnp.zeros(rewards.shape[0], dtype=bool).at[-1].set(True)

    def step(g_next, xs):
        r, nd, q_next, last = xs
        # At t = T-1 the bootstrap is exactly last_q_max (not lam*x + (1-lam)*x, which can differ by rounding).
        boot = jnp.where(last, q_next, lam * g_next + (1.0 - lam) * q_next)
        g = r + gamma * nd * boot
        return g, g

    _, targets = jax.lax.scan(step, last_q_max.astype(dtype), (rewards, not_done, next_q, is_last), reverse=True)
    return targets


def pqn_loss(q_taken: jax.Array, targets: jax.Array) -> jax.Array:
    """TD loss ``F.mse_loss(returns, Q(s, a))``: mean((Q(s,a) - G)^2), no 1/2 factor (reference §1.3).

    ``targets`` are wrapped in ``stop_gradient`` (the reference computes them under ``torch.no_grad``).
    """
    targets = jax.lax.stop_gradient(targets)
    return jnp.mean(jnp.square(q_taken - targets))


def linear_schedule(
    start: float | jax.Array,
    end: float | jax.Array,
    duration: float | jax.Array,
    t: float | jax.Array,
) -> jax.Array:
    """Linear interpolation from ``start`` (t = 0) to ``end`` (t = duration), then constant at ``end``.

    CleanRL's ``linear_schedule``: ``max(slope * t + start, end)`` with ``slope = (end - start) / duration``;
    here clamped between start and end so it works in either direction. ``t`` may be a traced float32 global
    step (PQN evaluates it at ``global_step``, duration = exploration_fraction * total_timesteps).
    """
    start = jnp.asarray(start, jnp.float32)
    end = jnp.asarray(end, jnp.float32)
    value = (end - start) / duration * jnp.asarray(t, jnp.float32) + start
    return jnp.clip(value, jnp.minimum(start, end), jnp.maximum(start, end))


def epsilon_greedy(key: jax.Array, q_values: jax.Array, epsilon: float | jax.Array) -> jax.Array:
    """Epsilon-greedy actions with an independent coin per env (reference §1.3, CleanRL PQN).

    For each env: with probability ``epsilon`` a uniform random action, else ``argmax_a Q`` (first maximiser).

    Args:
        key: PRNG key (split into one key for the coins and one for the random actions).
        q_values: [N, A] Q-values.
        epsilon: exploration probability (scalar, may be traced).

    Returns:
        [N] int32 actions.
    """
    n, num_actions = q_values.shape
    key_coin, key_act = jax.random.split(key)
    greedy = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
    random_actions = jax.random.randint(key_act, (n,), 0, num_actions, dtype=jnp.int32)
    explore = jax.random.uniform(key_coin, (n,)) < epsilon
    return jnp.where(explore, random_actions, greedy)
