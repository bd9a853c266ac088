"""Continual scenarios: the task index in the carry, in-graph switches at the configured updates for every vmapped
seed, the task-switch hook (once per switch), per-task env parameters / permutations / reward signs, what a switch
resets, the fresh-network baseline, no recompilation, rows and summaries per task, presets and one-line errors."""

from __future__ import annotations

import json
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.algos import learner as L
from plasticine_jax.algos import ppo, td3
from plasticine_jax.algos.ppo_config import PRESETS as PPO_PRESETS
from plasticine_jax.algos.td3_config import PRESETS as TD3_PRESETS
from plasticine_jax.cli import main
from plasticine_jax.envs import make_env
from plasticine_jax.envs.normalize import wrap_env
from plasticine_jax.envs.tasks import ContinualConfig, TaskSchedule, permutation_table
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.metrics.config import MetricsConfig

TINY = replace(PPO_PRESETS["cartpole"], num_envs=4, num_steps=16, num_minibatches=2, update_epochs=1,
               anneal_lr=False)
STEPS = 4 * 16  # env steps per update
TASKS, TASK_UPDATES = 3, 4
METRICS = MetricsConfig(every=2)


def cont(**kw) -> ContinualConfig:
    base = dict(num_tasks=TASKS, task_timesteps=TASK_UPDATES * STEPS, shifts=("permute",))
    return ContinualConfig(**{**base, **kw})


def tiny_ppo(c: ContinualConfig | None = None, interventions=(), cfg=TINY, env="gymnax:CartPole-v1"):
    c = c or cont()
    return ppo.make_train(cfg, env, c.num_tasks * c.task_timesteps, interventions, METRICS, continual=c)


def counting_intervention(read_acts: bool = False) -> Intervention:
    """Counts its task-switch calls and records the task each one announced (state in istate)."""
    n = TASKS

    def init(ctx, unit, key):
        return unit.replace(istate={**unit.istate, "count": {"n": jnp.zeros((), jnp.int32),
                                                             "tasks": jnp.full((n,), -1, jnp.int32),
                                                             "acts": jnp.zeros((n,), jnp.float32)}})

    def on_switch(ctx, unit, key, task, acts):
        st = unit.istate["count"]
        mag = sum(jnp.abs(a).sum() for a in jax.tree.leaves(acts))
        st = {"n": st["n"] + 1, "tasks": st["tasks"].at[st["n"]].set(task), "acts": st["acts"].at[st["n"]].set(mag)}
        return unit.replace(istate={**unit.istate, "count": st})

    return Intervention("count", order=99, init=init, on_task_switch=on_switch, switch_activations=read_acts)


def run_seeds(learner, n: int = 3, hparams=None):
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    if hparams is None:
        return jax.jit(jax.vmap(learner.train))(keys)
    return jax.jit(jax.vmap(learner.train))(keys, hparams)


# --------------------------------------------------------------------------------------------------------- schedule


def test_schedule_boundaries():
    s = TaskSchedule(num_tasks=3, task_updates=4)
    idx = jnp.arange(12)
    assert np.asarray(s.task_of(idx)).tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert np.flatnonzero(np.asarray(s.starts_task(idx))).tolist() == [4, 8]
    assert np.flatnonzero(np.asarray(s.ends_task(idx))).tolist() == [3, 7]


def test_switches_at_configured_updates_for_every_seed_and_hook_fires_once_per_switch():
    learner = tiny_ppo(interventions=[counting_intervention(read_acts=True)])
    state, out = run_seeds(learner, 3)
    task = np.asarray(out["charts/current_task"])
    expected = np.repeat(np.arange(TASKS), TASK_UPDATES)
    assert task.shape == (3, TASKS * TASK_UPDATES)
    assert (task == expected[None]).all()
    assert (np.asarray(state.task) == TASKS - 1).all()
    count = state.units["agent"].istate["count"]
    assert (np.asarray(count["n"]) == TASKS - 1).all()  # once per switch, never before task 0 nor after the last
    assert (np.asarray(count["tasks"])[:, :TASKS - 1] == np.arange(1, TASKS)).all()
    assert (np.asarray(count["acts"])[:, :TASKS - 1] > 0).all()  # the switch saw the ending task's activations


