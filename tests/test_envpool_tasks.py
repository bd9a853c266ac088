"""envpool DMC tasks and task sequences inside the compiled graph: a DMC task inside ``jit(lax.scan)`` with 2
vmapped seeds gives exactly envpool's own Python loop (float64 actions handed over inside the backend, the
observation dict flattened in dm_control's order to float32, truncation only); the FFI call's buffers are float64
with x64 off; the observation keys are dm_control's for every DMC task; a task sequence switches pools inside the
graph (``at(task)``, ``lax.switch`` on the unbatched task) at the configured step: Procgen levels (the level seeds
seen), Procgen games on level 200 from a ContinualConfig (task mode) and DMC tasks (each part equals the respective
Python loop); mismatched tasks and bad sequences are one-line errors; PPO trains on a Procgen level sequence and a
DMC task sequence from the CLI with ``task`` going 0 -> 1."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

envpool = pytest.importorskip("envpool")

from plasticine_jax.envs import Box, Discrete, make_env  # noqa: E402
from plasticine_jax.envs import envpool_env as ep  # noqa: E402
from plasticine_jax.envs.tasks import ContinualConfig  # noqa: E402
from plasticine_jax.errors import ConfigError  # noqa: E402

S, E = 2, 3
N = S * E


def rollout(env, actions: np.ndarray, switch_at: int | None = None) -> dict:
    """Reset + ``T`` steps inside one ``jit(lax.scan)`` vmapped over the seed axis of ``actions`` [T, S, E, ...];
    with ``switch_at`` the task is 0 before that step and 1 from it on (an unbatched traced index, the new task
    reset at the switch, as the learner does). Returns per env [S*E, T, ...] records and obs0 [S*E, ...]."""

    def run(key, acts):
        obs0, state = env.at(0).reset(key)

        def body(state, xs):
            t, a = xs
            task = jnp.int32(0) if switch_at is None else (t >= switch_at).astype(jnp.int32)
            if switch_at is not None:
                state = jax.lax.cond(t == switch_at, lambda s: env.at(task).reset(key)[1], lambda s: s, state)
            obs, state, reward, terminated, truncated, info = env.at(task).step(key, state, a)
            rec = {"obs": obs, "final_obs": info["final_obs"], "reward": reward, "terminated": terminated,
                   "truncated": truncated}
            if "level_seed" in info:
                rec["level_seed"] = info["level_seed"]
            return state, rec

        _, traj = jax.lax.scan(body, state, (jnp.arange(acts.shape[0]), acts))
        return obs0, traj

    keys = jax.random.split(jax.random.PRNGKey(0), actions.shape[1])
    obs0, traj = jax.jit(jax.vmap(run, in_axes=(0, 1)))(keys, jnp.asarray(actions))
    traj = {k: np.swapaxes(np.asarray(v), 1, 2).reshape(-1, v.shape[1], *v.shape[3:]) for k, v in traj.items()}
    return {"obs0": np.asarray(obs0).reshape(-1, *obs0.shape[2:]), **traj}


def flat(task: str, obs) -> np.ndarray:
    """envpool's observation as the backend presents it (DMC: dm_control's keys flattened to float32; Procgen:
    the HWC image as float32)."""
    if isinstance(obs, dict):
        keys = ep.DMC_OBS_KEYS.get(task, tuple(obs))
        return np.concatenate([np.asarray(obs[k]).reshape(len(obs[keys[0]]), -1) for k in keys], 1).astype(np.float32)
    return np.asarray(obs, np.float32)


def envpool_loop(task: str, streams: np.ndarray, **options) -> dict:
    """envpool's own Python loop (gymnasium API: a finished env resets on its next step, ignoring that step's
    action) on per-env action streams [N, T, ...]: a reset step does not consume the stream and its observation is
    the learner's next one. Per env [N, T, ...] records as the backend gives them (DMC: every end a truncation)."""
    n, horizon = streams.shape[:2]
    kind = ep.task_kind(task)
    pool = envpool.make(task, env_type="gymnasium", num_envs=n, seed=0, **{**ep.DEFAULTS[kind], **options})
    obs0, _ = pool.reset()
    recs: list[list[dict]] = [[] for _ in range(n)]
    ptr, pending = np.zeros(n, int), np.zeros(n, bool)
    while any(ptr[i] < horizon or recs[i][-1]["obs"] is None for i in range(n)):
        obs, reward, terminated, truncated, info = pool.step(streams[np.arange(n), np.minimum(ptr, horizon - 1)])
        obs = flat(task, obs)
        if kind == "dmc":
            terminated, truncated = np.zeros_like(terminated), terminated | truncated
        for i in range(n):
            if pending[i]:
                if recs[i][-1]["obs"] is None:
                    recs[i][-1]["obs"] = obs[i]
            elif ptr[i] < horizon:
                done = bool(terminated[i] or truncated[i])
                rec = {"obs": None if done else obs[i], "final_obs": obs[i], "reward": reward[i],
                       "terminated": terminated[i], "truncated": truncated[i]}
                if "level_seed" in info:
                    rec["level_seed"] = info["level_seed"][i]
                recs[i].append(rec)
                ptr[i] += 1
        pending = terminated | truncated
    out = {k: np.stack([np.stack([r[k] for r in env_recs]) for env_recs in recs]) for k in recs[0][0]}
    return {"obs0": flat(task, obs0), **out}


