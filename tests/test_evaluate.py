"""The in-graph evaluator (algos.evaluate.make_evaluator) and every learner's eval_action."""

from __future__ import annotations

import math
import types
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.algos import registry
from plasticine_jax.algos.evaluate import episode_limit, make_evaluator
from plasticine_jax.algos.ppo_config import PPOConfig
from plasticine_jax.envs import make_env
from plasticine_jax.errors import ConfigError
from plasticine_jax.nets import NetConfig

CARTPOLE, PENDULUM = "gymnax:CartPole-v1", "gymnax:Pendulum-v1"
EPISODES = 256


class Stub:
    """A learner stand-in: only what make_evaluator reads (cfg, env_id, eval_action)."""

    def __init__(self, policy, env_id: str = CARTPOLE):
        self.cfg = types.SimpleNamespace()
        self.env_id = env_id
        self.policy = policy

    def eval_action(self, units, obs, key):
        return self.policy(obs, key)


NO_UNITS = types.SimpleNamespace(units={})


def _run_stub(policy, episodes: int = EPISODES, max_steps: int | None = None, seed: int = 0) -> np.ndarray:
    evaluate = make_evaluator(Stub(policy), episodes, max_steps)
    return np.asarray(jax.jit(lambda k: evaluate(NO_UNITS, k))(jax.random.PRNGKey(seed)))


def constant(a: int):
    return lambda obs, key: jnp.full((obs.shape[0],), a, jnp.int32)


def uniform(obs, key):
    return jax.random.randint(key, (obs.shape[0],), 0, 2)


def balance(obs, key):
    """A linear controller that keeps CartPole up for the whole 500 steps."""
    x, x_dot, theta, theta_dot = obs[:, 0], obs[:, 1], obs[:, 2], obs[:, 3]
    return (3.0 * theta + theta_dot + 0.1 * x + 0.5 * x_dot > 0).astype(jnp.int32)


def numpy_cartpole_lengths(action: int, n: int, seed: int = 0) -> np.ndarray:
    """Episode lengths of a constant action in a numpy CartPole-v1 (independent of gymnax and the evaluator)."""
    # gym's CartPole-v1 physics: Euler steps of 0.02 s, uniform +-0.05 starts, |x| > 2.4 or |theta| > 12 deg ends
    rng = np.random.default_rng(seed)
    s = rng.uniform(-0.05, 0.05, (n, 4))
    g, mc, mp, half, fmag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total, pml = mc + mp, mp * half
    lengths = np.zeros(n, int)
    alive = np.ones(n, bool)
    for t in range(1, 501):
        x, xd, th, thd = s.T
        force = fmag if action == 1 else -fmag
        temp = (force + pml * thd ** 2 * np.sin(th)) / total
        thacc = (g * np.sin(th) - np.cos(th) * temp) / (half * (4.0 / 3.0 - mp * np.cos(th) ** 2 / total))
        xacc = temp - pml * thacc * np.cos(th) / total
        s = np.stack([x + tau * xd, xd + tau * xacc, th + tau * thd, thd + tau * thacc], 1)
        done = (np.abs(s[:, 0]) > 2.4) | (np.abs(s[:, 2]) > 12 * 2 * math.pi / 360)
        lengths[alive & done] = t
        alive &= ~done
    lengths[alive] = 500
    return lengths


# ------------------------------------------------------------------ the evaluator itself (stub learners)


@pytest.mark.parametrize("action", [0, 1])
def test_constant_action_returns_match_numpy_cartpole(action):
    """Constant-action episodes: one return per episode, the first episode's length, distributed as in numpy."""
    ret = _run_stub(constant(action))
    assert ret.shape == (EPISODES,) and ret.dtype == np.float32
    np.testing.assert_array_equal(ret, np.round(ret))  # return = number of steps (reward 1 each)
    ref = numpy_cartpole_lengths(action, 20_000)
    assert set(np.unique(ret)) <= set(np.unique(ref)), (np.unique(ret), np.unique(ref))
    assert abs(ret.mean() - ref.mean()) < 0.2, (ret.mean(), ref.mean())  # SE of the mean ~0.05
    assert ret.max() < 15  # the first episode only: later (auto-reset) episodes are not added