def test_hook_is_not_called_without_tasks_and_is_warned_about():
    iv = replace(counting_intervention(), task_flags=("--count.on-task-switch",))
    learner = ppo.make_train(TINY, "gymnax:CartPole-v1", 4 * STEPS, [iv], METRICS)
    assert learner.tasks is None
    assert any("--count.on-task-switch never fires" in w for w in learner.warnings)
    state, out = run_seeds(learner, 1)
    assert int(state.units["agent"].istate["count"]["n"][0]) == 0
    assert "charts/current_task" not in out


def test_switch_never_recompiles():
    learner = tiny_ppo()
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    state = jax.jit(jax.vmap(learner.init))(keys)
    traces = []

    def chunk(s, start):
        traces.append(1)
        return jax.vmap(learner.run_updates, in_axes=(0, None, None))(s, start, 2)

    f = jax.jit(chunk)
    tasks = []
    for start in range(0, TASKS * TASK_UPDATES, 2):  # chunks that cross every switch
        state, out = f(state, start)
        tasks.append(np.asarray(out["charts/current_task"])[0].tolist())
    assert len(traces) == 1 and f._cache_size() == 1
    assert sum(tasks, []) == np.repeat(np.arange(TASKS), TASK_UPDATES).tolist()


# --------------------------------------------------------------------------------------------------------- env shifts


def test_params_table_and_dynamics_per_task():
    c = ContinualConfig(num_tasks=4, task_timesteps=STEPS, shifts=("params",), params=("length", "gravity"),
                        scale_low=0.5, scale_high=2.0, table_seed=3)
    env = make_env("gymnax:CartPole-v1", 8, c)
    table = env.task_tables
    assert table["param/length"][0] == pytest.approx(0.5) and table["param/gravity"][0] == pytest.approx(9.8)
    rng = np.random.default_rng(3)
    f = np.exp(rng.uniform(np.log(0.5), np.log(2.0), (4, 2)))
    np.testing.assert_allclose(table["param/length"][1:], 0.5 * f[1:, 0], rtol=1e-6)
    np.testing.assert_allclose(table["param/gravity"][1:], 9.8 * f[1:, 1], rtol=1e-6)
    backend = env.env
    for t in range(4):
        p = backend.at(jnp.int32(t)).params
        assert float(p.length) == pytest.approx(table["param/length"][t])
        assert float(p.gravity) == pytest.approx(table["param/gravity"][t])
    # the dynamics really differ: same state, key and action, different next observation
    obs, st = env.reset(jax.random.PRNGKey(0))
    act = jnp.ones((8,), jnp.int32)
    o0 = env.at(jnp.int32(0)).step(jax.random.PRNGKey(1), st, act)[0]
    o1 = env.at(jnp.int32(1)).step(jax.random.PRNGKey(1), st, act)[0]
    assert not np.allclose(o0, o1)


def test_explicit_values_cycle():
    c = ContinualConfig(num_tasks=5, task_timesteps=STEPS, shifts=("params",), params=("length",),
                        values=(0.5, 1.0))
    env = make_env("gymnax:CartPole-v1", 2, c)
    assert env.task_tables["param/length"].tolist() == [0.5, 1.0, 0.5, 1.0, 0.5]


def test_permutation_and_reward_flip_per_task():
    c = cont(num_tasks=4, shifts=("permute", "reward_flip"))
    plain = make_env("gymnax:CartPole-v1", 6)
    env = make_env("gymnax:CartPole-v1", 6, c)
    perm = env.task_tables["permutation"]
    assert perm[0].tolist() == [0, 1, 2, 3]
    assert all(not np.array_equal(perm[t], perm[t - 1]) for t in range(1, 4))
    np.testing.assert_array_equal(perm, permutation_table(c, 4))
    key = jax.random.PRNGKey(2)
    obs_p, st_p = plain.reset(key)
    act = jnp.zeros((6,), jnp.int32)
    ref = plain.step(jax.random.PRNGKey(3), st_p, act)
    for t in range(4):
        bound = env.at(jnp.int32(t))
        obs, st = bound.reset(key)
        np.testing.assert_array_equal(obs, obs_p[:, perm[t]])
        o, st, r, term, trunc, info = bound.step(jax.random.PRNGKey(3), st, act)
        np.testing.assert_array_equal(o, ref[0][:, perm[t]])
        np.testing.assert_array_equal(info["final_obs"], ref[5]["final_obs"][:, perm[t]])
        np.testing.assert_array_equal(r, ref[2] * (1 if t % 2 == 0 else -1))
        np.testing.assert_array_equal(info["episode_return"], ref[5]["episode_return"] * (1 if t % 2 == 0 else -1))


