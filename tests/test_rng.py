"""``algos.rng``: ``split`` gives ``jax.random.split``'s keys bit for bit, and XLA computes each hash once where
plain splits feeding several kernels are re-hashed inside each of them (fewer threefry rounds in the program),
in the off-policy learners' steps and in every learner's init."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.algos import rng


def test_split_is_jax_split_bit_for_bit():
    for seed in (0, 1, 12345):
        k = jax.random.PRNGKey(seed)
        for num in (2, 3, 7):
            want = np.asarray(jax.random.split(k, num))
            np.testing.assert_array_equal(np.asarray(jax.jit(rng.split, static_argnums=1)(k, num)), want)
            np.testing.assert_array_equal(np.asarray(rng.split(k, num)), want)  # eager too
    batched = jax.vmap(lambda k: rng.split(k, 4))(jax.random.split(jax.random.PRNGKey(5), 3))
    np.testing.assert_array_equal(np.asarray(batched),
                                  np.asarray(jax.vmap(lambda k: jax.random.split(k, 4))(jax.random.split(
                                      jax.random.PRNGKey(5), 3))))
    typed = jax.random.key(9)  # typed keys stay typed, with the same key data
    got = rng.split(typed, 3)
    assert jax.dtypes.issubdtype(got.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(jax.jit(rng.split, static_argnums=1)(typed, 3))),
                                  np.asarray(jax.random.key_data(jax.random.split(typed, 3))))
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(got)),
                                  np.asarray(jax.random.key_data(jax.random.split(typed, 3))))
    edges = np.array([0, 1, 2**16 - 1, 2**16, 2**31, 2**32 - 2, 2**32 - 1], np.uint32)
    np.testing.assert_array_equal(np.asarray(jax.jit(rng.computed_once)(jnp.asarray(edges))), edges)
    with pytest.raises(TypeError, match="uint32"):
        rng.computed_once(jnp.ones(3, jnp.int32))


def _xors(split) -> int:
    """Optimized-HLO xor count of a chain of splits whose keys feed several outputs (a learner step's shape)."""

    def step(key):
        key, k_a, k_b, k_train = split(key, 4)
        k_c, k_d = split(k_train, 2)
        draws = [jax.random.uniform(k, (3,)) for k in (k_a, k_b, k_c, k_d)]
        return key, jnp.stack(draws).sum(0), draws[0] * 2, draws[3] + 1

    text = jax.jit(step).lower(jax.random.PRNGKey(0)).compile().as_text()
    return len(re.findall(r" xor\(", text))


def _chain(split, key):
    key, k_a, k_train = split(key, 3)
    k_c, k_d = split(k_train, 2)
    return key, jax.random.normal(k_a, (4,)), jax.random.normal(k_c, (4,)), jax.random.normal(k_d, (4,))


def test_each_hash_is_computed_once():
    plain, once = _xors(jax.random.split), _xors(rng.split)
    assert once < plain, (once, plain)  # the split hashes are no longer copied into every consumer
    a = jax.jit(lambda k: _chain(jax.random.split, k))(jax.random.PRNGKey(3))
    b = jax.jit(lambda k: _chain(rng.split, k))(jax.random.PRNGKey(3))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_init_splits_are_hashed_once_with_the_same_carry():
    """PPO's init and the gymnax reset split through ``rng.split``: built as before (plain ``jax.random.split``
    in those modules, ``experiments/init_compile_ab.py``'s ``build``), the init program holds more threefry
    rounds, and both give the same carry bit for bit."""
    import sys
    from dataclasses import replace
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import init_compile_ab

    from plasticine_jax.algos import registry

    cfg = replace(registry.config_module("ppo").PRESETS["cartpole"], num_envs=3, num_steps=8,
                  num_minibatches=2)
    learner = registry.learner_module("ppo").make_train(cfg, env_id="gymnax:CartPole-v1", total_timesteps=48)
    keys = jax.random.PRNGKey(7)[None]
    hp = {k: jnp.full((1,), v, jnp.float32) for k, v in learner.default_hparams().items()}
    built = {v: init_compile_ab.build(learner, keys, hp, split_once=v)[0] for v in (False, True)}
    xors = {v: c.as_text().count(" xor(") for v, c in built.items()}
    assert xors[True] < 0.7 * xors[False], xors
    leaves = {v: jax.tree.leaves(jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key) else x, c(keys, hp))) for v, c in built.items()}
    for a, b in zip(leaves[False], leaves[True], strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
