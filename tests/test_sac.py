"""SAC: learns Pendulum; vmap == single runs; uniform warm-up with frozen params; exact Polyak critic target;
delayed-and-repeated actor (CleanRL); learned temperature; interventions gated to training; config errors."""

from __future__ import annotations

import time
from dataclasses import replace

import jax
import numpy as np
import optax
import pytest

from plasticine_jax.algos.sac import make_train
from plasticine_jax.algos.sac_config import PRESETS, validate
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions import reset_layers, shrink_perturb
from plasticine_jax.metrics.config import MetricsConfig

# A tiny run whose steps can be reasoned about: 1 env step per update and learning_starts 2, so updates 0 and 1
# are warm-up and every later update has exactly one critic step, followed (every 2nd critic step, policy_frequency
# 2) by two actor + temperature steps, and then exactly one Polyak update of the critic target.
SHORT = replace(PRESETS["pendulum"], steps_per_update=1, learning_starts=2, batch_size=16, buffer_size=64,
                metric_batch=32, policy_frequency=2,
                net=replace(PRESETS["pendulum"].net, widths=(32, 32)))
NUM = 6  # updates
WARMUP = 2  # updates before training


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
        init, warm = states[0].units[name], states[WARMUP].units[name]
        # updates before learning_starts: no optimizer step, no target update, no intervention
        assert _equal(warm.params, init.params) and _equal(warm.target, init.target), name
        assert (_adam_count(warm.opt_state) == 0).all()
    # the first training update: the critic takes a step, the (delayed) actor does not yet
    c0, c1 = states[WARMUP].units["critic"], states[WARMUP + 1].units["critic"]
    assert not any(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(jax.tree.leaves(c1.params), jax.tree.leaves(c0.params), strict=True))
    assert _equal(states[WARMUP + 1].units["actor"].params, states[0].units["actor"].params)
    assert np.isnan(outs[WARMUP - 1]["losses/qf_loss"]).all() and np.isfinite(outs[WARMUP]["losses/qf_loss"]).all()
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
    # after warm-up: samples of the fresh policy (log-std ~ -1.5 -> pre-tanh std ~0.22), inside the bounds
    pi = np.asarray(act(keys, False)).ravel()
    assert pi.min() >= -2.0 and pi.max() <= 2.0 and 0.05 < pi.std() < 0.8


def test_critic_target_moves_by_exactly_polyak(short_run):
    """Each training update ends with the Polyak update (after its actor steps, which do not touch the critic)."""
    _, _, states, _ = short_run
    tau = SHORT.tau
    for i in range(WARMUP, NUM):
        old, new = states[i].units["critic"], states[i + 1].units["critic"]
        want = jax.tree.map(lambda t, o: tau * o + (1 - tau) * t, old.target, new.params)
        _close(new.target, want, rtol=1e-6, atol=1e-8)
        assert not _equal(new.target, old.target)
    assert states[-1].units["actor"].target is None  # SAC's actor has no target (CleanRL)


