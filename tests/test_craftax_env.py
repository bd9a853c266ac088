"""Craftax backend: shapes, terminated vs truncated, optimistic resets (one compile of Classic-Symbolic)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.envs.craftax_env import CraftaxVecEnv, optimistic_reset_indices
from plasticine_jax.errors import ConfigError

N = 8


@pytest.fixture(scope="module")
def env():
    # reset_ratio=2 -> 4 fresh worlds per step; a 3-step time limit forces truncation quickly.
    return CraftaxVecEnv("Craftax-Classic-Symbolic-v1", N, reset_ratio=2, max_timesteps=3)


@pytest.fixture(scope="module")
def fns(env):
    return jax.jit(env.reset), jax.jit(env.step)


def _distinct_rows(x) -> int:
    x = np.asarray(x).reshape(x.shape[0], -1)
    return len({row.tobytes() for row in x})


def test_optimistic_reset_indices_on_synthetic_masks():
    n, num_resets = 16, 4
    fn = jax.jit(optimistic_reset_indices, static_argnums=2)
    rng = np.random.default_rng(0)
    for trial in range(20):
        done = rng.random(n) < rng.choice([0.0, 0.1, 0.5, 1.0])
        idx = np.asarray(fn(jax.random.key(trial), jnp.asarray(done), num_resets))
        assert idx.shape == (n,) and idx.min() >= 0 and idx.max() < num_resets
        used = set(idx[done].tolist())
        if done.sum() >= num_resets:  # every fresh state is handed to some done env
            assert used == set(range(num_resets))
        else:  # too few done envs: each gets its own fresh state
            assert len(used) == done.sum()
    # vmap over seeds (different keys and masks) works with static shapes
    dones = jnp.asarray(rng.random((3, n)) < 0.5)
    out = jax.vmap(lambda k, d: optimistic_reset_indices(k, d, num_resets))(
        jax.random.split(jax.random.key(0), 3), dones
    )
    assert out.shape == (3, n)


def test_spaces_and_shapes(env, fns):
    reset, step = fns
    assert env.observation_space.shape == (1345,) and env.action_space.n == 17
    assert env.num_resets == 4 and len(env.achievement_names) == 22
    obs, state = reset(jax.random.key(0))
    assert obs.shape == (N, 1345) and obs.dtype == jnp.float32
    obs, state, reward, term, trunc, info = step(jax.random.key(1), state, jnp.zeros((N,), jnp.int32))
    assert obs.shape == (N, 1345) and obs.dtype == jnp.float32
    assert reward.shape == (N,) and reward.dtype == jnp.float32
    assert term.shape == trunc.shape == (N,) and term.dtype == trunc.dtype == jnp.bool_
    assert info["final_obs"].shape == (N, 1345) and info["achievements"].shape == (N, 22)


def test_time_limit_truncates_and_resets_with_fresh_worlds(env, fns):
    reset, step = fns
    obs, state = reset(jax.random.key(2))
    noop = jnp.zeros((N,), jnp.int32)
    for t in range(3):
        obs, state, reward, term, trunc, info = step(jax.random.key(10 + t), state, noop)
        if t < 2:
            assert not np.asarray(term | trunc).any()
    assert np.asarray(trunc).all() and not np.asarray(term).any()
    assert (np.asarray(state.timestep) == 0).all()
    assert (np.abs(np.asarray(obs) - np.asarray(info["final_obs"])).sum(1) > 0).all()
    # all 8 envs done, 4 fresh worlds: each is used, shared by duplicates
    assert _distinct_rows(state.map) == env.num_resets
    assert _distinct_rows(obs) == env.num_resets


def test_death_terminates_and_only_done_envs_reset(env, fns):
    reset, step = fns
    obs, state = reset(jax.random.key(3))
    dead = np.zeros(N, bool)
    dead[[0, 5]] = True
    state = state.replace(player_health=jnp.where(jnp.asarray(dead), -10, state.player_health))
    old_map = np.asarray(state.map)
    obs, state, reward, term, trunc, info = step(jax.random.key(4), state, jnp.zeros((N,), jnp.int32))
    np.testing.assert_array_equal(np.asarray(term), dead)
    assert not np.asarray(trunc).any()
    ts = np.asarray(state.timestep)
    assert (ts[dead] == 0).all() and (ts[~dead] == 1).all()
    np.testing.assert_array_equal(np.asarray(obs)[~dead], np.asarray(info["final_obs"])[~dead])
    assert (np.abs(np.asarray(obs)[dead] - np.asarray(info["final_obs"])[dead]).sum(1) > 0).all()
    new_map = np.asarray(state.map)
    assert not (new_map[dead] == old_map[dead]).all(axis=(1, 2)).any()  # fresh worlds
    assert _distinct_rows(new_map[dead]) == 2  # fewer done envs than fresh worlds: one each


def test_unknown_ids_and_options():
    with pytest.raises(ConfigError, match="Craftax-Classic-Symbolic-v1"):
        CraftaxVecEnv("Craftax-Foo-v1", 4)
    with pytest.raises(ConfigError, match="max_timesteps"):
        CraftaxVecEnv("Craftax-Classic-Symbolic-v1", 4, max_steps=10)


def test_full_craftax_construction():
    env = CraftaxVecEnv("Craftax-Symbolic-v1", 32)
    assert env.observation_space.shape == (8268,) and env.action_space.n == 43
    assert env.num_resets == 2 and len(env.achievement_names) == 67


def test_ppo_logs_craftax_achievement_rates():
    """The open-craftax scenario's progress measure: PPO on Craftax logs one success rate per achievement
    (charts/achievements/<name>, the aggregation itself is checked against numpy in test_continual.py)."""
    from dataclasses import replace

    from plasticine_jax.algos import ppo
    from plasticine_jax.algos.ppo_config import PRESETS

    cfg = replace(PRESETS["craftax"], num_envs=4, num_steps=2, num_minibatches=2, update_epochs=1,
                  net=replace(PRESETS["craftax"].net, widths=(8,)))
    learner = ppo.make_train(cfg, "craftax:Craftax-Classic-Symbolic-v1", 8)
    names = [n for n in learner.metric_names() if n.startswith("charts/achievements/")]
    env = CraftaxVecEnv("Craftax-Classic-Symbolic-v1", 2)
    assert names == sorted(f"charts/achievements/{a}" for a in env.achievement_names)
    assert "charts/achievements/collect_wood" in names and len(names) == 22