def test_solved_policy_returns_the_episode_limit():
    """A balancing controller earns exactly 500 (the env's limit, truncation ends the count) on every episode."""
    assert episode_limit(make_env(CARTPOLE, 4)) == 500
    ret = _run_stub(balance, episodes=64)
    np.testing.assert_array_equal(ret, np.full(64, 500.0))
    # scanning past the limit: the truncation at 500 ends the counted episode, the next one is not added
    np.testing.assert_array_equal(_run_stub(balance, episodes=16, max_steps=600), np.full(16, 500.0))


def test_max_steps_caps_every_return():
    """max_steps=5 stops every episode after 5 steps (constant-action episodes last at least 8)."""
    np.testing.assert_array_equal(_run_stub(constant(0), episodes=32, max_steps=5), np.full(32, 5.0))
    ret = _run_stub(balance, episodes=32, max_steps=37)
    np.testing.assert_array_equal(ret, np.full(32, 37.0))


def test_random_policy_is_between_constant_and_solved():
    """The uniform policy averages ~22 on CartPole, with returns in [1, 500] and seeds that differ."""
    a, b = _run_stub(uniform, seed=0), _run_stub(uniform, seed=1)
    assert ((a >= 1) & (a <= 500)).all()
    assert 17 < a.mean() < 28, a.mean()
    assert not np.array_equal(a, b)


# ------------------------------------------------------------------ real learners


NET = NetConfig(torso="mlp", widths=(16, 16), activation="tanh", shared=False)


def _learner(algo: str, **over):
    """A tiny learner of ``algo`` on its natural env (CartPole for the discrete ones, Pendulum otherwise)."""
    cm = registry.config_module(algo)
    cls = registry.config_class(algo)
    if algo in ("ppo", "pqn"):
        cfg, env = cls(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, net=NET), CARTPOLE
    elif algo == "c51":
        cfg = replace(cm.PRESETS["cartpole"], steps_per_update=8, train_frequency=2, learning_starts=0, buffer_size=64,
                      batch_size=8, target_network_frequency=4, metric_batch=16, net=replace(NET, shared=True))
        env = CARTPOLE
    else:
        cfg = cls(steps_per_update=8, learning_starts=4, buffer_size=64, batch_size=8, metric_batch=16, net=NET)
        env = PENDULUM
    cfg = replace(cfg, **over)
    return registry.learner_module(algo).make_train(cfg, env, 64)


@pytest.mark.parametrize("algo", list(registry.ALGOS))
def test_every_learner_evaluates_within_bounds(algo):
    """eval_action of every learner runs inside the evaluator, and its actions lie in the action space."""
    lrn = _learner(algo)
    state = lrn.init(jax.random.PRNGKey(0))
    ret = np.asarray(jax.jit(make_evaluator(lrn, 8, max_steps=20))(state, jax.random.PRNGKey(1)))
    assert ret.shape == (8,) and np.isfinite(ret).all()
    obs = 5.0 * jax.random.normal(jax.random.PRNGKey(2), (512, *lrn.env.observation_space.shape))
    act = np.asarray(lrn.eval_action(state.units, obs, jax.random.PRNGKey(3)))
    if lrn.env_id == CARTPOLE:
        assert 0 <= ret.min() and ret.max() <= 20
        assert act.shape == (512,) and np.issubdtype(act.dtype, np.integer)
        assert set(np.unique(act)) <= {0, 1}
    else:
        assert (ret <= 0).all()  # Pendulum rewards are non-positive
        assert act.shape == (512, 1)
        assert (act >= -2.0).all() and (act <= 2.0).all()


def test_ppo_continuous_eval_actions_are_clipped_to_the_box():
    """PPO's Gaussian samples are clipped to Pendulum's [-2, 2]; a wide policy hits both bounds."""
    lrn = registry.learner_module("ppo").make_train(PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, net=NET),
                                                    PENDULUM, 16)
    state = lrn.init(jax.random.PRNGKey(0))
    unit = state.units["agent"]
    wide = unit.replace(params={**unit.params, "log_std": jnp.full_like(unit.params["log_std"], 2.0)})
    obs = jax.random.normal(jax.random.PRNGKey(1), (1024, 3))
    act = np.asarray(lrn.eval_action({"agent": wide}, obs, jax.random.PRNGKey(2)))
    assert act.shape == (1024, 1)
    assert (np.abs(act) <= 2.0).all()
    assert (act == 2.0).mean() > 0.2 and (act == -2.0).mean() > 0.2  # std e^2 ~ 7.4: most samples clipped