def test_learner_env_follows_the_task_table():
    c = ContinualConfig(num_tasks=TASKS, task_timesteps=TASK_UPDATES * STEPS, shifts=("params",),
                        params=("length",), values=(0.5, 1.5, 0.25))
    learner = tiny_ppo(c)
    from plasticine_jax.envs.gymnax_env import GymnaxVecEnv

    backend = lambda e: e if isinstance(e, GymnaxVecEnv) else backend(e.env)
    for idx, want in [(0, 0.5), (3, 0.5), (4, 1.5), (7, 1.5), (8, 0.25), (11, 0.25)]:
        assert float(backend(learner.env_at(jnp.int32(idx))).params.length) == pytest.approx(want)


# --------------------------------------------------------------------------------------------------------- resets


def _state_before_switch(learner, seed: int = 0):
    state = learner.init(jax.random.PRNGKey(seed))
    state, _ = jax.jit(lambda s: learner.run_updates(s, 0, TASK_UPDATES))(state)
    return state


def test_norm_stats_restart_or_are_kept():
    cfg = replace(TINY, normalize_obs=True, normalize_reward=True)
    before = None
    for keep in (False, True):
        learner = tiny_ppo(cont(keep_norm_stats=keep), cfg=cfg)
        if before is None:  # one carry serves both learners: they differ only in what the switch does
            before = _state_before_switch(learner)
        after = jax.jit(lambda s, lr=learner: lr._switch_task(s, jnp.int32(TASK_UPDATES)))(before)
        c0 = float(before.env_state.env_state.obs_rms.count)
        c1 = float(after.env_state.env_state.obs_rms.count)
        r0, r1 = before.env_state.return_rms, after.env_state.return_rms
        if keep:  # kept statistics, updated with the new task's reset batch
            assert c1 == pytest.approx(c0 + cfg.num_envs)
            assert float(r1.count) == float(r0.count)
        else:  # a fresh wrapper: only the reset batch counted
            assert c1 == pytest.approx(cfg.num_envs + 1e-4)
            assert float(r1.count) == pytest.approx(1e-4)
        assert int(after.task) == 1


def test_optimizer_state_reset_is_optional():
    before = None
    for reset in (False, True):
        learner = tiny_ppo(cont(reset_optimizer=reset))
        if before is None:  # one carry serves both learners: they differ only in what the switch does
            before = _state_before_switch(learner)
        after = learner._switch_task(before, jnp.int32(TASK_UPDATES))
        mu = [x for x in jax.tree.leaves(after.units["agent"].opt_state) if x.ndim > 0]
        nonzero = any(bool(jnp.any(x != 0)) for x in mu)
        assert nonzero is (not reset)
        same_params = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), after.units["agent"].params,
                                   before.units["agent"].params)
        assert all(jax.tree.leaves(same_params))  # the network itself is kept


def test_fresh_baseline_reinitialises_the_learner():
    learner = tiny_ppo()
    before = _state_before_switch(learner)
    hp = before.units["agent"].hp
    for flag in (0.0, 1.0):
        s = before.replace(units={"agent": before.units["agent"].replace(hp={**hp, "continual.fresh": jnp.float32(
            flag)})})
        after = learner._switch_task(s, jnp.int32(TASK_UPDATES))
        k_fresh = jax.random.split(s.key, 3)[2]
        fresh = learner.init(k_fresh, after.units["agent"].hp).units["agent"]
        ref = fresh if flag else s.units["agent"]
        for a, b in zip(jax.tree.leaves(after.units["agent"].params), jax.tree.leaves(ref.params), strict=True):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(jax.tree.leaves(after.units["agent"].opt_state), jax.tree.leaves(ref.opt_state), strict=True):
            np.testing.assert_array_equal(a, b)


def test_fresh_sweep_axis_in_one_compile():
    learner = tiny_ppo(cont(num_tasks=2))
    hp = {k: jnp.full((2,), v, jnp.float32) for k, v in learner.default_hparams().items()}
    hp["continual.fresh"] = jnp.asarray([0.0, 1.0])
    keys = jnp.stack([jax.random.PRNGKey(0)] * 2)
    state, out = jax.jit(jax.vmap(learner.train))(keys, hp)
    mag = np.asarray(out["plasticity/weight_magnitude"])
    first = TASK_UPDATES  # first update of task 1: same seed, same task-0 history, different network
    np.testing.assert_array_equal(mag[0, :first], mag[1, :first])
    assert mag[0, first] != mag[1, first]


