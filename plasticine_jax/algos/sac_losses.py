"""SAC as pure functions, following CleanRL ``sac_continuous_action.py`` (not part of the Plasticine reference):
tanh-squashed Gaussian policy, soft clipped-double-Q target, critic / actor / temperature losses.

Shapes: B batch, D action dims. Log-probs are summed over the action dims and returned without the trailing
axis ([B], where CleanRL keeps [B, 1]). The temperature alpha enters the critic target and the actor loss as a
constant (CleanRL uses ``log_alpha.exp().item()``), hence the stop-gradients below.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from plasticine_jax.algos.td3_losses import td3_critic_loss

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0
TANH_EPS = 1e-6  # CleanRL's epsilon inside log(scale * (1 - tanh^2) + eps)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def log_std_bounds(raw: jax.Array, min: float = LOG_STD_MIN, max: float = LOG_STD_MAX) -> jax.Array:
    """Squash the actor's raw log-std output into [min, max] (CleanRL):
    ``min + 0.5 (max - min) (tanh(raw) + 1)``."""
    return min + 0.5 * (max - min) * (jnp.tanh(raw) + 1.0)


def tanh_gaussian_log_prob(
    pre_tanh: jax.Array, mean: jax.Array, log_std: jax.Array, action_scale: float | jax.Array
) -> jax.Array:
    """log pi(a) for a = tanh(x) * scale + bias, given the pre-squash sample x (change of variables, CleanRL):

        log pi(a) = Σ_d [ log N(x_d; mean_d, std_d) - log(scale_d (1 - tanh(x_d)^2) + 1e-6) ].

    The 1e-6 keeps the log finite when tanh saturates (it slightly biases the density, as in CleanRL).
    """
    std = jnp.exp(log_std)
    normal_logp = -0.5 * jnp.square((pre_tanh - mean) / std) - log_std - _HALF_LOG_2PI
    correction = jnp.log(action_scale * (1.0 - jnp.square(jnp.tanh(pre_tanh))) + TANH_EPS)
    return jnp.sum(normal_logp - correction, axis=-1)


def tanh_gaussian_sample(
    key: jax.Array,
    mean: jax.Array,
    log_std: jax.Array,
    action_scale: float | jax.Array,
    action_bias: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Reparameterised sample of the tanh-squashed Gaussian policy and its log-prob (CleanRL ``get_action``).

    x = mean + exp(log_std) * eps with eps = ``jax.random.normal(key, mean.shape)``; action = tanh(x) * scale +
    bias; log-prob from ``tanh_gaussian_log_prob`` (gradients flow to mean and log_std through x).

    Args:
        key: PRNG key; mean, log_std: [..., D] (log_std already bounded, see ``log_std_bounds``).
        action_scale, action_bias: (high - low) / 2 and (high + low) / 2, broadcastable to [..., D].

    Returns:
        (action [..., D], log_prob [...]).
    """
    eps = jax.random.normal(key, mean.shape, dtype=mean.dtype)
    pre_tanh = mean + jnp.exp(log_std) * eps
    action = jnp.tanh(pre_tanh) * action_scale + action_bias
    return action, tanh_gaussian_log_prob(pre_tanh, mean, log_std, action_scale)


def sac_critic_target(
    next_q1: jax.Array,
    next_q2: jax.Array,
    next_log_prob: jax.Array,
    rewards: jax.Array,
    dones: jax.Array,
    gamma: float | jax.Array,
    alpha: float | jax.Array,
) -> jax.Array:
    """Soft clipped double-Q target, stop-gradiented:

        y = r + gamma (1 - d) (min(Q1'(s', a'), Q2'(s', a')) - alpha log pi(a'|s')),   a' ~ pi(.|s').

    Args:
        next_q1, next_q2: [B] or [B, 1] target critics at (s', a'); next_log_prob: [B] or [B, 1].
        rewards: [B]; dones: [B] true terminations only; gamma, alpha: discount and temperature.

    Returns:
        [B] targets y.
    """
    alpha = jax.lax.stop_gradient(alpha)
    min_q = jnp.minimum(next_q1.reshape(rewards.shape), next_q2.reshape(rewards.shape))
    soft_v = min_q - alpha * next_log_prob.reshape(rewards.shape)
    y = rewards + (1.0 - dones.astype(rewards.dtype)) * gamma * soft_v
    return jax.lax.stop_gradient(y)


def sac_critic_loss(q1: jax.Array, q2: jax.Array, y: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """mse(Q1, y) + mse(Q2, y), y stop-gradiented; same loss and aux keys as ``td3_losses.td3_critic_loss``."""
    return td3_critic_loss(q1, q2, y)


def sac_actor_loss(log_prob: jax.Array, q1_pi: jax.Array, q2_pi: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """Actor loss mean(alpha log pi(a|s) - min(Q1(s, a), Q2(s, a))), a ~ pi reparameterised (CleanRL).

    alpha is treated as a constant (stop-gradient). Inputs may be [B] or [B, 1].
    """
    alpha = jax.lax.stop_gradient(alpha)
    log_prob = log_prob.reshape(-1)
    min_q = jnp.minimum(q1_pi.reshape(log_prob.shape), q2_pi.reshape(log_prob.shape))
    return jnp.mean(alpha * log_prob - min_q)


def sac_alpha_loss(log_alpha: jax.Array, log_prob: jax.Array, target_entropy: float | jax.Array) -> jax.Array:
    """Temperature loss mean(-exp(log_alpha) (log pi(a|s) + target_entropy)) with log pi stop-gradiented
    (CleanRL computes it under ``torch.no_grad``; target_entropy = -D there)."""
    log_prob = jax.lax.stop_gradient(log_prob)
    return jnp.mean(-jnp.exp(log_alpha) * (log_prob + target_entropy))
