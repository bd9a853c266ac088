"""The envpool backend: Atari and Procgen stepped inside ``jit(lax.scan)`` with 2 vmapped seeds (one pool of S x E
envs) give, env by env, exactly what envpool's own Python loop gives on the same action streams (observations,
rewards, terminated/truncated, final_obs, episode statistics on whole games with raw scores), with envpool's extra
reset step hidden; distinct seed slots get distinct envs; one seed without vmap is slot 0; one-line config errors;
and PQN trains on Pong from the CLI with both seeds logged."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

envpool = pytest.importorskip("envpool")

from plasticine_jax.envs import Discrete, make_env  # noqa: E402
from plasticine_jax.envs import envpool_env as ep  # noqa: E402
from plasticine_jax.envs.registry import validate_env_id  # noqa: E402
from plasticine_jax.errors import ConfigError  # noqa: E402

S, E = 2, 3
N = S * E


def rollout(env, actions: np.ndarray, vmapped: bool = True) -> dict:
    """Reset + ``T`` steps inside one ``jit(lax.scan)``, vmapped over the seed axis of ``actions`` [T, S, E] (or
    one seed, ``actions`` [T, E]); observations as uint8 NHWC to keep the arrays small."""

    def run(key, acts):
        obs0, state = env.reset(key)

        def body(state, a):
            obs, state, reward, terminated, truncated, info = env.step(key, state, a)
            u8 = lambda x: x.astype(jnp.uint8)
            return state, {"obs": u8(obs), "final_obs": u8(info["final_obs"]), "reward": reward,
                           "terminated": terminated, "truncated": truncated, "episode_done": info["episode_done"],
                           "episode_return": info["episode_return"], "episode_length": info["episode_length"]}

        _, traj = jax.lax.scan(body, state, acts)
        return obs0.astype(jnp.uint8), traj

    if vmapped:
        keys = jax.random.split(jax.random.PRNGKey(0), actions.shape[1])
        obs0, traj = jax.jit(jax.vmap(run, in_axes=(0, 1)))(keys, jnp.asarray(actions))
        # [S, T, E, ...] -> per env [S*E, T, ...]; obs0 [S, E, ...] -> [S*E, ...]
        traj = {k: np.swapaxes(np.asarray(v), 1, 2).reshape(-1, *v.shape[1:2], *v.shape[3:]) for k, v in traj.items()}
        return {"obs0": np.asarray(obs0).reshape(-1, *obs0.shape[2:]), **traj}
    obs0, traj = jax.jit(run)(jax.random.PRNGKey(0), jnp.asarray(actions))
    return {"obs0": np.asarray(obs0), **{k: np.swapaxes(np.asarray(v), 0, 1) for k, v in traj.items()}}


def envpool_loop(task: str, streams: np.ndarray, atari: bool, **options) -> dict:
    """envpool's own Python loop (gymnasium API: a finished env resets on its next step, whose action it ignores)
    on per-env action streams [N, T]: a reset step does not consume the env's stream, and its observation is the
    next observation of the step that ended the episode (whose own observation is the final_obs). Returns per env
    and step [N, T] the records, and the episode statistics of whole games with raw scores (reference §1.3)."""
    n, horizon = streams.shape
    pool = envpool.make(task, env_type="gymnasium", num_envs=n, seed=0, **{**ep.DEFAULTS[ep.task_kind(task)],
                                                                         **options})
    obs0, _ = pool.reset()
    recs: list[list[dict]] = [[] for _ in range(n)]
    ptr, pending = np.zeros(n, int), np.zeros(n, bool)
    ep_ret, ep_len = np.zeros(n), np.zeros(n, int)

    def unfinished() -> bool:
        return any(ptr[i] < horizon or recs[i][-1]["obs"] is None for i in range(n))

    while unfinished():
        obs, reward, terminated, truncated, info = pool.step(streams[np.arange(n), np.minimum(ptr, horizon - 1)])
        for i in range(n):
            if pending[i]:  # envpool's reset step: its observation is the learner's next one
                if recs[i][-1]["obs"] is None:
                    recs[i][-1]["obs"] = obs[i]
            elif ptr[i] < horizon:
                done = bool(terminated[i] or truncated[i])
                raw = float(info["reward"][i]) if atari else float(reward[i])
                game_over = bool(info["terminated"][i] or truncated[i]) if atari else done
                ep_ret[i] += raw
                ep_len[i] += 1
                recs[i].append({"obs": None if done else obs[i], "final_obs": obs[i], "reward": reward[i],
                                "terminated": terminated[i], "truncated": truncated[i], "episode_done": game_over,
                                "episode_return": ep_ret[i], "episode_length": ep_len[i]})
                if game_over:
                    ep_ret[i], ep_len[i] = 0.0, 0
                ptr[i] += 1
        pending = terminated | truncated
    out = {k: np.stack([np.stack([r[k] for r in env_recs]) for env_recs in recs]) for k in recs[0][0]}
    return {"obs0": obs0, **out}


def hwc(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, -3, -1) if x.shape[-3] in (1, 3, 4) and x.shape[-1] not in (1, 3, 4) else x


def assert_same(ours: dict, ref: dict) -> None:
    np.testing.assert_array_equal(ours["obs0"], hwc(ref["obs0"]))
    for k in ("obs", "final_obs"):
        np.testing.assert_array_equal(ours[k], hwc(ref[k]), err_msg=k)
    for k in ("reward", "terminated", "truncated", "episode_done"):
        np.testing.assert_array_equal(ours[k], ref[k].astype(ours[k].dtype), err_msg=k)
    done = ref["episode_done"].astype(bool)
    for k in ("episode_return", "episode_length"):  # the totals of the games that ended
        np.testing.assert_allclose(ours[k][done], ref[k][done], err_msg=k)


def streams(num_actions: int, horizon: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_actions, (N, horizon)).astype(np.int32)


def as_scan_actions(s: np.ndarray) -> np.ndarray:
    """[S*E, T] per-env streams -> [T, S, E] (seed slot s owns pool envs s*E .. s*E+E-1)."""
    return s.T.reshape(-1, S, E)


# ------------------------------------------------------------------------------------------------ Atari
@pytest.fixture(scope="module")
def pong():
    """Pong with a 40-step time limit (so episodes end and restart inside the horizon), 2 seeds x 3 envs."""
    acts = streams(6, 90)
    env = make_env("envpool:Pong-v5", E, max_episode_steps=40)
    return env, acts, rollout(env, as_scan_actions(acts))


def test_atari_spaces_and_obs_layout(pong):
    env, _, ours = pong
    assert env.observation_space.shape == (84, 84, 4) and env.action_space == Discrete(6)
    assert ours["obs"].shape == (N, 90, 84, 84, 4)


def test_pong_matches_envpool_loop(pong):
    env, acts, ours = pong
    ref = envpool_loop("Pong-v5", acts, atari=True, max_episode_steps=40)
    assert ref["truncated"].sum() == 2 * N  # every env ended twice (steps 40 and 80) and restarted
    assert_same(ours, ref)


def test_auto_reset_inside_the_step(pong):
    """Where an episode ends, obs is the reset observation (a fresh frame stack: 4 equal frames) and final_obs the
    terminal one; elsewhere final_obs is obs."""
    _, _, ours = pong
    done = ours["truncated"] | ours["terminated"]
    assert done.sum() == 2 * N
    reset_obs = ours["obs"][done]
    assert all((o == o[..., :1]).all() for o in reset_obs)
    assert not np.array_equal(ours["final_obs"][done], reset_obs)
    np.testing.assert_array_equal(ours["final_obs"][~done], ours["obs"][~done])


def test_seed_slots_get_distinct_envs(pong):
    _, _, ours = pong
    per_slot = ours["obs"].reshape(S, E, *ours["obs"].shape[1:])
    assert not np.array_equal(per_slot[0], per_slot[1])


def test_one_seed_without_vmap_is_slot_zero(pong):
    """Without vmap the backend runs a pool of E envs: seed slot 0 of the vmapped run."""
    _, acts, ours = pong
    env = make_env("envpool:Pong-v5", E, max_episode_steps=40)
    single = rollout(env, acts[:E].T, vmapped=False)
    for k, v in single.items():
        np.testing.assert_array_equal(v, ours[k][:E], err_msg=k)


def test_breakout_lives_and_games_as_the_reference_logs_them():
    """Episodic life + reward clip (reference §1.3): a life loss is `terminated` for the learner, but the statistics
    count whole games (ended with no lives left) with their unclipped score, as envpool's loop does."""
    acts = streams(4, 220, seed=1)
    ours = rollout(make_env("envpool:Breakout-v5", E), as_scan_actions(acts))
    ref = envpool_loop("Breakout-v5", acts, atari=True)
    assert_same(ours, ref)
    lives_lost, games = ours["terminated"].sum(), ours["episode_done"].sum()
    assert games >= 1 and lives_lost > games  # the learner sees more ends than the statistics log


