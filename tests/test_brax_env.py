"""The Brax backend: the VecEnv contract (spaces, shapes, dtypes), auto-reset with final_obs, terminated vs
truncated, per-task friction (the reference's table row, task 0 stock) that changes the dynamics under one
compile, one-line config errors, and a short continual PPO run whose task switches at the configured update."""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("brax")

from plasticine_jax.algos import ppo  # noqa: E402
from plasticine_jax.algos.ppo_config import PRESETS  # noqa: E402
from plasticine_jax.envs import Box, make_env  # noqa: E402
from plasticine_jax.envs.brax_env import BraxVecEnv  # noqa: E402
from plasticine_jax.envs.registry import validate_env_id  # noqa: E402
from plasticine_jax.envs.tasks import ContinualConfig, frictions_csv  # noqa: E402
from plasticine_jax.errors import ConfigError  # noqa: E402
from plasticine_jax.metrics.config import MetricsConfig  # noqa: E402

N, HORIZON, EPISODE = 3, 12, 5


def friction_cont(**kw) -> ContinualConfig:
    base = dict(num_tasks=4, task_timesteps=64, shifts=("params",), params=("friction",), friction_row=7)
    return ContinualConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def pendulum() -> BraxVecEnv:
    return BraxVecEnv("inverted_pendulum", N, episode_length=EPISODE)


@pytest.fixture(scope="module")
def rollout(pendulum):
    """jit: reset, then HORIZON steps of a constant action; returns every step's outputs (one compile)."""

    @jax.jit
    def run(key, action):
        obs0, state = pendulum.reset(key)

        def body(carry, k):
            obs, state, reward, term, trunc, info = pendulum.step(k, carry, jnp.broadcast_to(action, (N, 1)))
            return state, (obs, reward, term, trunc, info["final_obs"], state.steps)

        _, out = jax.lax.scan(body, state, jax.random.split(jax.random.fold_in(key, 1), HORIZON))
        return obs0, out

    return run


def test_contract_spaces_shapes_dtypes(pendulum, rollout):
    assert isinstance(pendulum.observation_space, Box) and pendulum.observation_space.shape == (4,)
    assert pendulum.observation_space.dtype == "float32"
    assert isinstance(pendulum.action_space, Box) and pendulum.action_space.shape == (1,)
    assert pendulum.action_space.low == (-1.0,) and pendulum.action_space.high == (1.0,)
    assert pendulum.at(jnp.int32(3)) is pendulum  # no friction table: no tasks
    obs0, (obs, reward, term, trunc, final_obs, steps) = rollout(jax.random.PRNGKey(0), jnp.float32(0.0))
    assert obs0.shape == (N, 4) and obs0.dtype == jnp.float32
    assert obs.shape == final_obs.shape == (HORIZON, N, 4) and obs.dtype == final_obs.dtype == jnp.float32
    assert reward.shape == (HORIZON, N) and reward.dtype == jnp.float32
    assert term.dtype == trunc.dtype == jnp.bool_ and steps.dtype == jnp.int32
    assert np.all(np.abs(np.asarray(obs0)) <= 0.01)  # brax's reset noise
    assert not np.allclose(obs0[0], obs0[1])  # every env draws its own reset


def test_truncation_autoreset_and_final_obs(rollout):
    _, (obs, reward, term, trunc, final_obs, steps) = rollout(jax.random.PRNGKey(0), jnp.float32(0.0))
    obs, final_obs, term, trunc = map(np.asarray, (obs, final_obs, term, trunc))
    assert not term.any()  # no force: the pole stays up for these few steps
    ends = np.zeros((HORIZON, N), bool)
    ends[EPISODE - 1::EPISODE] = True
    assert (trunc == ends).all()  # episode_length reached every EPISODE steps
    assert (np.asarray(steps) == np.tile((np.arange(1, HORIZON + 1) % EPISODE)[:, None], (1, N))).all()
    assert np.all(np.abs(obs[trunc]) <= 0.01) and not np.allclose(obs[trunc], final_obs[trunc])  # fresh reset
    assert np.array_equal(obs[~trunc], final_obs[~trunc])  # final_obs is the observation unless it reset
    assert (np.asarray(reward) == 1.0).all()


