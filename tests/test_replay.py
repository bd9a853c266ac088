"""Replay buffer: ring order against a deque model, sampling only from the filled part, jit/vmap/scan, dtypes."""

from __future__ import annotations

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.algos.replay import ReplayState, replay_add, replay_init, replay_sample, replay_size


def _example() -> dict:
    return {"id": jnp.zeros((), jnp.int32), "obs": jnp.zeros((2,), jnp.float32)}


def _batch(ids) -> dict:
    ids = jnp.asarray(ids, jnp.int32)
    return {"id": ids, "obs": jnp.stack([ids, -ids], axis=-1).astype(jnp.float32)}


def _oldest_first(state: ReplayState) -> np.ndarray:
    """Stored ids from oldest to newest, read through position/size as a user of the ring would."""
    size, pos = int(replay_size(state)), int(state.position)
    order = (pos - size + np.arange(size)) % state.capacity
    return np.asarray(state.storage["id"])[order]


def test_add_below_capacity_keeps_order_and_counts():
    state = replay_init(10, _example())
    assert int(replay_size(state)) == 0
    state = replay_add(state, _batch([1, 2, 3]))
    state = replay_add(state, _batch([4, 5, 6, 7]))
    assert int(replay_size(state)) == 7
    assert int(state.position) == 7
    np.testing.assert_array_equal(np.asarray(state.storage["id"]), [1, 2, 3, 4, 5, 6, 7, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(state.storage["obs"])[:7, 1], -np.arange(1, 8))
    np.testing.assert_array_equal(np.asarray(state.storage["obs"])[7:], 0)


def test_wraparound_matches_deque_reference():
    capacity = 7
    rng = np.random.default_rng(0)
    state = replay_init(capacity, _example())
    add = jax.jit(replay_add)
    ref: deque[int] = deque(maxlen=capacity)
    next_id, wrapped = 1, False
    for _ in range(40):
        n = int(rng.integers(1, capacity + 1))
        ids = list(range(next_id, next_id + n))
        next_id += n
        state = add(state, _batch(ids))
        ref.extend(ids)
        wrapped |= next_id - 1 > capacity
        assert int(replay_size(state)) == len(ref)
        np.testing.assert_array_equal(_oldest_first(state), list(ref))
        # The obs leaf moved with its id: slots are written together.
        np.testing.assert_array_equal(np.asarray(state.storage["obs"])[:, 0], np.asarray(state.storage["id"]))
    assert wrapped and int(replay_size(state)) == capacity


def test_full_buffer_overwrites_exact_slots():
    state = replay_init(4, _example())
    state = replay_add(state, _batch([1, 2, 3]))
    state = replay_add(state, _batch([4, 5, 6]))  # 5, 6 overwrite slots 0, 1 (ids 1, 2: the oldest)
    np.testing.assert_array_equal(np.asarray(state.storage["id"]), [5, 6, 3, 4])
    assert int(state.position) == 2 and int(replay_size(state)) == 4
    state = replay_add(state, _batch([7, 8, 9, 10]))  # N == capacity replaces everything
    np.testing.assert_array_equal(_oldest_first(state), [7, 8, 9, 10])


def test_samples_only_from_filled_region_and_roughly_uniform():
    state = replay_init(100, _example())
    filled = [11, 12, 13, 14, 15]
    state = replay_add(state, _batch(filled))
    n = 10_000
    ids = np.asarray(jax.jit(replay_sample, static_argnums=2)(state, jax.random.key(0), n)["id"])
    assert ids.shape == (n,)
    assert set(np.unique(ids)) == set(filled)  # never the zero-filled empty slots, and every filled one
    counts = np.array([(ids == i).sum() for i in filled])
    # Expected 2000 each, std ~40: +-250 is > 6 sigma, yet catches any slot picked twice or half as often.
    assert np.all(np.abs(counts - n / 5) < 250), counts
    chi2 = float(((counts - n / 5) ** 2 / (n / 5)).sum())
    assert chi2 < 30.0, chi2  # 4 dof: P(chi2 > 30) ~ 5e-6


def test_samples_cover_whole_buffer_after_wraparound():
    state = replay_init(8, _example())
    for start in range(1, 30, 4):
        state = replay_add(state, _batch(range(start, start + 4)))
    ids = np.asarray(replay_sample(state, jax.random.key(1), 4000)["id"])
    assert set(np.unique(ids)) == set(_oldest_first(state).tolist()) == set(range(25, 33))


def test_sample_on_empty_buffer_returns_slot_zero():
    state = replay_init(16, _example())
    out = jax.jit(replay_sample, static_argnums=2)(state, jax.random.key(0), 5)
    assert out["id"].shape == (5,) and out["obs"].shape == (5, 2)
    np.testing.assert_array_equal(np.asarray(out["id"]), 0)


def test_dtypes_preserved_in_storage_and_samples():
    example = {
        "obs": np.zeros((3, 3), np.uint8),
        "action": jnp.zeros((), jnp.int32),
        "reward": jnp.zeros((), jnp.float32),
        "done": jnp.zeros((), jnp.bool_),
    }
    state = replay_init(6, example)
    batch = {
        "obs": jnp.full((2, 3, 3), 255, jnp.uint8),
        "action": jnp.array([3, 4], jnp.int32),
        "reward": jnp.array([0.5, -1.0], jnp.float32),
        "done": jnp.array([True, False]),
    }
    state = replay_add(state, batch)
    out = replay_sample(state, jax.random.key(0), 4)
    for name, leaf in example.items():
        assert state.storage[name].dtype == leaf.dtype, name
        assert state.storage[name].shape == (6, *leaf.shape), name
        assert out[name].dtype == leaf.dtype, name
    assert state.storage["obs"].nbytes == 6 * 9  # one byte per pixel
    np.testing.assert_array_equal(np.asarray(out["obs"]), 255)


def test_jit_vmap_over_seeds_inside_scan():
    """3 seeds, each its own buffer inside a scan carry: contents per seed, different keys -> different samples."""
    capacity, n_envs, steps, batch_size = 10, 3, 6, 32  # 18 adds into 10 slots: wraps around

    def train(seed: jax.Array, key: jax.Array):
        state = replay_init(capacity, _example())

        def step(carry, t):
            state, key = carry
            ids = seed * 1000 + t * n_envs + jnp.arange(n_envs)
            state = replay_add(state, _batch(ids))
            key, sample_key = jax.random.split(key)
            return (state, key), replay_sample(state, sample_key, batch_size)["id"]

        (state, _), samples = jax.lax.scan(step, (state, key), jnp.arange(steps))
        return state, samples

    seeds = jnp.arange(3)
    state, samples = jax.jit(jax.vmap(train))(seeds, jax.random.split(jax.random.key(0), 3))
    assert samples.shape == (3, steps, batch_size)
    np.testing.assert_array_equal(np.asarray(state.size), [capacity] * 3)

    ref = list(range(steps * n_envs))[-capacity:]
    for s in range(3):
        one = jax.tree.map(lambda x, s=s: x[s], state)
        np.testing.assert_array_equal(_oldest_first(one), [s * 1000 + i for i in ref])  # only its own data
        for t in range(steps):
            written = s * 1000 + np.arange((t + 1) * n_envs)[-capacity:]
            assert np.isin(np.asarray(samples[s, t]), written).all(), (s, t)  # never unwritten or other-seed ids
    local = np.asarray(samples) % 1000  # same per-seed data layout, so only the keys can make these differ
    assert not np.array_equal(local[0], local[1]) and not np.array_equal(local[1], local[2])

    # The vmapped scan gives exactly what a plain Python loop of adds gives for one seed.
    loop = replay_init(capacity, _example())
    for t in range(steps):
        loop = replay_add(loop, _batch(2000 + t * n_envs + np.arange(n_envs)))
    np.testing.assert_array_equal(np.asarray(state.storage["id"][2]), np.asarray(loop.storage["id"]))
    assert int(state.position[2]) == int(loop.position)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="capacity"):
        replay_init(0, _example())
    state = replay_init(4, _example())
    with pytest.raises(ValueError, match="N=5"):
        replay_add(state, _batch(range(5)))
    with pytest.raises(ValueError, match="leaf shape"):
        replay_add(state, {"id": jnp.zeros((2,), jnp.int32), "obs": jnp.zeros((2, 3))})
    with pytest.raises(ValueError, match="leading"):
        replay_add(state, {"id": jnp.zeros((2,), jnp.int32), "obs": jnp.zeros((3, 2))})
