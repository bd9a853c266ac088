"""TD3 (reference §1.4, ``S/td3_dmc_vanilla.py:288-334``; CleanRL ``td3_continuous_action.py``) as pure functions:
the smoothed clipped-double-Q target, the critic and actor losses and the Polyak target update.

Shapes: B batch, D action dims. Q-functions may return [B] or [B, 1]; values are flattened to the shape of the
rewards (CleanRL's ``.view(-1)``), which also guards against a silent [B, 1] - [B] -> [B, B] broadcast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def target_policy_smoothing(
    key: jax.Array,
    target_actions: jax.Array,
    policy_noise: float | jax.Array,
    noise_clip: float | jax.Array,
    action_low: float | jax.Array,
    action_high: float | jax.Array,
    action_scale: float | jax.Array,
    clip_to_bounds: bool = True,
) -> jax.Array:
    """Target action a' = clip(pi'(s') + clip(N(0, policy_noise^2), -noise_clip, noise_clip) * action_scale,
    low, high) (reference §1.4 update; the reference clips to the scalar bounds ``low[0]``/``high[0]``, array
    bounds broadcast per dimension here).

    The noise is ``policy_noise * jax.random.normal(key, target_actions.shape)``. ``clip_to_bounds=False``
    returns the smoothed action before the bounds clip (for tests and diagnostics).
    """
    noise = policy_noise * jax.random.normal(key, target_actions.shape, dtype=target_actions.dtype)
    action = target_actions + jnp.clip(noise, -noise_clip, noise_clip) * action_scale
    if clip_to_bounds:
        action = jnp.clip(action, action_low, action_high)
    return action


def td3_target(
    key: jax.Array,
    target_actor_fn: Callable[[jax.Array], jax.Array],
    target_q_fn: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]],
    next_obs: jax.Array,
    rewards: jax.Array,
    dones: jax.Array,
    gamma: float | jax.Array,
    policy_noise: float | jax.Array,
    noise_clip: float | jax.Array,
    action_low: float | jax.Array,
    action_high: float | jax.Array,
    action_scale: float | jax.Array,
) -> jax.Array:
    """Clipped double-Q target with target policy smoothing, stop-gradiented (reference §1.4 update):

        a' = target_policy_smoothing(pi'(s')),   y = r + gamma (1 - d) min(Q1'(s', a'), Q2'(s', a')).

    Args:
        key: PRNG key for the smoothing noise.
        target_actor_fn: obs [B, ...] -> actions [B, D] (target actor, already scaled to the env bounds).
        target_q_fn: (obs, actions) -> (q1, q2), each [B] or [B, 1] (target critics).
        next_obs: [B, ...]; rewards: [B]; dones: [B] true terminations only (truncations bootstrap).
        gamma, policy_noise, noise_clip: TD3 hyperparameters (reference 0.99, 0.2, 0.5).
        action_low, action_high, action_scale: env bounds and (high - low) / 2.

    Returns:
        [B] targets y.
    """
    next_actions = target_policy_smoothing(
        key, target_actor_fn(next_obs), policy_noise, noise_clip, action_low, action_high, action_scale
    )
    q1, q2 = target_q_fn(next_obs, next_actions)
    min_q = jnp.minimum(q1.reshape(rewards.shape), q2.reshape(rewards.shape))
    y = rewards + (1.0 - dones.astype(rewards.dtype)) * gamma * min_q
    return jax.lax.stop_gradient(y)


def td3_critic_loss(q1: jax.Array, q2: jax.Array, y: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Twin-critic loss mse(Q1, y) + mse(Q2, y) (means, no 1/2; reference §1.4), y stop-gradiented.

    Returns ``(loss, aux)``; aux holds the reference log values ``losses/qf1_loss``, ``losses/qf2_loss``,
    ``losses/qf1_values``, ``losses/qf2_values`` (batch means of Q) and ``losses/qf_loss`` = loss / 2 (the
    reference logs half the summed loss under that tag).
    """
    y = jax.lax.stop_gradient(y)
    q1 = q1.reshape(y.shape)
    q2 = q2.reshape(y.shape)
    qf1_loss = jnp.mean(jnp.square(q1 - y))
    qf2_loss = jnp.mean(jnp.square(q2 - y))
    loss = qf1_loss + qf2_loss
    aux = {
        "losses/qf1_loss": qf1_loss,
        "losses/qf2_loss": qf2_loss,
        "losses/qf1_values": jnp.mean(q1),
        "losses/qf2_values": jnp.mean(q2),
        "losses/qf_loss": loss / 2.0,
    }
    return loss, aux


def td3_actor_loss(q1_of_pi: jax.Array) -> jax.Array:
    """Deterministic policy gradient loss -mean Q1(s, pi(s)) (reference §1.4; only Q1 is used)."""
    return -jnp.mean(q1_of_pi)


def polyak(target: Any, online: Any, tau: float | jax.Array) -> Any:
    """Soft target update, leafwise ``tau * online + (1 - tau) * target`` (reference §1.4, tau 0.005).

    Leaves keep the target's dtype.
    """
    return jax.tree.map(lambda t, o: (tau * o + (1.0 - tau) * t).astype(t.dtype), target, online)
