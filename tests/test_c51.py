"""C51: schedule helpers (exact past 2^31 steps), learning_starts, the hard target copy, vmap-vs-single
equivalence, Q within the support, config errors, and real learning on CartPole-v1."""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.algos.c51 import block_count_mod, blocks_reached, make_train, mod_mul, steps_below, take_action
from plasticine_jax.algos.c51_config import PRESETS, validate
from plasticine_jax.algos.state import StepCounter
from plasticine_jax.errors import ConfigError
from plasticine_jax.metrics.config import MetricsConfig

# 1 update = 40 env steps = 10 blocks of 4 steps (one gradient step each)
SMALL = replace(PRESETS["cartpole"], steps_per_update=40, train_frequency=4, learning_starts=0, batch_size=16,
                target_network_frequency=80, buffer_size=500, metric_batch=64)


def test_schedule_helpers_are_exact():
    for x, c, k in ((0, 5, 7), (6, 250, 2500), (2499, 2**31 - 1, 2500), (123456, 99999, 2**31 - 1), (3, 0, 1)):
        assert int(mod_mul(jnp.uint32(x % k), c, k)) == (x % k) * c % k
    for u, b, nb, k in ((0, 0, 10, 50), (4, 9, 10, 50), (10**9, 249, 250, 2500), (2**31 - 1, 3, 7, 97)):
        assert int(block_count_mod(jnp.int32(u), jnp.int32(b), nb, k)) == (u * nb + b + 1) % k
    for u, b, nb, n in ((0, 0, 10, 0), (0, 0, 10, 1), (0, 3, 10, 5), (0, 4, 10, 5), (1, 0, 10, 11),
                        (1, 0, 10, 12), (2**31 - 1, 0, 250, 20_000)):
        assert bool(blocks_reached(jnp.int32(u), jnp.int32(b), nb, n)) == (u * nb + b + 1 >= n), (u, b, nb, n)
    assert bool(steps_below(StepCounter.zero().add(999), 1000))
    assert not bool(steps_below(StepCounter.zero().add(1000), 1000))
    assert not bool(steps_below(StepCounter(jnp.uint32(1), jnp.uint32(0)), 1000))  # 2^32 steps
    x = jnp.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(take_action(x, jnp.array([2, 0])), [x[0, 2], x[1, 0]])


def test_target_copy_schedule():
    """target_network_frequency = 2 updates of env steps: after update 1 the target differs from the online
    params (gradient steps since init), right after the copy at the end of update 2 it equals them, after
    update 3 it differs again."""
    c51 = make_train(SMALL, "gymnax:CartPole-v1", 4 * 40, metrics=MetricsConfig(every=0))
    state = c51.init(jax.random.PRNGKey(0))
    run1 = jax.jit(lambda s, i: c51.run_updates(s, i, 1))
    leaves = lambda t: [np.asarray(x) for x in jax.tree.leaves(t)]
    for i, copied in ((0, False), (1, True), (2, False)):
        state, out = run1(state, i)
        u = state.units["q"]
        same = all(np.array_equal(a, b) for a, b in zip(leaves(u.params), leaves(u.target), strict=True))
        assert same == copied, (i, same)
        assert float(out["plasticity/weight_difference"][0]) > 0  # it trained every update


def test_no_gradient_steps_before_learning_starts():
    """learning_starts = 100 env steps with 40 per update: updates 0-1 only collect (params frozen, losses logged
    as 0, gradient norm NaN); update 2 trains from its block that reaches step 100 (blocks of 4 steps: its last 6
    of 10)."""
    c51 = make_train(replace(SMALL, learning_starts=100), "gymnax:CartPole-v1", 3 * 40,
                     metrics=MetricsConfig(every=0))
    state, out = jax.jit(c51.train)(jax.random.PRNGKey(0))
    wd = np.asarray(out["plasticity/weight_difference"])
    assert wd[0] == 0 and wd[1] == 0 and wd[2] > 0
    np.testing.assert_array_equal(np.asarray(out["charts/gradient_steps"]), [0, 0, 6])
    assert np.isnan(np.asarray(out["losses/loss"])[:2]).all()  # no gradient step: no loss to report
    assert np.asarray(out["losses/loss"])[2] > 0
    grad_norm = np.asarray(out["plasticity/gradient_norm"])
    assert np.isnan(grad_norm[:2]).all() and grad_norm[2] > 0
    np.testing.assert_array_equal(np.asarray(out["charts/epsilon"])[:2], 1.0)  # uniform random before start
    assert int(state.buffer.size) == 120 and int(state.steps.to_int()) == 120