def test_actor_is_delayed_and_repeated(short_run):
    """policy_frequency 2: every 2nd critic step, 2 actor steps (CleanRL) -> equal Adam step counts in pairs, and
    the temperature moves only with the actor."""
    _, _, states, outs = short_run
    for i in range(NUM + 1):
        critic_steps = max(i - WARMUP, 0)
        assert (_adam_count(states[i].units["critic"].opt_state) == critic_steps).all()
        assert (_adam_count(states[i].units["actor"].opt_state) == 2 * (critic_steps // 2)).all()
    alpha = [np.exp(np.asarray(s.extra["log_alpha"])) for s in states]
    np.testing.assert_allclose(alpha[WARMUP + 1], SHORT.alpha, rtol=1e-6)  # no actor step yet
    assert (alpha[WARMUP + 2] != SHORT.alpha).all()  # first actor steps: two temperature steps
    for k in ("plasticity/actor/gradient_norm", "losses/actor_loss", "losses/alpha_loss",
              "plasticity/policy_entropy"):
        assert np.isnan(outs[WARMUP][k]).all() and np.isfinite(outs[WARMUP + 1][k]).all(), k
    np.testing.assert_allclose(outs[-1]["losses/alpha"], alpha[-1], rtol=1e-6)
    for k in ("plasticity/critic/gradient_norm", "losses/qf1_loss", "losses/qf2_loss", "losses/qf_loss"):
        assert np.isfinite(outs[WARMUP][k]).all(), k
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
        _close((state.units, state.extra), jax.tree.map(lambda x, s=s: x[s], (states[-1].units, states[-1].extra)),
               rtol=1e-4, atol=1e-6)


def test_interventions_wait_for_training_and_mirror_into_targets():
    """Soft SnP (after every optimizer step) and head resets every update: nothing happens during warm-up; once
    training, the critic's reset heads are copied into its target (its torso target stays Polyak-averaged)."""
    ivs = [shrink_perturb.make(shrink_perturb.Options(coef=0.9)),
           reset_layers.make(reset_layers.Options(which="heads", frequency=1))]
    trainer = make_train(SHORT, "gymnax:Pendulum-v1", 4 * SHORT.steps_per_update, ivs, MetricsConfig(every=0))
    out, states = None, [trainer.init(jax.random.PRNGKey(0))]
    step = jax.jit(trainer.run_updates, static_argnums=2)
    for i in range(WARMUP + 2):
        state, out = step(states[-1], i, 1)
        states.append(state)
    for name in ("actor", "critic"):
        assert _equal(states[WARMUP].units[name].params, states[0].units[name].params), name
        assert not _equal(states[-1].units[name].params, states[0].units[name].params), name
    c = states[-1].units["critic"]
    for head in ("q1_head", "q2_head"):
        assert _equal(c.target[head], c.params[head]), head
    assert not _equal(c.target["q1_torso"], c.params["q1_torso"])
    for k in ("losses/qf_loss", "losses/actor_loss", "plasticity/actor/weight_difference"):
        assert np.isfinite(np.asarray(out[k])).all(), k


def test_pendulum_learns():
    """2 vmapped seeds, 12k env steps (learning starts at 1k): the mean return of each seed's last 10 episodes
    (2000 steps) reaches >= -250 on average (the issue's bar; random play ~ -1200, a solved swing-up ~ -150),
    each seed >= -350. Measured on a loaded 2-core CPU: ~-155 per seed at 12k (solved by ~6k), ~15 s compile +
    ~15-25 s run."""
    t0 = time.time()
    trainer = make_train(PRESETS["pendulum"], "gymnax:Pendulum-v1", 12_000, metrics=MetricsConfig(every=100))
    _, out = jax.jit(jax.vmap(trainer.train))(jax.random.split(jax.random.PRNGKey(0), 2))
    ret = np.asarray(out["charts/episodic_return"])
    last = np.array([r[~np.isnan(r)][-10:].mean() for r in ret])
    first = np.array([r[~np.isnan(r)][:5].mean() for r in ret])
    print(f"sac pendulum: first {first}, last-10 {last}, {time.time() - t0:.1f}s")
    assert (first < -900).all(), first  # it started from random play
    assert last.mean() >= -250 and (last >= -350).all(), last


def test_config_errors():
    with pytest.raises(ConfigError, match="pqn, c51 or ppo"):
        make_train(PRESETS["pendulum"], "gymnax:CartPole-v1", 10_000)
    with pytest.raises(ConfigError, match="less than one update"):
        make_train(PRESETS["pendulum"], "gymnax:Pendulum-v1", 10)
    bad = {"batch_size": 10**7, "tau": 1.5, "gamma": 0.0, "alpha": 0.0, "learning_starts": -1,
           "policy_frequency": 0, "critic_lr": -1.0, "metric_batch": 0}
    for k, v in bad.items():
        with pytest.raises(ConfigError, match=f"--sac.{k.replace('_', '-')}"):
            validate(replace(PRESETS["pendulum"], **{k: v}))
    validate(PRESETS["dmc"])
    validate(PRESETS["pendulum"])
