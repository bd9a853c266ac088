"""The MuJoCo Playground backend: inside ``jit(lax.scan)`` under ``vmap`` over seeds it gives exactly the env's own
``jax.jit(env.reset)``/``jax.jit(env.step)`` Python loop (observations, rewards, truncation at a short
episode_length with a fresh auto-reset and final_obs, per-env reset keys; a NaN physics state terminates, not
truncates); action_repeat sums rewards over env steps that count towards episode_length; the reset gate
(``fresh_where_done``) runs the reset only on steps where some env of some seed ended, through nested vmaps, with
unchanged values; dict observations; one-line config errors (the missing-extra one runs without Playground
installed); a short PPO CLI run writes metrics for both seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.envs.registry import make_backend, validate_env_id
from plasticine_jax.errors import ConfigError

S, E, T, EPISODE = 2, 2, 12, 5
ENV = "CartpoleSwingup"


def test_missing_playground_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco_playground", None)  # import mujoco_playground now raises ImportError
    with pytest.raises(ConfigError) as err:
        validate_env_id(f"playground:{ENV}")
    assert 'pip install -e ".[playground]"' in str(err.value) and "\n" not in str(err.value)


def test_reset_gate_runs_only_when_some_env_ended_through_nested_vmaps():
    from plasticine_jax.envs.playground_env import fresh_where_done

    calls = []

    def reset_batch(keys):
        jax.debug.callback(lambda n: calls.append(int(n)), keys.shape[0])  # fires only when the reset runs
        return {"x": jax.vmap(lambda k: jax.random.uniform(k, (3,)))(keys), "n": jnp.zeros((keys.shape[0], 0))}

    fresh = fresh_where_done(reset_batch)
    keys = jax.random.split(jax.random.PRNGKey(0), 2 * 3 * 4).reshape(2, 3, 4, 2)  # [outer, seed, env]
    run = jax.jit(jax.vmap(jax.vmap(fresh)))
    none = jnp.zeros((2, 3, 4), bool)
    out = run(none, keys)
    assert calls == [] and (np.asarray(out["x"]) == 0).all() and out["n"].shape == (2, 3, 4, 0)
    one = none.at[1, 2, 3].set(True)
    out = run(one, keys)
    jax.effects_barrier()
    assert calls == [2 * 3 * 4]  # one reset for every env of every seed, not one per seed or a select
    want = jax.vmap(lambda k: jax.random.uniform(k, (3,)))(keys.reshape(-1, 2)).reshape(2, 3, 4, 3)
    np.testing.assert_array_equal(np.asarray(out["x"]), np.asarray(want))  # every env with its own key


def test_flat_obs_takes_state_else_sorted_keys():
    from plasticine_jax.envs.playground_env import flat_obs

    state = {"privileged_state": jnp.ones(4), "state": jnp.arange(3.0)}
    np.testing.assert_array_equal(np.asarray(flat_obs(state)), [0.0, 1.0, 2.0])
    other = {"b": jnp.full((2, 2), 2.0), "a": jnp.ones(1, jnp.int32)}
    out = flat_obs(other)
    assert out.dtype == jnp.float32 and np.asarray(out).tolist() == [1.0, 2.0, 2.0, 2.0, 2.0]


@pytest.fixture(scope="module")
def playground():
    return pytest.importorskip("mujoco_playground")


@pytest.fixture(scope="module")
def raw(playground):
    """The env's own ``jax.jit(env.reset)`` and ``jax.jit(env.step)`` (one env, no batch)."""
    env = playground.registry.load(ENV, config_overrides={"impl": "jax"})
    return jax.jit(env.reset), jax.jit(env.step)


