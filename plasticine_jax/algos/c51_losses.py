"""C51 (reference §1.5 "N C51 Atari", ``N:plasticine/c51_atari_base.py``; CleanRL ``c51_atari.py``) as pure
functions: the categorical projection of the Bellman target, the cross-entropy loss and Q = E[Z].

Shapes: B batch, A actions, K atoms. The support is a fixed, evenly spaced grid z_0 < ... < z_{K-1}
(``make_support``; reference: 51 atoms on [-10, 10]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PMF_CLAMP = 1e-5  # the reference clamps the online pmf to [1e-5, 1 - 1e-5] before the log


def make_support(v_min: float, v_max: float, n_atoms: int) -> jax.Array:
    """The fixed atom grid ``torch.linspace(v_min, v_max, n_atoms)`` (float32)."""
    return jnp.linspace(v_min, v_max, n_atoms, dtype=jnp.float32)


def categorical_projection(
    next_pmf: jax.Array,
    rewards: jax.Array,
    dones: jax.Array,
    gamma: float | jax.Array,
    support: jax.Array,
) -> jax.Array:
    """Project the distribution of r + gamma (1 - d) Z(s', a*) back onto the fixed support (CleanRL c51).

    With dz = z_1 - z_0:  Tz_j = clip(r + gamma (1 - d) z_j, v_min, v_max),  b_j = (Tz_j - v_min) / dz,
    l_j = clip(floor(b_j), 0, K-1),  u_j = clip(ceil(b_j), 0, K-1), and atom j's mass p_j is split as

        m[l_j] += (u_j + [l_j == u_j] - b_j) p_j,      m[u_j] += (b_j - l_j) p_j.

    The ``[l_j == u_j]`` term is the reference's fix for b_j landing exactly on an atom: then all of p_j goes to
    that atom (without it the mass would be dropped). A scatter-add (O(B K), 5-15x faster on CPU than one-hot
    contractions, which cost O(B K^2)).

    Args:
        next_pmf: [B, K] target-network pmf of the greedy next action.
        rewards: [B]; dones: [B] bool/float (true terminations: no bootstrap).
        gamma: discount; support: [K] atoms.

    Returns:
        [B, K] projected target pmf (each row sums to Σ next_pmf = 1).
    """
    n_atoms = support.shape[0]
    dtype = next_pmf.dtype
    v_min, v_max = support[0], support[-1]
    delta_z = support[1] - support[0]
    not_done = 1.0 - dones.astype(dtype)
    tz = jnp.clip(rewards[:, None] + gamma * not_done[:, None] * support[None, :], v_min, v_max)
    b = (tz - v_min) / delta_z
    lower = jnp.clip(jnp.floor(b), 0, n_atoms - 1)
    upper = jnp.clip(jnp.ceil(b), 0, n_atoms - 1)
    m_lower = (upper + (lower == upper).astype(dtype) - b) * next_pmf
    m_upper = (b - lower) * next_pmf
    rows = jnp.arange(next_pmf.shape[0])[:, None]
    out = jnp.zeros_like(next_pmf).at[rows, lower.astype(jnp.int32)].add(m_lower)
    return out.at[rows, upper.astype(jnp.int32)].add(m_upper)


def c51_loss(logits_taken: jax.Array, target_pmf: jax.Array) -> jax.Array:
    """Cross-entropy of the online pmf against the projected target, mean over the batch.

    Reference: ``(-(target_pmfs * old_pmfs.clamp(1e-5, 1 - 1e-5).log()).sum(-1)).mean()`` with
    ``old_pmfs = softmax(logits)`` for the taken actions. ``target_pmf`` is stop-gradiented.

    Args:
        logits_taken: [B, K] online logits of the actions in the batch.
        target_pmf: [B, K] from ``categorical_projection``.
    """
    target_pmf = jax.lax.stop_gradient(target_pmf)
    pmf = jax.nn.softmax(logits_taken, axis=-1)
    log_pmf = jnp.log(jnp.clip(pmf, PMF_CLAMP, 1.0 - PMF_CLAMP))
    return jnp.mean(-jnp.sum(target_pmf * log_pmf, axis=-1))


def q_values(logits: jax.Array, support: jax.Array) -> jax.Array:
    """Q(s, a) = Σ_k softmax(logits)[a, k] z_k (CleanRL ``(pmfs * atoms).sum(2)``).

    Args:
        logits: [..., A, K]; support: [K].

    Returns:
        [..., A].
    """
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * support, axis=-1)