def assert_same(ours: dict, ref: dict, steps: slice = slice(None)) -> None:
    for k in ref:
        if k == "obs0":
            continue
        np.testing.assert_array_equal(ours[k][:, steps], ref[k].astype(ours[k].dtype), err_msg=k)


def as_scan(streams: np.ndarray) -> np.ndarray:
    """[S*E, T, ...] per-env streams -> [T, S, E, ...] (seed slot s owns pool envs s*E .. s*E+E-1)."""
    return np.swapaxes(streams, 0, 1).reshape(streams.shape[1], S, E, *streams.shape[2:])


def uniform(shape: tuple, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# ------------------------------------------------------------------------------------------------ DMC
def test_cheetah_matches_envpool_loop():
    """CheetahRun with a 12-step limit: every env is truncated twice and restarts; rewards, observations,
    final_obs and ends equal envpool's loop (which gets the same float32 actions as float64)."""
    acts = uniform((N, 30, 6))
    env = make_env("envpool:CheetahRun-v1", E, max_episode_steps=12)
    assert env.observation_space.shape == (17,) and env.action_space == Box((-1.0,) * 6, (1.0,) * 6, (6,))
    ours = rollout(env, as_scan(acts))
    ref = envpool_loop("CheetahRun-v1", acts.astype(np.float64), max_episode_steps=12)
    assert ref["truncated"].sum() == 2 * N and not ref["terminated"].any()
    assert ours["obs"].dtype == np.float32 and np.abs(ours["reward"]).sum() > 0
    np.testing.assert_array_equal(ours["obs0"], ref["obs0"])
    assert_same(ours, ref)


def test_dmc_xla_buffers_are_float64_without_x64():
    """The FFI call gets a float64 action buffer and declares float64 observation buffers (envpool's C++ side reads
    and writes float64: a 32-bit buffer would corrupt memory), while x64 stays off outside it."""
    assert not jax.config.jax_enable_x64
    env = ep.EnvpoolVecEnv("CheetahRun-v1", 2)

    def step(key, action):
        _, state = env.reset(key)
        return env.step(key, state, action)

    text = jax.jit(step).lower(jax.random.PRNGKey(0), jnp.zeros((2, 6))).as_text()
    send = next(line for line in text.splitlines() if "custom_call" in line and "_send" in line)
    recv = next(line for line in text.splitlines() if "custom_call" in line and "_recv" in line)
    assert send.rstrip().endswith("tensor<2x6xf64>) -> tensor<8xui8>")
    assert "tensor<2x8xf64>, tensor<2x9xf64>)" in recv  # position, velocity
    assert not any("f64" in line for line in text.splitlines() if "custom_call" not in line and "convert" not in line)


def test_dmc_observation_keys_are_dm_controls():
    """envpool gives each domain the union of its tasks' observation keys; the backend keeps dm_control's keys in
    dm_control's order (the reference flattens dm_control's dict), for every DMC task envpool has."""
    suite = pytest.importorskip("dm_control.suite")
    ids = [k for k, v in envpool.registration.registry.specs.items() if v[0] == "envpool.mujoco.dmc"]
    for task in ids:
        spec = envpool.make_spec(task)
        domain = {"BallInCup": "ball_in_cup", "PointMass": "point_mass", "HumanoidCMU": "humanoid_CMU"}
        name = task[: -len("-v1")]
        dom = next((v for k, v in domain.items() if name.startswith(k)), None)
        if dom is None:
            dom = next(d for d in {d for d, _ in suite.ALL_TASKS} if name.lower().startswith(d.replace("_", "")))
        keys = list(suite.load(dom, spec.config.task_name).observation_spec())
        assert list(ep.DMC_OBS_KEYS.get(task, tuple(spec.gymnasium_observation_space.spaces))) == keys, task


def test_dmc_task_switch_walker_stand_to_walk():
    """WalkerStand -> WalkerWalk at step 8 (10-step episodes): before the switch the stand pool's loop, after it
    the walk pool's from its reset; each equals its Python loop, and the rewards differ between the tasks."""
    k, horizon = 8, 20
    acts = uniform((N, horizon, 6), seed=1)
    env = ep.EnvpoolVecEnv("WalkerStand-v1", E, tasks=[{}, {"task": "WalkerWalk-v1"}], max_episode_steps=10)
    assert len(env.specs) == 2 and env.at(jnp.int32(1)).task_index is not None
    ours = rollout(env, as_scan(acts), switch_at=k)
    stand = envpool_loop("WalkerStand-v1", acts[:, :k].astype(np.float64), max_episode_steps=10)
    walk = envpool_loop("WalkerWalk-v1", acts[:, k:].astype(np.float64), max_episode_steps=10)
    np.testing.assert_array_equal(ours["obs0"], stand["obs0"])
    assert_same(ours, stand, slice(None, k))
    assert_same(ours, walk, slice(k, None))
    assert walk["truncated"].sum() == N  # the walk pool's episodes end at its own 10th step
    assert not np.allclose(stand["reward"][:, :k], walk["reward"][:, :k])


# ------------------------------------------------------------------------------------------------ Procgen
def test_procgen_level_switch():
    """Bigfish single levels 5 -> 10 switched at step 6: the level seeds seen are 5 before and 10 from the switch;
    after it, everything equals a Python loop of the level-10 pool."""
    k, horizon = 6, 14
    acts = np.random.default_rng(2).integers(0, 15, (N, horizon)).astype(np.int32)
    env = ep.EnvpoolVecEnv("BigfishEasy-v0", E, tasks=[{"start_level": 5, "num_levels": 1},
                                                       {"start_level": 10, "num_levels": 1}])
    assert env.observation_space.shape == (64, 64, 3) and env.action_space == Discrete(15)
    ours = rollout(env, as_scan(acts), switch_at=k)
    assert (ours["level_seed"][:, :k] == 5).all() and (ours["level_seed"][:, k:] == 10).all()
    ref = envpool_loop("BigfishEasy-v0", acts[:, k:], start_level=10, num_levels=1)
    assert_same(ours, ref, slice(k, None))
    assert not np.array_equal(ours["obs"][:, k - 1], ours["obs"][:, k])


def test_procgen_task_mode_from_a_continual_config():
    """The reference's task mode (games in sequence, each on the single level 200) from ``--continual.shifts games
    levels``: tables for config.json, one pool per game, and the game switch inside the graph."""
    c = ContinualConfig(num_tasks=3, task_timesteps=32, shifts=("games", "levels"),
                        games=("BigfishEasy-v0", "envpool:StarpilotEasy-v0"), levels=(200,))
    env = make_env("envpool:BigfishEasy-v0", E, continual=c)
    assert env.task_tables["game"] == ["BigfishEasy-v0", "StarpilotEasy-v0", "BigfishEasy-v0"]
    assert env.task_tables["level"].tolist() == [200, 200, 200]
    inner = env.env
    assert inner.task_pool == (0, 1, 0) and [s.task for s in inner.specs] == ["BigfishEasy-v0", "StarpilotEasy-v0"]
    assert all(dict(s.options)["start_level"] == 200 and dict(s.options)["num_levels"] == 1 for s in inner.specs)
    k, horizon = 4, 10
    acts = np.random.default_rng(3).integers(0, 15, (N, horizon)).astype(np.int32)
    ours = rollout(inner, as_scan(acts), switch_at=k)
    assert (ours["level_seed"] == 200).all()
    ref = envpool_loop("StarpilotEasy-v0", acts[:, k:], start_level=200, num_levels=1)
    assert_same(ours, ref, slice(k, None))


def test_tasks_that_share_id_and_options_share_a_pool():
    env = ep.EnvpoolVecEnv("BigfishEasy-v0", E, tasks=[{"start_level": 5}, {"start_level": 10}, {"start_level": 5}])
    assert env.task_pool == (0, 1, 0) and len(env.specs) == 2
    assert env.at(4).task_index == 1 and env.at(4)._slot() == 1


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("tasks,needle", [
    ([{}, {"task": "CheetahRun-v1"}], "must be one family with one observation shape"),
    ([{}, {"task": "Pong-v5"}], "must be one family"),
    ([], "at least one task"),
    ([{}, {"task": "WalkerWalk-v1", "batch_size": 4}], "batch_size"),
])
def test_mismatched_tasks_are_one_line(tasks, needle):
    with pytest.raises(ConfigError) as info:
        ep.EnvpoolVecEnv("WalkerStand-v1", 2, tasks=tasks)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_unsupported_envpool_family_is_one_line():
    with pytest.raises(ConfigError) as info:
        ep.task_kind("HalfCheetah-v5")
    assert "not supported yet" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("kw,needle", [
    ({"shifts": ("levels",), "levels": (5, 10)}, "sets Procgen levels; envpool:WalkerStand-v1 is a DMC task"),
    ({"shifts": ("games",), "games": ("WalkerStand-v1", "CheetahRun-v1")}, "must be one family with one"),
    ({"shifts": ("games",)}, "needs --continual.games: envpool task ids"),
    ({"shifts": ("games",), "games": ("gymnax:Breakout-MinAtar",)}, "are not envpool tasks"),
])
def test_bad_envpool_sequences_are_one_line(kw, needle):
    c = ContinualConfig(num_tasks=2, task_timesteps=32, **kw)
    with pytest.raises(ConfigError) as info:
        make_env("envpool:WalkerStand-v1", 2, continual=c)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("args,needle", [
    (["--env", "envpool:Pong-v5", "--continual.shifts", "levels", "--continual.levels", "5"], "is an Atari task"),
    (["--env", "gymnax:CartPole-v1", "--continual.shifts", "levels", "--continual.levels", "5"],
     "plays Procgen levels"),
    (["--env", "envpool:WalkerStand-v1", "--continual.shifts", "levels"], "needs --continual.levels"),
    (["--env", "envpool:WalkerStand-v1", "--continual.shifts", "games"], "needs --continual.games"),
    (["--continual.shifts", "games", "--continual.games", "envpool:WalkerStand-v1", "Breakout-MinAtar"],
     "mixes backends"),
    (["--continual.shifts", "games", "--continual.games", "envpool:WalkerStand-v1", "envpool:WalkerWalkk-v1"],
     "did you mean envpool:WalkerWalk-v1"),
    (["--continual.shifts", "permute", "--continual.levels", "5"], "add levels to --continual.shifts"),
])
def test_bad_continual_cli_is_one_line(tmp_path, capsys, args, needle):
    from plasticine_jax.cli import main

    rc = main(["train", "--num-envs", "2", "--ppo.num-steps", "8", "--ppo.num-minibatches", "1",
               "--continual.num-tasks", "2", "--continual.task-timesteps", "32", *args,
               "--out", str(tmp_path / "x"), "--no-wandb", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ end to end
def train(tmp_path, *args: str) -> tuple[list[dict], dict]:
    from plasticine_jax.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--algo", "ppo", "--num-seeds", "2", "--num-envs", "2", "--ppo.num-steps", "8",
               "--ppo.num-minibatches", "1", "--ppo.update-epochs", "1", "--continual.num-tasks", "2",
               "--continual.task-timesteps", "32", "--log-every", "1", "--out", str(out), "--no-wandb",
               "--no-progress", *args])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "config.json").read_text())