def test_td3_buffer_kept_or_emptied_and_task_switches():
    cfg = replace(TD3_PRESETS["pendulum"], num_envs=2, steps_per_update=8, learning_starts=16, batch_size=8,
                  buffer_size=256, metric_batch=8)
    per_update = 16
    state = None
    for reset in (False, True):
        c = ContinualConfig(num_tasks=2, task_timesteps=3 * per_update, shifts=("params",), params=("m",),
                            values=(1.0, 2.0), reset_buffer=reset)
        learner = td3.make_train(cfg, "gymnax:Pendulum-v1", 6 * per_update, (), MetricsConfig(every=2), continual=c)
        if state is None:  # one filled carry serves both learners: they differ only in what the switch does
            state = learner.init(jax.random.PRNGKey(0))
            state, out = jax.jit(lambda s, lr=learner: lr.run_updates(s, 0, 3))(state)
            assert int(state.buffer.size) == 3 * per_update
        after = learner._switch_task(state, jnp.int32(3))
        assert int(after.buffer.size) == (0 if reset else 3 * per_update)
    state, out = jax.jit(jax.vmap(learner.train))(jax.random.split(jax.random.PRNGKey(0), 2))
    assert np.asarray(out["charts/current_task"]).tolist() == [[0, 0, 0, 1, 1, 1]] * 2


# --------------------------------------------------------------------------------------------------------- driver, CLI


def test_cli_rows_carry_the_task_and_summary_reports_the_gap(tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "--preset", "cpu-permuted-cartpole", "--continual.num-tasks", "3", "--continual.task-timesteps",
               "2000", "--ppo.num-envs", "4", "--ppo.num-steps", "25", "--ppo.num-minibatches", "2",
               "--num-seeds", "2", "--log-every", "1", "--sweep", "continual.fresh=0,1", "--out", str(out),
               "--no-wandb", "--no-progress"])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {0, 1, 2}
    for r in rows:
        assert r["task"] == (r["update"] - 1) // 20  # 2000 steps per task / 100 steps per update
        assert r["charts/current_task"] == r["task"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["preset"] == "cpu-permuted-cartpole"
    assert cfg["continual"]["num_tasks"] == 3 and len(cfg["continual"]["permutation"]) == 3
    assert cfg["ppo"]["anneal_lr"] is False and cfg["ppo"]["num_envs"] == 4  # preset value, then the flag
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["per_task"]) == 2 * 2 * 3  # (seed x fresh) x task
    gaps = summary["fresh_gap"]
    assert [g["task"] for g in gaps] == [0, 1, 2]
    for g in gaps:
        assert g["gap"] == pytest.approx(g["continual"] - g["fresh"])
    assert gaps[0]["gap"] == pytest.approx(0.0)  # task 0: both learners are the same network


def test_presets_command_lists_every_reserved_id(capsys):
    assert main(["presets"]) == 0
    text = capsys.readouterr().out
    for name in ("cpu-continual-minatar", "cpu-continual-cartpole", "cpu-permuted-cartpole", "open-craftax",
                 "continual-procgen-level", "continual-procgen-task", "continual-procgen-intra",
                 "continual-dmc-walker", "continual-dmc-quadruped", "continual-dmc-dog", "continual-dmc-dynamics"):
        assert name in text
    assert "ppo   cartpole" in text


