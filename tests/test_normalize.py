"""Normalisation wrappers vs an independent numpy re-implementation of gym 0.23.1 (float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.envs.episode_stats import EpisodeStats
from plasticine_jax.envs.normalize import NormalizeObservation, NormalizeReward, RunningMeanStd, wrap_env
from plasticine_jax.envs.spaces import Box, Discrete

N, T, D = 3, 80, 4
_rng = np.random.default_rng(0)
REWARDS = (_rng.normal(size=(T, N)) * np.array([1.0, 5.0, 0.1])).astype(np.float32)
REWARDS[70, 1] = 1000.0  # a late outlier: clipped once the statistics have seen ~200 returns
TERMINATED = np.zeros((T, N), bool)
TRUNCATED = np.zeros((T, N), bool)
TERMINATED[3, 0] = TERMINATED[7, 0] = TERMINATED[5, 2] = True
TRUNCATED[6, 1] = TRUNCATED[10, 2] = True
OBS = (_rng.normal(size=(T + 1, N, D)) * np.array([1.0, 10.0, 0.01, 3.0]) + 2.0).astype(np.float32)


class ScriptedEnv:
    """Emits scripted rewards/dones/observations (times a per-seed scale drawn at reset)."""

    def __init__(self, random_scale: bool = False):
        self.num_envs = N
        self.observation_space = Box((-1e9,) * D, (1e9,) * D, (D,))
        self.action_space = Discrete(2)
        self.random_scale = random_scale
        self.extra_attribute = "forwarded"

    def reset(self, key):
        scale = 1.0 + 3.0 * jax.random.uniform(key) if self.random_scale else jnp.float32(1.0)
        return jnp.asarray(OBS[0]) * scale, (jnp.int32(0), scale)

    def step(self, key, state, action):
        t, scale = state
        obs = jnp.asarray(OBS)[t + 1] * scale
        info = {"final_obs": obs + 1.0}
        return (
            obs,
            (t + 1, scale),
            jnp.asarray(REWARDS)[t] * scale,
            jnp.asarray(TERMINATED)[t],
            jnp.asarray(TRUNCATED)[t],
            info,
        )


class NpRunningMeanStd:
    """gym 0.23.1 RunningMeanStd (float64)."""

    def __init__(self, shape=()):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, x):
        bm, bv, bc = x.mean(0), x.var(0), x.shape[0]
        delta = bm - self.mean
        tot = self.count + bc
        self.mean = self.mean + delta * bc / tot
        self.var = (self.var * self.count + bv * bc + delta**2 * self.count * bc / tot) / tot
        self.count = tot


def np_normalize_reward(gamma, eps=1e-8, clip=10.0):
    """gym 0.23.1 NormalizeReward (vector env) followed by np.clip."""
    rms, returns, out = NpRunningMeanStd(), np.zeros(N), []
    for t in range(T):
        r = REWARDS[t].astype(np.float64)
        returns = returns * gamma + r
        rms.update(returns)
        rew = r / np.sqrt(rms.var + eps)
        returns[TERMINATED[t] | TRUNCATED[t]] = 0.0
        out.append(rew if clip is None else np.clip(rew, -clip, clip))
    return np.stack(out), rms


def rollout(env, key, steps=T):
    obs0, state = env.reset(key)

    def body(state, k):
        obs, state, reward, term, trunc, info = env.step(k, state, jnp.zeros((N,), jnp.int32))
        return state, (obs, reward, info)

    state, (obs, rewards, infos) = jax.lax.scan(body, state, jax.random.split(key, steps))
    return obs0, state, obs, rewards, infos


@pytest.mark.parametrize("clip", [10.0, None])
def test_normalize_reward_matches_gym(clip):
    gamma = 0.9
    env = NormalizeReward(ScriptedEnv(), gamma=gamma, clip=clip)
    _, state, _, rewards, _ = jax.jit(lambda k: rollout(env, k))(jax.random.key(0))
    expected, rms = np_normalize_reward(gamma, clip=clip)
    np.testing.assert_allclose(np.asarray(rewards), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(state.return_rms.var), rms.var, rtol=1e-4)
    np.testing.assert_allclose(float(state.return_rms.mean), rms.mean, rtol=1e-4, atol=1e-6)
    if clip is not None:
        assert np.abs(expected).max() == pytest.approx(10.0)  # the clip was exercised
    assert env.extra_attribute == "forwarded" and env.num_envs == N


def test_normalize_observation_matches_numpy():
    env = NormalizeObservation(ScriptedEnv(), clip=10.0)
    obs0, state, obs, _, infos = jax.jit(lambda k: rollout(env, k))(jax.random.key(0))
    rms = NpRunningMeanStd((D,))
    expected, expected_final = [], []
    for t in range(T + 1):
        rms.update(OBS[t].astype(np.float64))
        norm = lambda x: np.clip((x - rms.mean) / np.sqrt(rms.var + 1e-8), -10.0, 10.0)  # noqa: B023
        expected.append(norm(OBS[t]))
        expected_final.append(norm(OBS[t] + 1.0))
    np.testing.assert_allclose(np.asarray(obs0), expected[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(obs), np.stack(expected[1:]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        np.asarray(infos["final_obs"]), np.stack(expected_final[1:]), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(np.asarray(state.obs_rms.var), rms.var, rtol=1e-4)
    assert env.observation_space.shape == (D,)


def test_statistics_are_per_vmapped_seed():
    env = wrap_env(ScriptedEnv(random_scale=True), normalize_obs=True, normalize_reward=True, gamma=0.99)
    keys = jax.random.split(jax.random.key(3), 2)
    _, state, _, rewards, _ = jax.jit(jax.vmap(lambda k: rollout(env, k)))(keys)
    ret_var = np.asarray(state.return_rms.var)
    obs_mean = np.asarray(state.env_state.obs_rms.mean)
    assert ret_var.shape == (2,) and obs_mean.shape == (2, D)
    assert not np.allclose(ret_var[0], ret_var[1]) and not np.allclose(obs_mean[0], obs_mean[1])
    for i in range(2):  # each seed's statistics equal an un-vmapped run with that key
        _, single, _, single_rewards, _ = jax.jit(lambda k: rollout(env, k))(keys[i])
        np.testing.assert_allclose(ret_var[i], float(single.return_rms.var), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(rewards[i]), np.asarray(single_rewards), rtol=1e-5, atol=1e-6)


def test_episode_stats_under_wrappers_reports_raw_returns():
    env = wrap_env(EpisodeStats(ScriptedEnv()), normalize_obs=True, normalize_reward=True, gamma=0.99)
    _, _, _, rewards, infos = jax.jit(lambda k: rollout(env, k))(jax.random.key(0))
    done = np.asarray(infos["episode_done"])
    np.testing.assert_array_equal(done, TERMINATED | TRUNCATED)
    ep_returns = np.asarray(infos["episode_return"])
    running = np.zeros(N)
    for t in range(T):
        running += REWARDS[t]
        for i in np.flatnonzero(done[t]):
            assert ep_returns[t, i] == pytest.approx(running[i], rel=1e-5)
        running[done[t]] = 0.0
    assert not np.allclose(np.asarray(rewards), REWARDS)  # the learner sees normalised rewards


def test_running_mean_std_is_a_pytree():
    rms = RunningMeanStd.create((2,)).update(jnp.ones((5, 2)))
    leaves = jax.tree.leaves(rms)
    assert len(leaves) == 3 and rms.count == pytest.approx(5.0001)
