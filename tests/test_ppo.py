"""PPO: GAE against a numpy loop (truncations bootstrapped from V(final_obs) by the rollout), vmap-vs-single
equivalence, and real learning (CartPole, Pendulum)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.algos.ppo import make_train
from plasticine_jax.algos.ppo_config import PRESETS
from plasticine_jax.algos.ppo_losses import gae
from plasticine_jax.envs.spaces import Box, Discrete
from plasticine_jax.errors import ConfigError
from plasticine_jax.metrics.config import MetricsConfig


def _numpy_gae(reward, value, terminated, truncated, final_value, last_value, gamma, lam):
    """Textbook GAE per env, written as a plain loop: truncation bootstraps from V(final_obs)."""
    T, N = reward.shape
    adv = np.zeros((T, N))
    for n in range(N):
        next_adv, next_v = 0.0, last_value[n]
        for t in reversed(range(T)):
            if terminated[t, n]:
                adv[t, n] = reward[t, n] - value[t, n]
            elif truncated[t, n]:
                adv[t, n] = reward[t, n] + gamma * final_value[t, n] - value[t, n]
            else:
                delta = reward[t, n] + gamma * next_v - value[t, n]
                adv[t, n] = delta + gamma * lam * next_adv
            next_adv, next_v = adv[t, n], value[t, n]
    return adv


def _episodes(T, N):
    """Per-step terminated / truncated flags [T, N] with both kinds of episode end in several envs."""
    terminated = np.zeros((T, N), bool)
    truncated = np.zeros((T, N), bool)
    terminated[3, 0] = terminated[7, 1] = True
    truncated[5, 0] = truncated[2, 2] = truncated[T - 1, 1] = True
    return terminated, truncated


def test_gae_matches_numpy_with_termination_and_truncation():
    """``gae`` with the contract the rollout follows (done = terminated or truncated, r + gamma V(final_obs) on
    truncated steps) is the textbook estimator."""
    rng = np.random.default_rng(0)
    T, N = 12, 3
    reward = rng.normal(size=(T, N)).astype(np.float32)
    value = rng.normal(size=(T, N)).astype(np.float32)
    final_value = rng.normal(size=(T, N)).astype(np.float32)
    last_value = rng.normal(size=(N,)).astype(np.float32)
    terminated, truncated = _episodes(T, N)

    def run(final_value):
        folded = reward + 0.9 * final_value * truncated
        return gae(jnp.asarray(folded), jnp.asarray(value), jnp.asarray(terminated | truncated),
                   jnp.asarray(last_value), 0.9, 0.8)

    adv, ret = run(final_value)
    want = _numpy_gae(reward, value, terminated, truncated, final_value, last_value, 0.9, 0.8)
    np.testing.assert_allclose(np.asarray(adv), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), want + value, rtol=1e-5, atol=1e-5)
    # truncation must bootstrap: changing V(final_obs) at a truncated step changes that advantage
    bump = np.zeros((T, N), np.float32)
    bump[5, 0] = 1.0
    adv2, _ = run(final_value + bump)
    assert abs(float(adv2[5, 0] - adv[5, 0]) - 0.9) < 1e-5


@dataclass(frozen=True)
class _ScriptedEnv:
    """A batched env whose observations, rewards, episode ends and ``final_obs`` follow a fixed script
    (step t of the rollout reads row t), so the rollout's bootstrap can be checked against the script."""

    obs: jax.Array  # [T + 1, N, 4]
    reward: jax.Array  # [T, N]
    terminated: jax.Array  # [T, N]
    truncated: jax.Array  # [T, N]
    final_obs: jax.Array  # [T, N, 4]
    num_envs: int = 3
    observation_space: Box = Box((-np.inf,) * 4, (np.inf,) * 4, (4,))
    action_space: Discrete = Discrete(2)

    def reset(self, key):
        return self.obs[0], jnp.zeros((), jnp.int32)

    def step(self, key, t, action):
        done = self.terminated[t] | self.truncated[t]
        info = {"final_obs": self.final_obs[t], "episode_done": done, "episode_return": jnp.zeros(done.shape),
                "episode_length": jnp.zeros(done.shape, jnp.int32)}
        return self.obs[t + 1], t + 1, self.reward[t], self.terminated[t], self.truncated[t], info