def test_vmap_equals_single_runs():
    c51 = make_train(SMALL, "gymnax:CartPole-v1", 3 * 40, metrics=MetricsConfig(every=2))
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    carry_v, out_v = jax.jit(jax.vmap(c51.train))(keys)
    single = jax.jit(c51.train)
    for i in range(2):
        carry_i, out_i = single(keys[i])
        for k in out_i:
            np.testing.assert_allclose(np.asarray(out_v[k][i]), np.asarray(out_i[k]), rtol=1e-4, atol=1e-5,
                                       err_msg=k)
        for a, b in zip(jax.tree.leaves(carry_v.units["q"]), jax.tree.leaves(carry_i.units["q"]), strict=True):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert np.isfinite(np.asarray(out_v["plasticity/stable_rank"])[:, 1]).all()


def test_q_values_within_support_and_hparams_vmap():
    """Q = sum p z lies in [v_min, v_max] even when the true values exceed it (support [-1, 2], CartPole
    returns up to ~100); two learning rates vmapped in one compile give different params."""
    cfg = replace(SMALL, v_min=-1.0, v_max=2.0, n_atoms=11)
    c51 = make_train(cfg, "gymnax:CartPole-v1", 5 * 40, metrics=MetricsConfig(every=0))
    keys = jnp.stack([jax.random.PRNGKey(0)] * 2)
    carry, out = jax.jit(jax.vmap(c51.train))(keys, {"learning_rate": jnp.array([1e-4, 1e-2])})
    q_logged = np.asarray(out["losses/q_values"])
    assert ((q_logged >= -1.0) & (q_logged <= 2.0)).all()
    assert q_logged[1, -1] > 1.5  # the large learning rate pushed Q towards v_max (true values are larger)
    obs = jax.random.normal(jax.random.PRNGKey(1), (256, 4)) * 3.0
    u = jax.tree.map(lambda x: x[1], carry.units["q"])
    q = np.asarray(c51._q(u.params, u, obs))
    assert q.shape == (256, 2) and (q >= -1.0 - 1e-5).all() and (q <= 2.0 + 1e-5).all()
    k = np.asarray(carry.units["q"].params["q_head"]["main"]["kernel"])
    assert not np.allclose(k[0], k[1])


def test_config_errors():
    with pytest.raises(ConfigError, match="c51 needs a discrete action space; use td3 or sac"):
        make_train(SMALL, "gymnax:Pendulum-v1", 10_000)
    warns = make_train(replace(SMALL, learning_starts=400, target_network_frequency=800), "gymnax:CartPole-v1",
                       400).warnings
    assert any("--c51.learning-starts 400 is never reached" in w for w in warns)
    assert any("--c51.target-network-frequency 800 never fires" in w for w in warns)
    with pytest.raises(ConfigError, match="less than one update"):
        make_train(SMALL, "gymnax:CartPole-v1", 10)
    with pytest.raises(ConfigError, match="--c51.steps-per-update must be a multiple of --c51.train-frequency"):
        validate(replace(SMALL, train_frequency=7))
    with pytest.raises(ConfigError, match="--c51.target-network-frequency"):
        validate(replace(SMALL, num_envs=3, target_network_frequency=80))
    bad = {"n_atoms": 1, "v_min": 100.0, "gamma": 1.5, "eps_start": 2.0, "batch_size": 0, "learning_starts": -1,
           "buffer_size": 0, "max_grad_norm": -1.0}
    for field, value in bad.items():
        with pytest.raises(ConfigError, match="--c51." + field.replace("_", "-")):
            validate(replace(SMALL, **{field: value}))
    validate(PRESETS["atari"])  # the reference defaults are valid


def test_cartpole_learns():
    """Preset ``cartpole``, 50k steps, 2 vmapped seeds. Measured (key 0): mean return ~25 before learning,
    ~250 (per seed 200-350) over the last 50 updates; a random policy scores ~22. Threshold 120."""
    c51 = make_train(PRESETS["cartpole"], "gymnax:CartPole-v1", 50_000, metrics=MetricsConfig(every=0))
    _, out = jax.jit(jax.vmap(c51.train))(jax.random.split(jax.random.PRNGKey(0), 2))
    ret = np.asarray(out["charts/episodic_return"])
    final = np.nanmean(ret[:, -50:])
    assert final >= 120, f"final mean return {final} (per seed {np.nanmean(ret[:, -50:], axis=1)})"
    assert np.nanmean(ret[:, :10]) < 40  # random actions before learning_starts
