"""TD3: learns Pendulum; vmap == single runs; uniform warm-up with frozen params; exact Polyak targets; delayed
actor; interventions gated to training and mirrored into targets; config errors."""

from __future__ import annotations

import time
from dataclasses import replace

import jax
import numpy as np
import optax
import pytest

from plasticine_jax.algos.td3 import make_train
from plasticine_jax.algos.td3_config import PRESETS, validate
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions import reset_layers, shrink_perturb
from plasticine_jax.metrics.config import MetricsConfig

# A tiny run whose steps can be reasoned about: 2 env steps per update and learning_starts 2, so update 0 is pure
# warm-up and every later update has exactly 2 critic steps and 1 actor step (the last step, with policy_frequency
# 2), hence exactly one Polyak update of the targets at its very end.
SHORT = replace(PRESETS["pendulum"], steps_per_update=2, learning_starts=2, batch_size=16, buffer_size=64,
                metric_batch=32, policy_frequency=2,
                net=replace(PRESETS["pendulum"].net, widths=(32, 32)))
NUM = 6  # updates


def _adam_count(opt_state) -> np.ndarray:
    found = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
    counts = [v for path, v in found if getattr(path[-1], "tuple_name", "") == "ScaleByAdamState"]
    assert len(counts) == 1, found
    return np.asarray(counts[0])