@pytest.mark.parametrize("bootstrap", [True, False])
def test_rollout_bootstraps_truncation_from_final_obs(bootstrap):
    """The rollout folds gamma V(final_obs) into the reward of truncated steps only (not terminated, not
    ongoing), with done = terminated or truncated; its GAE is then the textbook one. Without
    ``bootstrap_truncation`` (procgen/craftax presets) the reward is the env's."""
    T, N = 12, 3
    rng = np.random.default_rng(1)
    terminated, truncated = _episodes(T, N)
    env = _ScriptedEnv(jnp.asarray(rng.normal(size=(T + 1, N, 4)), jnp.float32),
                       jnp.asarray(rng.normal(size=(T, N)), jnp.float32), jnp.asarray(terminated),
                       jnp.asarray(truncated), jnp.asarray(rng.normal(size=(T, N, 4)) * 2.0, jnp.float32))
    cfg = replace(PRESETS["cleanrl-cartpole"], num_envs=N, num_steps=T, num_minibatches=2,
                  bootstrap_truncation=bootstrap)
    trainer = replace(make_train(cfg, "gymnax:CartPole-v1", 10 * N * T), env=env)
    state = trainer.init(jax.random.PRNGKey(0))
    traj, _, last_obs, _ = jax.jit(lambda s: trainer._rollout(s, trainer.env))(state)
    unit = state.units["agent"]
    gamma, lam = float(unit.hp["gamma"]), float(unit.hp["gae_lambda"])
    value_of = jax.vmap(lambda o: trainer.network.apply(unit.params, unit.net_state, o)[1])
    value = np.asarray(value_of(env.obs[:T]))
    final_value = np.asarray(value_of(env.final_obs))
    last_value = np.asarray(trainer.network.apply(unit.params, unit.net_state, last_obs)[1])
    np.testing.assert_array_equal(np.asarray(last_obs), np.asarray(env.obs[T]))
    np.testing.assert_allclose(np.asarray(traj.value), value, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(traj.done), terminated | truncated)
    folded = np.asarray(env.reward) + (gamma * final_value * truncated if bootstrap else 0.0)
    np.testing.assert_allclose(np.asarray(traj.reward), folded, rtol=1e-6, atol=1e-6)
    assert np.abs(final_value[truncated]).min() > 1e-4  # (the bootstrap term is really there)
    adv, _ = gae(traj.reward, traj.value, traj.done, jnp.asarray(last_value), gamma, lam)
    if bootstrap:
        want = _numpy_gae(np.asarray(env.reward), value, terminated, truncated, final_value, last_value, gamma, lam)
    else:  # every episode end treated alike (CleanRL's GAE)
        want = _numpy_gae(np.asarray(env.reward), value, terminated | truncated, np.zeros_like(truncated),
                          final_value, last_value, gamma, lam)
    np.testing.assert_allclose(np.asarray(adv), want, rtol=1e-5, atol=1e-5)


def test_vmap_equals_single_runs():
    """Seed i under vmap equals a single run with seed i (float tolerance)."""
    trainer = make_train(PRESETS["cleanrl-cartpole"], "gymnax:CartPole-v1", 2048, metrics=MetricsConfig(every=2))
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    carry_v, out_v = jax.jit(jax.vmap(trainer.train))(keys)
    single = jax.jit(trainer.train)
    for i in range(3):
        carry_i, out_i = single(keys[i])
        for k in out_i:
            np.testing.assert_allclose(np.asarray(out_v[k][i]), np.asarray(out_i[k]), rtol=2e-4, atol=2e-5,
                                       err_msg=k)
        for a, b in zip(jax.tree.leaves(carry_v.units["agent"].params), jax.tree.leaves(carry_i.units["agent"].params),
                        strict=True):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=2e-4, atol=2e-6)


