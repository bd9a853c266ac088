"""PPO's pure losses (CleanRL / PureJaxRL conventions, reference §1.1): generalised advantage estimation,
the clipped surrogate with clipped value loss and entropy bonus, and the action distributions."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from plasticine_jax.metrics.policy import categorical_entropy, gaussian_entropy


def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array, gamma: jax.Array,
        lam: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over [T, N]: (advantages, returns = advantages + values).

    ``dones[t]`` = the episode ended at step t (terminated or truncated: the next obs is a reset), so the
    trace stops there; a truncation's bootstrap value belongs in ``rewards`` (r + gamma V(final_obs))."""

    def step(carry, t):
        next_adv, next_value = carry
        r, v, done = t
        delta = r + gamma * next_value * (1.0 - done) - v
        adv = delta + gamma * lam * (1.0 - done) * next_adv
        return (adv, v), adv

    _, adv = jax.lax.scan(step, (jnp.zeros_like(last_value), last_value),
                          (rewards, values, dones.astype(jnp.float32)), reverse=True)
    return adv, adv + values


def distribution(policy_out, continuous: bool) -> tuple[Callable, Callable, Callable]:
    """(sample(key), log_prob(action), entropy()) of the policy output: categorical logits, or a diagonal
    Gaussian (mean, log_std) with log-prob and entropy summed over action dimensions."""
    if continuous:
        mean, log_std = policy_out
        std = jnp.exp(log_std)

        def log_prob(a):
            return jnp.sum(-0.5 * ((a - mean) / std) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)

        def sample(key):
            return mean + std * jax.random.normal(key, mean.shape)

        return sample, log_prob, lambda: gaussian_entropy(log_std)
    logits = policy_out

    def log_prob(a):
        return jnp.take_along_axis(jax.nn.log_softmax(logits), a[..., None].astype(jnp.int32), -1)[..., 0]

    def sample(key):
        return jax.random.categorical(key, logits).astype(jnp.int32)

    return sample, log_prob, lambda: categorical_entropy(logits)


def ppo_loss(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, value: jax.Array, old_value: jax.Array,
             ret: jax.Array, entropy: jax.Array, clip: jax.Array, ent_coef: jax.Array, vf_coef: jax.Array,
             norm_adv: bool = True, clip_vloss: bool = True) -> tuple[jax.Array, dict]:
    """Clipped surrogate - ent_coef * entropy + vf_coef * value loss, with the minibatch's diagnostics.

    Advantages are normalised per minibatch with the unbiased std (torch's); the value loss is
    0.5 * max((V - R)^2, (V_old + clip(V - V_old, +-clip) - R)^2) when ``clip_vloss``."""
    logratio = logp - old_logp
    ratio = jnp.exp(logratio)
    if norm_adv:
        adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
    pg_loss = jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1 - clip, 1 + clip)).mean()
    if clip_vloss:
        v_clipped = old_value + jnp.clip(value - old_value, -clip, clip)
        v_loss = 0.5 * jnp.maximum((value - ret) ** 2, (v_clipped - ret) ** 2).mean()
    else:
        v_loss = 0.5 * ((value - ret) ** 2).mean()
    entropy = entropy.mean()
    loss = pg_loss - ent_coef * entropy + vf_coef * v_loss
    aux = {
        "losses/policy_loss": pg_loss,
        "losses/value_loss": v_loss,
        "losses/entropy": entropy,
        "losses/old_approx_kl": (-logratio).mean(),
        "losses/approx_kl": ((ratio - 1) - logratio).mean(),
        "losses/clipfrac": (jnp.abs(ratio - 1.0) > clip).astype(jnp.float32).mean(),
    }
    return loss, aux
