"""The dm_control backend: inside ``jit(lax.scan)`` under ``vmap`` over seeds it gives exactly dm_control's own
Python loop (observations, rewards, episode ends, auto-reset with final_obs, per-env seeding), one host call per
step for all seeds; the dynamics mode builds the stock quadruped for task 0, sets the toe friction of later tasks
(read back from the MuJoCo models) at the configured update of a continual TD3 run; one-line config errors; a
short TD3 CLI run writes metrics for both seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("dm_control")

from plasticine_jax.algos import td3  # noqa: E402
from plasticine_jax.algos.td3_config import PRESETS  # noqa: E402
from plasticine_jax.envs import Box, dmc_env, make_env  # noqa: E402
from plasticine_jax.envs.dmc_env import DmcVecEnv  # noqa: E402
from plasticine_jax.envs.registry import validate_env_id  # noqa: E402
from plasticine_jax.envs.tasks import ContinualConfig, frictions_csv  # noqa: E402
from plasticine_jax.errors import ConfigError  # noqa: E402
from plasticine_jax.metrics.config import MetricsConfig  # noqa: E402

suite = dmc_env._suite()  # dm_control.suite (imported quietly: glfw warns that there is no display)

S, E, T = 2, 2, 12
TIME_LIMIT = 0.05  # seconds; cartpole's control step is 0.01 s, so episodes of 5 steps


def _toe_frictions(dm_env) -> np.ndarray:
    model = dm_env.physics.model
    return np.asarray([model.geom_friction[model.name2id(n, "geom"), 0] for n in dmc_env._TOE_GEOMS])


def _flat(observation) -> np.ndarray:
    return np.concatenate([np.asarray(v).ravel() for v in observation.values()]).astype(np.float32)


def test_matches_dm_control_python_loop_under_vmap():
    env = DmcVecEnv("cartpole_swingup", E, seed=3, time_limit=TIME_LIMIT)
    assert env.observation_space == Box((-np.inf,) * 5, (np.inf,) * 5, (5,))
    assert env.action_space == Box((-1.0,), (1.0,), (1,))
    actions = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (S, T, E, 1), minval=-1, maxval=1))

    def run(key, acts):
        obs0, state = env.reset(key)

        def body(state, a):
            obs, state, reward, terminated, truncated, info = env.step(key, state, a)
            return state, (obs, reward, terminated, truncated, info["final_obs"])

        return obs0, jax.lax.scan(body, state, acts)[1]

    out = jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(0), S), actions)
    obs0, (obs, reward, terminated, truncated, final_obs) = jax.tree.map(np.asarray, out)
    assert obs.dtype == reward.dtype == final_obs.dtype == np.float32 and truncated.dtype == bool
    assert obs.shape == final_obs.shape == (S, T, E, 5) and reward.shape == (S, T, E)
    assert not terminated.any()
    assert env.host_envs(S)[0] is dmc_env.host_batch(env.spec, S * E).envs[0]
    assert dmc_env.host_batch(env.spec, S * E).calls == 1 + T  # one host call per step for all seeds x envs
    ends = 0
    for s in range(S):
        for e in range(E):
            ref = suite.load("cartpole", "swingup", task_kwargs={"random": 3 + s * E + e, "time_limit": TIME_LIMIT})
            np.testing.assert_array_equal(obs0[s, e], _flat(ref.reset().observation))
            for t in range(T):
                ts = ref.step(actions[s, t, e].astype(np.float64))
                np.testing.assert_array_equal(final_obs[s, t, e], _flat(ts.observation))
                assert reward[s, t, e] == np.float32(ts.reward) and truncated[s, t, e] == ts.last()
                if ts.last():
                    ends += 1
                    ts = ref.reset()
                np.testing.assert_array_equal(obs[s, t, e], _flat(ts.observation))
    assert ends == S * E * 2 and (truncated[:, [4, 9]]).all()  # two auto-resets per env in 12 steps
    assert not np.array_equal(obs0[0], obs0[1]) and not np.array_equal(obs0[0, 0], obs0[0, 1])  # distinct seeds


def test_dash_spelling_and_multiword_ids():
    assert dmc_env.split_env_id("quadruped-walk") == ("quadruped", "walk")
    assert dmc_env.split_env_id("ball_in_cup_catch") == ("ball_in_cup", "catch")
    assert dmc_env.split_env_id("cartpole_swingup_sparse") == ("cartpole", "swingup_sparse")
    quad = DmcVecEnv("quadruped-walk", 1)
    assert quad.observation_space.shape == (78,) and quad.action_space.shape == (12,)
    assert max(quad.action_space.high) == 1.1  # bounds from the spec, per joint


def test_stock_friction_model_is_the_suites():
    """Task 0 of the dynamics mode (friction 1.5, built from the XML) is the suite's quadruped_walk exactly."""
    assert dmc_env.stock_toe_friction() == 1.5
    ours = dmc_env._quadruped_env("walk", 1.5, random=4, time_limit=0.1)
    ref = suite.load("quadruped", "walk", task_kwargs={"random": 4, "time_limit": 0.1})
    fields = [f for f in dir(ref.physics.model) if isinstance(getattr(ref.physics.model, f), np.ndarray)]
    assert "geom_friction" in fields and len(fields) > 100
    for f in fields:  # every array of the compiled model
        np.testing.assert_array_equal(getattr(ours.physics.model, f), getattr(ref.physics.model, f), err_msg=f)
    np.testing.assert_array_equal(_flat(ours.reset().observation), _flat(ref.reset().observation))
    rng = np.random.default_rng(0)
    for _ in range(6):
        a = rng.uniform(-1, 1, 12)
        a1, a2 = ours.step(a), ref.step(a)
        np.testing.assert_array_equal(_flat(a1.observation), _flat(a2.observation))
        assert a1.reward == a2.reward and a1.last() == a2.last()