def test_cartpole_learns_every_seed():
    """Each of 4 vmapped seeds reaches a mean episodic return >= 450 within 500k steps."""
    trainer = make_train(PRESETS["cleanrl-cartpole"], "gymnax:CartPole-v1", 500_000)
    _, out = jax.jit(jax.vmap(trainer.train))(jax.random.split(jax.random.PRNGKey(0), 4))
    ret = np.asarray(out["charts/episodic_return"])  # [seeds, updates]
    final = np.nanmean(ret[:, -50:], axis=1)
    assert final.shape == (4,)
    assert (final >= 450).all(), f"final mean returns {final}"
    assert (np.nanmean(ret[:, :20], axis=1) < 100).all()  # it really learned (started low)
    for k, v in out.items():
        if k.startswith("plasticity/") and "critic" not in k:
            assert np.isfinite(np.asarray(v)[:, 9::10]).all(), k  # heavy metrics every 10 updates


def test_pendulum_continuous_learns():
    """Gaussian policy on a continuous-action task (gymnax Pendulum-v1): return rises from ~-1250 to > -600."""
    trainer = make_train(PRESETS["continuous"], "gymnax:Pendulum-v1", 200_000, metrics=MetricsConfig(every=0))
    assert trainer.continuous
    _, out = jax.jit(jax.vmap(trainer.train))(jax.random.split(jax.random.PRNGKey(0), 2))
    ret = np.asarray(out["charts/episodic_return"])
    start, final = np.nanmean(ret[:, :5], axis=1), np.nanmean(ret[:, -5:], axis=1)
    assert (start < -1000).all(), start
    assert (final > -600).all(), final


def test_bad_ppo_shapes_are_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        make_train(replace(PRESETS["cleanrl-cartpole"], num_minibatches=7), "gymnax:CartPole-v1", 10_000)
    with pytest.raises(ConfigError, match="less than one rollout"):
        make_train(PRESETS["cleanrl-cartpole"], "gymnax:CartPole-v1", 100)
    with pytest.raises(ConfigError, match="unknown gymnax env"):
        make_train(PRESETS["cleanrl-cartpole"], "gymnax:CartPol-v1", 10_000)


def test_hparams_are_vmappable():
    """Learner hyperparameters vmap: two learning rates in one compile give different trajectories."""
    trainer = make_train(PRESETS["cleanrl-cartpole"], "gymnax:CartPole-v1", 2048, metrics=MetricsConfig(every=0))
    keys = jnp.stack([jax.random.PRNGKey(0)] * 2)
    _, out = jax.jit(jax.vmap(trainer.train))(keys, {"learning_rate": jnp.array([1e-4, 1e-2])})
    lr = np.asarray(out["charts/learning_rate"])
    np.testing.assert_allclose(lr[:, 0], [1e-4, 1e-2], rtol=1e-6)
    assert not np.allclose(np.asarray(out["losses/value_loss"])[0], np.asarray(out["losses/value_loss"])[1])


def test_craftax_classic_ppo_smoke():
    """PPO runs on Craftax-Classic (optimistic resets, 1345-d symbolic obs) under vmapped seeds."""
    cfg = replace(PRESETS["craftax"], num_envs=8, num_steps=16, num_minibatches=2)
    trainer = make_train(cfg, "craftax:Craftax-Classic-Symbolic-v1", 256, metrics=MetricsConfig(every=2))
    assert trainer.network.input_shapes == ((1345,),)
    assert trainer.unit.ctx.network is trainer.network
    _, out = jax.jit(jax.vmap(trainer.train))(jax.random.split(jax.random.PRNGKey(0), 2))
    for k in ("losses/value_loss", "plasticity/dormant_ratio", "plasticity/critic/effective_rank"):
        v = np.asarray(out[k])
        assert v.shape == (2, 2) and np.isfinite(v[:, 1]).all(), k