def test_termination_is_not_truncation(rollout):
    _, (obs, _, term, trunc, final_obs, steps) = rollout(jax.random.PRNGKey(0), jnp.float32(1.0))
    term, trunc = np.asarray(term), np.asarray(trunc)
    assert term.any() and not (term & trunc).any()  # full force topples the pole: terminated, never truncated
    first = term.argmax(axis=0)
    assert (first < EPISODE - 1).all()  # it falls before the episode length
    assert np.all(np.abs(np.asarray(final_obs)[term][:, 1]) > 0.2)  # the pre-reset pole angle ended it
    assert np.all(np.abs(np.asarray(obs)[term]) <= 0.01) and (np.asarray(steps)[term] == 0).all()


def test_friction_table_row_and_stock_task():
    csv = frictions_csv()
    assert csv.shape == (100, 50)
    np.testing.assert_allclose(csv[1, :3], [0.1201, 0.4520, 0.0820], atol=1e-4)  # reference.md §2.3, seed 1
    c = friction_cont()
    env = make_env("brax:inverted_pendulum", 2, c)
    table = env.task_tables["param/friction"]
    np.testing.assert_array_equal(table, np.asarray([1.0, *csv[7, :3]], np.float32))  # task 0 = stock friction
    assert float(env.env.stock_friction) == 1.0
    for task in range(4):
        np.testing.assert_array_equal(np.asarray(env.at(jnp.int32(task)).geom_friction()), table[task])


def test_friction_row_keeps_each_stock_geom_where_they_differ_and_scales():
    hopper = BraxVecEnv("hopper", 1)
    stock = hopper.stock_frictions
    assert np.isnan(hopper.stock_friction) and stock.max() == 2.0  # foot 2.0, floor 1.0, body 0.9
    env = make_env("brax:hopper", 1, friction_cont(num_tasks=3, friction_row=0))
    table = env.task_tables["param/friction"]
    assert np.isnan(table[0]) and (table[1:] == frictions_csv()[0, :2].astype(np.float32)).all()
    np.testing.assert_array_equal(np.asarray(env.at(jnp.int32(0)).geom_friction()), stock)  # unmodified model
    assert (np.asarray(env.at(jnp.int32(2)).geom_friction()) == table[2]).all()
    scaled = make_env("brax:hopper", 1, friction_cont(num_tasks=3, friction_row=-1, scale_low=0.5, scale_high=2.0))
    factors = scaled.task_tables["param/friction_factor"]
    assert factors[0] == 1.0 and "param/friction" not in scaled.task_tables
    np.testing.assert_allclose(np.asarray(scaled.at(jnp.int32(1)).geom_friction()), stock * factors[1], rtol=1e-6)
    from plasticine_jax.envs.tasks import describe

    assert describe(friction_cont(num_tasks=3, friction_row=0), env)["param/friction"][0] is None  # JSON null


def test_friction_changes_dynamics_with_one_compile_for_traced_tasks():
    env = BraxVecEnv("hopper", 2, friction_table=[np.nan, 0.02, 2.0])
    traces = []

    @jax.jit
    def run(task, key):
        traces.append(1)
        bound = env.at(task)
        obs, state = bound.reset(key)
        action = jnp.zeros((2, 3))  # the hopper drops onto its foot (step ~8) and stays up for these steps

        def body(s, k):
            o, s, *_ = bound.step(k, s, action)
            return s, o

        _, obs = jax.lax.scan(body, state, jax.random.split(key, 20))
        return obs, bound.geom_friction()

    key = jax.random.PRNGKey(3)
    slippery, f1 = run(jnp.int32(1), key)
    sticky, f2 = run(jnp.int32(2), key)
    assert len(traces) == 1 and run._cache_size() == 1
    assert (np.asarray(f1) == np.float32(0.02)).all() and (np.asarray(f2) == 2.0).all()
    assert np.isfinite(np.asarray(slippery)).all() and np.isfinite(np.asarray(sticky)).all()
    gap = np.abs(np.asarray(slippery) - np.asarray(sticky)).max(axis=(1, 2))  # same state, key, actions
    assert (gap[:8] == 0).all() and (gap[12:] > 0.05).all()  # identical in the air, apart once the foot lands


