"""The packed-sort minibatch shuffle: a permutation, uniform, vmappable, jax's collision criterion for its rounds."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from plasticine_jax.algos import shuffle


@pytest.mark.parametrize("n", [1, 2, 7, 500, 4096])
def test_is_a_permutation_and_vmaps(n):
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: shuffle.permutation(k, n)))(keys))
    assert perms.shape == (8, n) and perms.dtype == np.int32
    for p in perms:
        np.testing.assert_array_equal(np.sort(p), np.arange(n))
    if n >= 7:  # different keys, different orders (a no-op shuffle would return arange for every key)
        assert len({p.tobytes() for p in perms}) == 8
        assert not any(np.array_equal(p, np.arange(n)) for p in perms)


def test_rounds_meet_jax_collision_criterion():
    """Enough rounds that the random key bits over all rounds reach 3 * log2(n) (jax.random.permutation's
    criterion), and no more."""
    for n in [2, 64, 256, 257, 500, 2048, 8192, 2**20, 2**24]:
        free = 32 - max(1, (n - 1).bit_length())
        r = shuffle.rounds_for(n)
        assert r * free >= 3 * math.log2(n) > (r - 1) * free
    assert shuffle.rounds_for(256) == 1 and shuffle.rounds_for(500) == 2


def test_positions_are_uniform():
    """Every element lands in every position equally often: chi-square over 20,000 shuffles of 6 elements, and
    all 720 orders of 6 appear with frequencies a chi-square test cannot tell from uniform."""
    n, draws = 6, 20_000
    perms = np.asarray(jax.jit(jax.vmap(lambda k: shuffle.permutation(k, n)))(
        jax.random.split(jax.random.PRNGKey(1), draws)))
    counts = np.zeros((n, n))
    for pos in range(n):
        counts[:, pos] = np.bincount(perms[:, pos], minlength=n)
    assert stats.chisquare(counts.ravel(), np.full(n * n, draws / n)).pvalue > 1e-3
    codes = (perms * (n ** np.arange(n))).sum(axis=1)
    _, freq = np.unique(codes, return_counts=True)
    assert len(freq) == math.factorial(n)
    assert stats.chisquare(freq).pvalue > 1e-3


def test_second_round_composes_the_first():
    """With two rounds the result is round 1's order re-shuffled by round 2, computed here in numpy."""
    n = 500
    key = jax.random.PRNGKey(7)
    assert shuffle.rounds_for(n) == 2
    bits = np.asarray(jax.random.bits(key, (2, n), jnp.uint32)).astype(np.int64)
    low = (1 << 9) - 1
    orders = [np.sort((b & ~low) | np.arange(n)) & low for b in bits]
    np.testing.assert_array_equal(np.asarray(shuffle.permutation(key, n)), orders[0][orders[1]])


def _sort_operand_counts(fn, *args) -> list[int]:
    """Operand count of every sort in ``fn``'s jaxpr, nested jaxprs included."""
    out = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "sort":
                out.append(len(eqn.invars))
            for sub in jax.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return out


def test_sorts_one_array_and_falls_back_for_huge_batches():
    """500 samples: two single-operand sorts (the fast path), no key-value sort; over 2**24 samples: jax's own
    key-value shuffle."""
    key = jax.random.PRNGKey(0)
    assert _sort_operand_counts(lambda k: shuffle.permutation(k, 500), key) == [1, 1]
    assert _sort_operand_counts(lambda k: jax.random.permutation(k, 500), key) == [2]
    n = 2**24 + 1
    assert _sort_operand_counts(lambda k: shuffle.permutation(k, n), key) == \
        _sort_operand_counts(lambda k: jax.random.permutation(k, n), key)
    assert jax.eval_shape(lambda k: shuffle.permutation(k, n), key).shape == (n,)


def test_minibatches_share_one_permutation_across_leaves():
    """Every leaf is reordered by the same permutation (rows stay aligned) and split into equal minibatches."""
    n, m = 12, 3
    key = jax.random.PRNGKey(4)
    batch = {"obs": jnp.arange(n * 2, dtype=jnp.float32).reshape(n, 2), "action": jnp.arange(n) * 10}
    out = shuffle.minibatches(key, batch, m)
    perm = np.asarray(shuffle.permutation(key, n))
    assert out["obs"].shape == (m, n // m, 2) and out["action"].shape == (m, n // m)
    np.testing.assert_array_equal(np.asarray(out["obs"]).reshape(n, 2), np.asarray(batch["obs"])[perm])
    np.testing.assert_array_equal(np.asarray(out["action"]).ravel(), np.arange(n)[perm] * 10)
    assert not np.array_equal(perm, np.arange(n))