def assert_task_goes_0_to_1(rows: list[dict]) -> None:
    assert {r["seed"] for r in rows} == {0, 1} and len(rows) == 2 * 4
    for seed in (0, 1):
        assert [r["task"] for r in rows if r["seed"] == seed] == [0, 0, 1, 1]
    assert all(np.isfinite(r["plasticity/weight_magnitude"]) for r in rows)


def test_ppo_on_a_procgen_level_sequence_from_the_cli(tmp_path):
    rows, cfg = train(tmp_path, "--env", "envpool:BigfishEasy-v0", "--preset", "procgen", "--continual.shifts",
                      "levels", "--continual.levels", "5", "10")
    assert_task_goes_0_to_1(rows)
    assert cfg["continual"]["level"] == [5, 10] and cfg["ppo"]["net"]["torso"] == "impala_cnn"


def test_ppo_on_a_dmc_task_sequence_from_the_cli(tmp_path):
    rows, cfg = train(tmp_path, "--env", "envpool:WalkerStand-v1", "--continual.shifts", "games",
                      "--continual.games", "WalkerStand-v1", "WalkerWalk-v1")
    assert_task_goes_0_to_1(rows)
    assert cfg["continual"]["game"] == ["WalkerStand-v1", "WalkerWalk-v1"] and cfg["run"]["env"] == \
        "envpool:WalkerStand-v1"