def _close(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def _equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.fixture(scope="module")
def short_run():
    """States after each of NUM single updates of 2 vmapped seeds, and the per-update metrics."""
    trainer = make_train(SHORT, "gymnax:Pendulum-v1", SHORT.steps_per_update * NUM, metrics=MetricsConfig(every=2))
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    step = jax.jit(jax.vmap(trainer.run_updates, in_axes=(0, None, None)), static_argnums=2)
    states = [jax.vmap(trainer.init)(keys)]
    outs = []
    for i in range(NUM):
        state, out = step(states[-1], i, 1)
        states.append(state)
        outs.append({k: np.asarray(v)[:, 0] for k, v in out.items()})
    return trainer, keys, states, outs


def test_warmup_is_uniform_random_and_leaves_params_alone(short_run):
    trainer, _, states, outs = short_run
    for name in ("actor", "critic"):
        u0, u1, u2 = (s.units[name] for s in states[:3])
        # update 0 ends before learning_starts: no optimizer step, no target update, no intervention
        assert _equal(u1.params, u0.params) and _equal(u1.target, u0.target), name
        assert (_adam_count(u1.opt_state) == 0).all()
        # update 1 trains: every parameter tensor of both units moves
        assert not any(np.array_equal(np.asarray(a), np.asarray(b))
                       for a, b in zip(jax.tree.leaves(u2.params), jax.tree.leaves(u1.params), strict=True)), name
    assert np.isnan(outs[0]["losses/qf_loss"]).all() and np.isfinite(outs[1]["losses/qf_loss"]).all()
    # warm-up actions: uniform on [low, high] = [-2, 2] (std 4/sqrt(12) = 1.155), whatever the actor says
    actor = jax.tree.map(lambda x: x[0], states[0].units["actor"])
    obs = states[0].obs[0]
    act = jax.jit(jax.vmap(lambda k, w: trainer._act(actor, obs, k, w), in_axes=(0, None)))
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    rand = np.asarray(act(keys, True)).ravel()
    assert rand.min() >= -2.0 and rand.max() <= 2.0
    assert rand.min() < -1.95 and rand.max() > 1.95  # covers the whole box
    assert abs(rand.mean()) < 0.06 and abs(rand.std() - 4 / np.sqrt(12)) < 0.04  # 4000 draws: se ~0.018, 0.01
    assert np.histogram(rand, bins=4, range=(-2, 2))[0].min() > 900  # ~1000 per quarter
    # after warm-up: the actor's action plus N(0, (0.1 * 2)^2) exploration noise, clipped to the bounds
    pi = np.asarray(trainer._policy(actor.params, actor.net_state, obs)).ravel()
    noisy = np.asarray(act(keys, False)).ravel()
    assert abs(noisy.std() - 0.2) < 0.02 and abs(np.median(noisy) - pi[0]) < 0.03


def test_targets_move_by_exactly_polyak(short_run):
    """Each training update ends with its single actor step, so its targets are tau * online + (1 - tau) * old."""
    _, _, states, _ = short_run
    tau = SHORT.tau
    for i in range(1, NUM):
        for name in ("actor", "critic"):
            old, new = states[i].units[name], states[i + 1].units[name]
            want = jax.tree.map(lambda t, o: tau * o + (1 - tau) * t, old.target, new.params)
            _close(new.target, want, rtol=1e-6, atol=1e-8)
            assert not _equal(new.target, old.target)


def test_actor_is_delayed(short_run):
    """policy_frequency 2: the actor (and target) updates on every 2nd critic step -> half the Adam steps."""
    _, _, states, outs = short_run
    for i in range(NUM + 1):
        trained = max(i - 1, 0)  # updates that trained
        assert (_adam_count(states[i].units["critic"].opt_state) == 2 * trained).all()
        assert (_adam_count(states[i].units["actor"].opt_state) == trained).all()
    for k in ("plasticity/actor/gradient_norm", "plasticity/critic/gradient_norm", "losses/actor_loss",
              "losses/qf1_loss", "losses/qf2_loss", "losses/qf1_values", "losses/qf2_values"):
        assert np.isfinite(outs[-1][k]).all(), k
    assert "plasticity/policy_entropy" not in outs[-1]
    # heavy metrics every 2 updates, on each unit's own features (critic: concat(s, a) through Q1 and Q2)
    for k in ("plasticity/actor/dormant_ratio", "plasticity/critic/effective_rank", "plasticity/critic/q2/stable_rank"):
        assert np.isfinite(outs[1][k]).all() and np.isnan(outs[0][k]).all(), k


def test_vmap_equals_single_runs(short_run):
    trainer, keys, states, outs = short_run
    step = jax.jit(trainer.run_updates, static_argnums=2)
    for s in range(2):
        state = trainer.init(keys[s])
        for i in range(NUM):
            state, out = step(state, i, 1)
            for k, v in out.items():
                np.testing.assert_allclose(np.asarray(v)[0], outs[i][k][s], rtol=1e-4, atol=1e-5, err_msg=k)
        _close(state.units, jax.tree.map(lambda x, s=s: x[s], states[-1].units), rtol=1e-4, atol=1e-6)


def test_interventions_wait_for_training_and_mirror_into_targets():
    """Soft SnP (after every optimizer step) and head resets every update: nothing happens during warm-up; once
    training, the reset heads are copied into the target networks (the torso targets stay Polyak-averaged)."""
    ivs = [shrink_perturb.make(shrink_perturb.Options(coef=0.9)),
           reset_layers.make(reset_layers.Options(which="heads", frequency=1))]
    trainer = make_train(SHORT, "gymnax:Pendulum-v1", 2 * SHORT.steps_per_update, ivs, MetricsConfig(every=0))
    step = jax.jit(trainer.run_updates, static_argnums=2)
    s0 = trainer.init(jax.random.PRNGKey(0))
    s1, _ = step(s0, 0, 1)
    s2, out = step(s1, 1, 1)
    for name, head in (("actor", "policy_head"), ("critic", "q1_head")):
        assert _equal(s1.units[name].params, s0.units[name].params), name
        u = s2.units[name]
        assert _equal(u.target[head], u.params[head]), name
        assert not _equal(u.target["q1_torso" if name == "critic" else "torso"],
                          u.params["q1_torso" if name == "critic" else "torso"])
    for k in ("losses/qf_loss", "losses/actor_loss", "plasticity/actor/weight_difference"):
        assert np.isfinite(np.asarray(out[k])).all(), k


def test_pendulum_learns():
    """2 vmapped seeds, 20k env steps (learning starts at 1k): the mean return of each seed's last 10 episodes
    (2000 steps) reaches >= -250 on average (the issue's bar; random play ~ -1200, a solved swing-up ~ -150),
    each seed >= -350. Measured on a loaded 2-core CPU: ~-170 per seed at 20k (solved by ~10k), ~25 s compile +
    ~25-45 s run."""
    t0 = time.time()
    trainer = make_train(PRESETS["pendulum"], "gymnax:Pendulum-v1", 20_000, metrics=MetricsConfig(every=100))
    _, out = jax.jit(jax.vmap(trainer.train))(jax.random.split(jax.random.PRNGKey(0), 2))
    ret = np.asarray(out["charts/episodic_return"])
    last = np.array([r[~np.isnan(r)][-10:].mean() for r in ret])
    first = np.array([r[~np.isnan(r)][:5].mean() for r in ret])
    print(f"td3 pendulum: first {first}, last-10 {last}, {time.time() - t0:.1f}s")
    assert (first < -900).all(), first  # it started from random play
    assert last.mean() >= -250 and (last >= -350).all(), last


def test_config_errors():
    with pytest.raises(ConfigError, match="pqn, c51 or ppo"):
        make_train(PRESETS["pendulum"], "gymnax:CartPole-v1", 10_000)
    with pytest.raises(ConfigError, match="less than one update"):
        make_train(PRESETS["pendulum"], "gymnax:Pendulum-v1", 10)
    bad = {"batch_size": 10**7, "tau": 0.0, "gamma": 1.5, "policy_noise": -0.1, "learning_starts": -1,
           "policy_frequency": 0, "actor_lr": 0.0, "num_envs": 0}
    for k, v in bad.items():
        with pytest.raises(ConfigError, match=f"--td3.{k.replace('_', '-')}"):
            validate(replace(PRESETS["pendulum"], **{k: v}))
    validate(PRESETS["dmc"])
    validate(PRESETS["pendulum"])