def test_td3_evaluates_deterministically_and_sac_stochastically():
    """TD3's evaluation policy ignores the key (no exploration noise); SAC's samples depend on it."""
    obs = jax.random.normal(jax.random.PRNGKey(1), (64, 3))
    k1, k2 = jax.random.PRNGKey(2), jax.random.PRNGKey(3)
    td3 = _learner("td3")
    units = td3.init(jax.random.PRNGKey(0)).units
    np.testing.assert_array_equal(td3.eval_action(units, obs, k1), td3.eval_action(units, obs, k2))
    sac = _learner("sac")
    units = sac.init(jax.random.PRNGKey(0)).units
    a1, a2 = np.asarray(sac.eval_action(units, obs, k1)), np.asarray(sac.eval_action(units, obs, k2))
    assert np.abs(a1 - a2).mean() > 0.05


def test_untrained_ppo_is_far_below_solved():
    """An untrained PPO policy (near-uniform) averages well below 100 on CartPole."""
    lrn = _learner("ppo")
    ret = np.asarray(jax.jit(make_evaluator(lrn, 128))(lrn.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)))
    assert ((ret >= 1) & (ret <= 500)).all()
    assert 10 < ret.mean() < 60, ret.mean()


def test_evaluator_vmaps_over_seeds():
    """vmap over (state, key) of two seeds equals evaluating each seed alone; the seeds differ."""
    lrn = _learner("ppo")
    evaluate = make_evaluator(lrn, 32)
    states = jax.vmap(lrn.init)(jax.random.split(jax.random.PRNGKey(0), 2))
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    both = np.asarray(jax.jit(jax.vmap(evaluate))(states, keys))
    assert both.shape == (2, 32)
    one = jax.jit(evaluate)
    for i in range(2):
        np.testing.assert_allclose(both[i], one(jax.tree.map(lambda x, i=i: x[i], states), keys[i]))
    assert not np.array_equal(both[0], both[1])


def _pqn_returns_and_actions(eval_epsilon: float):
    lrn = _learner("pqn", eval_epsilon=eval_epsilon)
    state = lrn.init(jax.random.PRNGKey(0))
    ret = np.asarray(jax.jit(make_evaluator(lrn, EPISODES))(state, jax.random.PRNGKey(1)))
    obs = jax.random.normal(jax.random.PRNGKey(2), (4096, 4))
    act = np.asarray(lrn.eval_action(state.units, obs, jax.random.PRNGKey(3)))
    unit = state.units["q"]
    greedy = np.asarray(jnp.argmax(lrn.network.apply(unit.params, unit.net_state, obs), -1))
    return ret, act, greedy


def test_pqn_eval_epsilon_one_is_uniform_and_zero_is_greedy():
    """PQN: eval_epsilon 1 acts uniformly (returns like a random policy); eval_epsilon 0 is argmax Q exactly."""
    ret_rand, act_rand, greedy = _pqn_returns_and_actions(1.0)
    ret_greedy, act_greedy, greedy0 = _pqn_returns_and_actions(0.0)
    np.testing.assert_array_equal(act_greedy, greedy0)
    assert abs(act_rand.mean() - 0.5) < 0.03  # fair coin over 4096 draws (SE 0.008)
    assert (act_rand != greedy).mean() > 0.4  # about half disagree with argmax
    random_policy = _run_stub(uniform, seed=5)
    assert abs(ret_rand.mean() - random_policy.mean()) < 4.0, (ret_rand.mean(), random_policy.mean())  # SE ~1.1
    # this seed's untrained greedy policy happens to balance (measured mean ~189): anything but random
    assert abs(ret_greedy.mean() - ret_rand.mean()) > 20.0, (ret_greedy.mean(), ret_rand.mean())


def test_obs_normalising_learner_is_refused():
    """An observation-normalising learner raises ConfigError naming normalize-obs."""
    lrn = registry.learner_module("ppo").make_train(
        PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, normalize_obs=True, net=NET), CARTPOLE, 16)
    with pytest.raises(ConfigError, match="normalize-obs"):
        make_evaluator(lrn)