@pytest.mark.parametrize("make, needle", [
    (lambda: BraxVecEnv("hoper", 2), "unknown brax env 'hoper'; brax envs: brax:ant"),
    (lambda: validate_env_id("brax:cartpole"), "brax:inverted_pendulum"),
    (lambda: BraxVecEnv("hopper", 2, backend="warp"), "unknown brax physics backend 'warp'"),
    (lambda: BraxVecEnv("inverted_pendulum", 2, friction_table=[1.0, -0.5]), "values must be >= 0"),
    (lambda: make_env("brax:inverted_pendulum", 2, friction_cont(friction_row=100)), "must be in [0, 100)"),
    (lambda: make_env("brax:inverted_pendulum", 2, friction_cont(num_tasks=52)), "num-tasks must be <= 51"),
    (lambda: make_env("brax:inverted_pendulum", 2, friction_cont(params=("mass",), friction_row=-1)),
     "shifts only 'friction'"),
    (lambda: make_env("gymnax:CartPole-v1", 2, friction_cont(params=("friction",))), "shifts brax friction"),
])
def test_config_errors_are_one_line(make, needle):
    with pytest.raises(ConfigError) as err:
        make()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_continual_ppo_switches_friction_task_for_every_seed():
    cfg = replace(PRESETS["continuous"], num_envs=4, num_steps=16, num_minibatches=2, update_epochs=1,
                  net=replace(PRESETS["continuous"].net, widths=(16, 16)))
    c = ContinualConfig(num_tasks=2, task_timesteps=2 * 64, shifts=("params",), params=("friction",), friction_row=0)
    learner = ppo.make_train(cfg, "brax:inverted_pendulum", 2 * 2 * 64, (), MetricsConfig(every=1), continual=c)
    state, out = jax.jit(jax.vmap(learner.train))(jax.random.split(jax.random.PRNGKey(0), 2))
    assert np.asarray(out["charts/current_task"]).tolist() == [[0, 0, 1, 1]] * 2
    assert (np.asarray(state.task) == 1).all()
    assert np.isfinite(np.asarray(out["losses/value_loss"])).all()


def test_two_vmapped_seeds_match_brax_own_loop(pendulum):
    """jit(vmap(scan)) over 2 seeds equals brax's own jitted reset/step called env by env from Python on the same
    action sequence and keys: observations, rewards, ends, and the fresh resets of finished envs."""
    T = 9
    actions = jax.random.uniform(jax.random.PRNGKey(3), (2, T, N, 1), minval=-1.0, maxval=1.0)
    seed_keys = jax.random.split(jax.random.PRNGKey(11), 2)

    def run(key, acts):
        _, state = pendulum.reset(key)

        def body(state, xs):
            k, a = xs
            obs, state, reward, term, trunc, _ = pendulum.step(k, state, a)
            return state, (obs, reward, term, trunc)

        step_keys = jax.random.split(jax.random.fold_in(key, 1), T)
        return jax.lax.scan(body, state, (step_keys, acts))[1]

    obs, reward, term, trunc = jax.jit(jax.vmap(run))(seed_keys, actions)
    env_reset, env_step = jax.jit(pendulum.env.reset), jax.jit(pendulum.env.step)
    for s in range(2):
        step_keys = jax.random.split(jax.random.fold_in(seed_keys[s], 1), T)
        for i in range(N):
            state, steps = env_reset(jax.random.split(seed_keys[s], N)[i]), 0
            for t in range(T):
                nxt = env_step(state, actions[s, t, i])
                steps += 1
                done_t = bool(nxt.done > 0.5)
                trunc_t = steps >= EPISODE and not done_t
                np.testing.assert_allclose(float(reward[s, t, i]), float(nxt.reward), rtol=1e-5, atol=1e-6)
                assert (bool(term[s, t, i]), bool(trunc[s, t, i])) == (done_t, trunc_t)
                if done_t or trunc_t:
                    state, steps = env_reset(jax.random.split(step_keys[t], N)[i]), 0
                else:
                    state = nxt
                np.testing.assert_allclose(np.asarray(obs[s, t, i]), np.asarray(state.obs), rtol=1e-5, atol=1e-5)
    assert bool(trunc.any())  # the 5-step limit ended episodes inside the 9 steps