def test_friction_switch_rebuilds_the_models_and_dynamics():
    table = [np.nan, 0.05, 1.9]
    env = DmcVecEnv("quadruped_walk", 2, seed=5, friction_table=table)

    @jax.jit
    def run(task, key, previous):
        bound = env.at(task)
        obs0, state = bound.reset(key, previous)

        def body(state, _):
            obs, state, *_ = bound.step(key, state, jnp.full((2, 12), 0.5))
            return state, obs

        state, obs = jax.lax.scan(body, state, None, 40)
        return state, obs0, obs

    key = jax.random.PRNGKey(0)
    state, obs0_a, obs_a = run(jnp.int32(0), key, dmc_env.DmcState(jnp.zeros((), jnp.int32)))
    envs = env.host_envs()
    assert all((_toe_frictions(e) == 1.5).all() for e in envs)  # NaN: the suite's own model
    state, obs0_b, obs_b = run(jnp.int32(1), key, state)
    envs_b = env.host_envs()
    assert all(b is not a for a, b in zip(envs, envs_b, strict=True))  # rebuilt for the new task
    assert all((_toe_frictions(e) == float(np.float32(0.05))).all() for e in envs_b)
    other = [n for n in range(envs_b[0].physics.model.ngeom) if "toe" not in envs_b[0].physics.model.id2name(n, "geom")]
    assert (envs_b[0].physics.model.geom_friction[other, 0] == 1.0).all()  # only the toes change
    np.testing.assert_array_equal(obs0_a, obs0_b)  # rebuilt with its seed: the same initial states
    assert np.abs(np.asarray(obs_a) - np.asarray(obs_b)).max() > 1.0  # ... that the slippery toes move differently
    state, _, _ = run(jnp.int32(2), key, state)
    assert all((_toe_frictions(e) == float(np.float32(1.9))).all() for e in env.host_envs())
    _, obs0_c, obs_c = run(jnp.int32(0), key, state)  # back to the stock model: the first run exactly
    assert all((_toe_frictions(e) == 1.5).all() for e in env.host_envs())
    np.testing.assert_array_equal(obs0_c, obs0_a)
    np.testing.assert_array_equal(obs_c, obs_a)
    assert run._cache_size() == 1  # one compile for every task