# ------------------------------------------------------------------------------------------------ Procgen
def test_starpilot_matches_envpool_loop():
    acts = streams(15, 120, seed=2)
    env = make_env("envpool:StarpilotEasy-v0", E)
    assert env.observation_space.shape == (64, 64, 3) and env.action_space == Discrete(15)
    ours = rollout(env, as_scan_actions(acts))
    ref = envpool_loop("StarpilotEasy-v0", acts, atari=False)
    assert ref["terminated"].sum() >= 3  # episodes end (the ship is hit) and restart on a new level
    assert_same(ours, ref)
    per_slot = ours["obs0"].reshape(S, E, *ours["obs0"].shape[1:])
    assert not np.array_equal(per_slot[0], per_slot[1])


def test_procgen_without_qt_is_one_line(monkeypatch):
    def no_qt():
        raise ImportError("libQt5Core.so.5: cannot open shared object file")

    monkeypatch.setattr(ep, "_procgen_module", no_qt)
    with pytest.raises(ConfigError) as info:
        validate_env_id("envpool:StarpilotEasy-v0")
    message = str(info.value)
    assert ep.QT_INSTALL in message and "\n" not in message


# ------------------------------------------------------------------------------------------------ config errors
@pytest.mark.parametrize("spec,needle", [
    ("envpool:Pongg-v5", "did you mean envpool:Pong-v5"),
    ("envpool:HalfCheetah-v5", "not supported yet"),
])
def test_bad_env_ids_are_one_line(spec, needle):
    with pytest.raises(ConfigError) as info:
        validate_env_id(spec)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_missing_envpool_names_the_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "envpool", None)
    with pytest.raises(ConfigError) as info:
        validate_env_id("envpool:Pong-v5")
    assert 'pip install -e ".[envpool]"' in str(info.value) and "\n" not in str(info.value)


def test_pool_size_options_are_refused():
    with pytest.raises(ConfigError, match="batch_size"):
        ep.EnvpoolVecEnv("Pong-v5", 2, batch_size=4)
    with pytest.raises(ConfigError, match="bad options"):
        ep.EnvpoolVecEnv("Pong-v5", 2, no_such_option=1)


# ------------------------------------------------------------------------------------------------ end to end
def test_pqn_trains_on_pong_from_the_cli(tmp_path):
    from plasticine_jax.cli import main

    out = tmp_path / "pong"
    rc = main(["train", "--algo", "pqn", "--env", "envpool:Pong-v5", "--num-seeds", "2", "--num-envs", "4",
               "--total-timesteps", "128", "--pqn.num-steps", "16", "--pqn.update-epochs", "1",
               "--pqn.num-minibatches", "2", "--log-every", "1", "--out", str(out), "--no-wandb"])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["seed"] for r in rows} == {0, 1} and len(rows) == 2 * 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["env"] == "envpool:Pong-v5" and cfg["pqn"]["net"]["torso"] == "nature_cnn"
    assert all(np.isfinite(r["plasticity/weight_magnitude"]) for r in rows)