def test_matches_playground_python_loop_under_vmap(raw):
    """Truncation every EPISODE steps, and a NaN action (seed 1, env 0, step 7) that makes the physics NaN: the
    env's done, so terminated (not truncated), and a fresh reset with the step counter back to 0."""
    from plasticine_jax.envs.spaces import Box

    env = make_backend(f"playground:{ENV}", E, episode_length=EPISODE)
    assert env.observation_space == Box((-np.inf,) * 5, (np.inf,) * 5, (5,))
    assert env.action_space == Box((-1.0,), (1.0,), (1,))
    assert env.at(jnp.int32(1)) is env
    seeds = jax.random.split(jax.random.PRNGKey(7), S)
    actions = jax.random.uniform(jax.random.PRNGKey(1), (S, T, E, 1), minval=-1, maxval=1)
    actions = actions.at[1, 7, 0].set(jnp.nan)

    def run(key, acts):
        obs0, state = env.reset(key)

        def body(state, x):
            k, a = x
            obs, state, reward, terminated, truncated, info = env.step(k, state, a)
            return state, (obs, reward, terminated, truncated, info["final_obs"], state.steps)

        return obs0, jax.lax.scan(body, state, (jax.random.split(jax.random.fold_in(key, 1), T), acts))[1]

    obs0, (obs, reward, term, trunc, final, steps) = jax.jit(jax.vmap(run))(seeds, actions)
    state = jax.eval_shape(jax.vmap(lambda k: env.reset(k)[1]), seeds)
    assert all(np.size(x) > 0 for x in jax.tree.leaves(state))  # orbax cannot save MJX's zero-size fields
    assert obs.dtype == final.dtype == reward.dtype == jnp.float32 and obs.shape == (S, T, E, 5)
    assert term.dtype == trunc.dtype == jnp.bool_ and steps.dtype == jnp.int32

    reset, step = raw
    want_term, want_trunc = np.zeros((S, T, E), bool), np.zeros((S, T, E), bool)
    for s in range(S):
        states = [reset(k) for k in jax.random.split(seeds[s], E)]
        count = [0] * E
        np.testing.assert_allclose(obs0[s], np.stack([st.obs for st in states]), rtol=1e-5, atol=1e-6)
        step_keys = jax.random.split(jax.random.fold_in(seeds[s], 1), T)
        for t in range(T):
            reset_keys = jax.random.split(step_keys[t], E)
            for i in range(E):
                st = step(states[i], actions[s, t, i])
                count[i] += 1
                np.testing.assert_allclose(final[s, t, i], st.obs, rtol=1e-5, atol=1e-6)  # NaN == NaN here
                np.testing.assert_allclose(reward[s, t, i], st.reward, rtol=1e-5, atol=1e-6)
                want_term[s, t, i] = st.done > 0.5
                want_trunc[s, t, i] = count[i] == EPISODE and not want_term[s, t, i]
                if want_term[s, t, i] or want_trunc[s, t, i]:
                    states[i], count[i] = reset(reset_keys[i]), 0
                else:
                    states[i] = st
                assert steps[s, t, i] == count[i]
                np.testing.assert_allclose(obs[s, t, i], states[i].obs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(term, want_term)
    np.testing.assert_array_equal(trunc, want_trunc)
    assert np.argwhere(want_term).tolist() == [[1, 7, 0]] and want_trunc.sum() == S * E * 2 - 1
    assert np.isnan(final[1, 7, 0]).any() and np.isfinite(obs).all()
    assert not np.allclose(obs[trunc], final[trunc])


def test_action_repeat_sums_rewards_and_counts_env_steps(raw):
    reset, step = raw
    env = make_backend(f"playground:{ENV}", E, action_repeat=2, episode_length=4)
    key = jax.random.PRNGKey(3)
    _, state = jax.jit(env.reset)(key)
    states = [reset(k) for k in jax.random.split(key, E)]
    action = jnp.asarray([[0.5], [-1.0]])
    env_step = jax.jit(env.step)
    for t in range(2):  # 2 agent steps = 4 env steps = episode_length: truncated on the second
        k = jax.random.PRNGKey(10 + t)
        obs, state, reward, term, trunc, info = env_step(k, state, action)
        assert not np.asarray(term).any() and np.asarray(trunc).tolist() == [t == 1] * E
        assert np.asarray(state.steps).tolist() == [0 if t == 1 else 2] * E
        for i in range(E):
            first = step(states[i], action[i])
            second = step(first, action[i])
            np.testing.assert_allclose(reward[i], first.reward + second.reward, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(info["final_obs"][i], second.obs, rtol=1e-5, atol=1e-6)
            states[i] = reset(jax.random.split(k, E)[i]) if t == 1 else second
            np.testing.assert_allclose(obs[i], states[i].obs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, needle", [
    (lambda: validate_env_id("playground:CartpoleSwingUp"), "did you mean playground:CartpoleSwingup"),
    (lambda: validate_env_id("playground:cheetah"), "playground:CheetahRun"),
    (lambda: make_backend("playground:CartpoleSwingup", 2, config_overrides={"nope": 1}), "no config field 'nope'"),
    (lambda: make_backend("playground:CartpoleSwingup", 2, episode_length=0), "must be >= 1"),
])
def test_config_errors_are_one_line(playground, make, needle):
    with pytest.raises(ConfigError) as err:
        make()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_ppo_cli_trains_on_playground_for_both_seeds(playground, tmp_path):
    out = tmp_path / "ppo"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "WANDB_MODE": "offline"}
    r = subprocess.run([sys.executable, "-m", "plasticine_jax", "train", "--algo", "ppo", "--env",
                        f"playground:{ENV}", "--num-seeds", "2", "--total-timesteps", "128", "--num-envs", "4",
                        "--ppo.num-steps", "16", "--ppo.num-minibatches", "2", "--ppo.update-epochs", "1",
                        "--net.widths", "16", "16", "--metrics.every", "1", "--log-every", "1", "--out", str(out),
                        "--no-wandb", "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert {row["seed"] for row in rows} == {0, 1} and len(rows) == 2 * 2
    assert all(np.isfinite(row["losses/value_loss"]) for row in rows)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["env"] == f"playground:{ENV}" and cfg["ppo"]["normalize_obs"]  # the "continuous" preset