def test_continual_td3_switches_toe_friction_at_the_configured_update():
    cfg = replace(PRESETS["dmc"], num_envs=1, steps_per_update=5, buffer_size=64, batch_size=8, learning_starts=5,
                  metric_batch=16, net=replace(PRESETS["dmc"].net, widths=(16, 16)))
    c = ContinualConfig(num_tasks=3, task_timesteps=10, shifts=("params",), params=("friction",), friction_row=1)
    learner = td3.make_train(cfg, "dmc:quadruped_walk", 30, (), MetricsConfig(every=1), continual=c)
    table = learner.env.task_tables["param/friction"]
    np.testing.assert_array_equal(table, np.asarray([1.5, *frictions_csv()[1, :2]], np.float32))  # task 0 stock
    init = jax.jit(jax.vmap(learner.init))
    step = jax.jit(jax.vmap(learner.run_updates, in_axes=(0, None, None)), static_argnums=2)
    state = init(jax.random.split(jax.random.PRNGKey(0), 2), None)
    host = learner.env.env  # EpisodeStats -> DmcVecEnv
    frictions, tasks = [], []
    for u in range(6):  # update u of 2 per task: the switch comes before updates 2 and 4
        state, out = step(state, u, 1)
        frictions.append([_toe_frictions(e)[0] for e in host.host_envs(2)])
        tasks.append(np.asarray(out["charts/current_task"])[:, 0].tolist())
    assert tasks == [[0, 0], [0, 0], [1, 1], [1, 1], [2, 2], [2, 2]]
    expected = [float(table[t]) for t in (0, 0, 1, 1, 2, 2)]
    assert [f[0] for f in frictions] == expected and all(f[0] == f[1] for f in frictions)
    # one reset at init, one per switch: the init traced inside the switch (fresh baseline) does not reset the envs
    assert dmc_env.host_batch(host.spec, 2).resets == 3
    assert np.isfinite(np.asarray(out["losses/qf1_loss"])).all()


@pytest.mark.parametrize("make, needle", [
    (lambda: validate_env_id("dmc:cheetah_runn"), "unknown dm_control task 'cheetah_runn' (did you mean "
                                                  "dmc:cheetah_run"),
    (lambda: DmcVecEnv("walker-jog", 1), "(did you mean dmc:walker_run, dmc:walker_walk"),
    (lambda: DmcVecEnv("cartpole_swingup", 1, friction_table=[1.0, 0.5]), "not a quadruped task"),
    (lambda: DmcVecEnv("quadruped_walk", 1, friction_table=[1.0, -0.5]), "values must be >= 0"),
    (lambda: make_env("dmc:quadruped_walk", 1, ContinualConfig(num_tasks=2, task_timesteps=10, shifts=("params",),
                                                             params=("mass",))), "shifts only 'friction'"),
    (lambda: make_env("dmc:cartpole_swingup", 1, ContinualConfig(num_tasks=2, task_timesteps=10, shifts=("params",),
                                                                params=("friction",), friction_row=0)),
     "not a quadruped task"),
])
def test_config_errors_are_one_line(make, needle):
    with pytest.raises(ConfigError) as err:
        make()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_missing_dm_control_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dm_control", None)  # import dm_control now raises ImportError
    with pytest.raises(ConfigError) as err:
        validate_env_id("dmc:cartpole_swingup")
    assert 'pip install -e ".[dmc]"' in str(err.value) and "\n" not in str(err.value)


def test_td3_cli_trains_on_dmc_for_both_seeds(tmp_path):
    out = tmp_path / "td3"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "WANDB_MODE": "offline"}
    r = subprocess.run([sys.executable, "-m", "plasticine_jax", "train", "--algo", "td3", "--env",
                        "dmc:cartpole_swingup", "--num-seeds", "2", "--total-timesteps", "200",
                        "--td3.steps-per-update", "50", "--td3.learning-starts", "100", "--td3.buffer-size", "200",
                        "--td3.batch-size", "16", "--td3.metric-batch", "32", "--net.widths", "16", "16",
                        "--metrics.every", "1", "--log-every", "1", "--out", str(out), "--no-wandb",
                        "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert {row["seed"] for row in rows} == {0, 1} and len(rows) == 2 * 4
    last = [row for row in rows if row["update"] == 4]
    assert all(np.isfinite(row["losses/qf1_loss"]) for row in last)
    assert all(row["plasticity/critic/dormant_ratio"] is not None for row in last)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["env"] == "dmc:cartpole_swingup"