@pytest.mark.parametrize("args, needle", [
    (["--preset", "continual-procgen-level", "--continual.levels"], "--continual.levels"),
    (["--preset", "cpu-continual-cartpole", "--algo", "pqn"], "is a ppo scenario"),
    (["--preset", "cpu-continual-cartpole", "--continual.task-timesteps", "1234"], "not a multiple"),
    (["--preset", "cpu-continual-cartpole", "--total-timesteps", "5000"], "drop --total-timesteps"),
    (["--continual.num-tasks", "2", "--continual.task-timesteps", "1000"], "--continual.shifts is empty"),
    (["--continual.num-tasks", "2", "--continual.task-timesteps", "1000", "--continual.shifts", "warp"],
     "unknown --continual.shifts 'warp'"),
    (["--preset", "cpu-continual-minatar", "--env", "gymnax:Breakout-MinAtar"], "conflicts with --continual.games"),
    (["--preset", "cpu-continual-cartpole", "--continual.params", "colour"], "no parameter 'colour'"),
    (["--preset", "no-such-preset"], "unknown ppo preset 'no-such-preset'"),
])
def test_bad_continual_input_is_one_line(tmp_path, capsys, args, needle):
    rc = main(["train", *args, "--out", str(tmp_path / "x"), "--no-wandb", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_achievement_rates_match_numpy():
    rng = np.random.default_rng(0)
    done = rng.random((5, 7)) < 0.3
    ach = (rng.random((5, 7, 4)) < 0.5).astype(np.float32)
    names = ("a", "b", "c", "d")
    out = L.achievement_rates(names, jnp.asarray(done), jnp.asarray(ach))
    want = 100.0 * ach[done].mean(0)
    np.testing.assert_allclose([float(out[f"charts/achievements/{n}"]) for n in names], want, rtol=1e-6)
    none = L.achievement_rates(names, jnp.zeros((5, 7), bool), jnp.asarray(ach))
    assert np.isnan(float(none["charts/achievements/a"]))


def test_wrap_env_keeps_statistics_only_when_asked():
    env = wrap_env(make_env("gymnax:CartPole-v1", 4), True, False, 0.99)
    _, st = env.reset(jax.random.PRNGKey(0))
    for i in range(5):
        _, st, *_ = env.step(jax.random.PRNGKey(i), st, jnp.zeros((4,), jnp.int32))
    _, kept = env.at(jnp.int32(1)).reset(jax.random.PRNGKey(9), previous=st)
    _, fresh = env.at(jnp.int32(1)).reset(jax.random.PRNGKey(9))
    assert float(kept.obs_rms.count) == pytest.approx(float(st.obs_rms.count) + 4)
    assert float(fresh.obs_rms.count) == pytest.approx(4 + 1e-4)


def test_bad_table_param_is_refused():
    with pytest.raises(ConfigError, match="no parameter 'mass_of_moon'"):
        make_env("gymnax:CartPole-v1", 2, ContinualConfig(num_tasks=2, task_timesteps=10, shifts=("params",),
                                                          params=("mass_of_moon",)))


def _small(algo: str):
    """A tiny config of each remaining learner (env steps per update, env id)."""
    from plasticine_jax.algos import c51_config, pqn_config, sac_config

    if algo == "pqn":
        return replace(pqn_config.PRESETS["cartpole"], num_envs=4, num_steps=8, num_minibatches=2,
                       update_epochs=1), 32, "gymnax:CartPole-v1"
    if algo == "c51":
        return replace(c51_config.PRESETS["cartpole"], steps_per_update=16, train_frequency=4, learning_starts=0,
                       batch_size=8, target_network_frequency=32, buffer_size=128, metric_batch=16), 16, \
            "gymnax:CartPole-v1"
    return replace(sac_config.PRESETS["pendulum"], steps_per_update=8, learning_starts=8, batch_size=8,
                   buffer_size=64, metric_batch=8,
                   net=replace(sac_config.PRESETS["pendulum"].net, widths=(16, 16))), 8, "gymnax:Pendulum-v1"


@pytest.mark.parametrize("algo", ["pqn", "c51", "sac"])
def test_every_learner_switches_and_resets_fresh_under_vmap(algo):
    """PQN, C51 and SAC (TD3 and PPO above) follow the task schedule under vmap over seeds; with continual.fresh
    swept over 0/1 on one seed, both runs are identical through task 0 and differ from the first update of
    task 1 (the fresh learner was re-initialised)."""
    from plasticine_jax.algos import registry

    cfg, per_update, env = _small(algo)
    c = ContinualConfig(num_tasks=2, task_timesteps=2 * per_update, shifts=("reward_flip",))
    learner = registry.learner_module(algo).make_train(cfg, env, 4 * per_update, (), MetricsConfig(every=2),
                                                       continual=c)
    hp = {k: jnp.full((2,), v, jnp.float32) for k, v in learner.default_hparams().items()}
    hp["continual.fresh"] = jnp.asarray([0.0, 1.0])
    keys = jnp.stack([jax.random.PRNGKey(3)] * 2)
    state, out = jax.jit(jax.vmap(learner.train))(keys, hp)
    assert np.asarray(out["charts/current_task"]).tolist() == [[0, 0, 1, 1]] * 2
    key = next(k for k in out if k.endswith("weight_magnitude"))
    mag = np.asarray(out[key])
    np.testing.assert_array_equal(mag[0, :2], mag[1, :2])
    assert mag[0, 2] != mag[1, 2]
