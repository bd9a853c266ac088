"""Every scenario preset resolves to the reference's numbers (reference.md §1-2, Appendix A): learner, env,
budget, iterations, task sequence and switch points. Resolution only: nothing is built or trained here."""

import numpy as np
import pytest
import tyro

from plasticine_jax.config import TrainArgs, resolve_run
from plasticine_jax.envs import tasks
from plasticine_jax.presets import PRESETS


def _resolve(name: str, *flags: str):
    return resolve_run(tyro.cli(TrainArgs, args=["--preset", name, *flags]))


def test_every_preset_is_runnable():
    assert [n for n, p in PRESETS.items() if p.needs] == []
    for name in PRESETS:
        cfg = _resolve(name)
        assert cfg.run.algo == PRESETS[name].algo and cfg.run.env == PRESETS[name].env


@pytest.mark.parametrize("name, algo, env, total, iterations", [
    ("standard-procgen", "ppo", "envpool:StarpilotEasy-v0", 25_000_000, 1525),
    ("standard-atari-pqn", "pqn", "envpool:Breakout-v5", 10_000_000, 9765),
])
def test_standard_on_policy_budgets(name, algo, env, total, iterations):
    cfg = _resolve(name)
    a = cfg.algo_cfg
    assert (cfg.run.algo, cfg.run.env, cfg.run.total_timesteps) == (algo, env, total)
    assert total // (a.num_envs * a.num_steps) == iterations  # reference Appendix A


def test_standard_procgen_is_the_reference_agent():
    a = _resolve("standard-procgen").algo_cfg
    assert (a.num_envs, a.num_steps, a.num_minibatches, a.update_epochs) == (64, 256, 8, 3)
    assert (a.learning_rate, a.anneal_lr, a.gamma, a.normalize_reward) == (5e-4, False, 0.999, True)
    assert (a.net.torso, a.net.shared, a.net.init) == ("impala_cnn", True, "torch")


def test_standard_off_policy():
    c51 = _resolve("standard-atari-c51")
    assert (c51.run.algo, c51.run.total_timesteps, c51.algo_cfg.n_atoms) == ("c51", 10_000_000, 51)
    td3 = _resolve("standard-dmc-td3")
    assert (td3.run.env, td3.run.total_timesteps, td3.algo_cfg.learning_starts) == ("dmc:quadruped_walk",
                                                                                      1_000_000, 25_000)


def test_continual_procgen_sequences():
    level = _resolve("continual-procgen-level")
    assert level.continual.levels == (5, 10, 15, 20, 25, 30, 35, 40, 45, 50)
    assert level.continual.task_timesteps == 100 * 64 * 256 and level.run.total_timesteps == 16_384_000
    task = _resolve("continual-procgen-task")
    games = tasks.game_specs(task.continual, task.run.env)
    assert len(set(games)) == 16 and games[0] == "envpool:BigfishEasy-v0" and games[-1] == "envpool:StarpilotEasy-v0"
    assert task.continual.levels == (200,) and task.run.total_timesteps == 26_214_400
    intra = _resolve("continual-procgen-intra")
    assert intra.continual.levels == tuple(range(0, 200, 20)) and intra.continual.task_timesteps == 2_000_000
    assert (intra.algo_cfg.num_envs, intra.algo_cfg.num_steps, intra.algo_cfg.learning_rate) == (1, 1000, 1e-3)


@pytest.mark.parametrize("name, first, n", [("continual-dmc-walker", "envpool:WalkerStand-v1", 6),
                                             ("continual-dmc-quadruped", "envpool:QuadrupedWalk-v1", 6),
                                             ("continual-dmc-dog", "envpool:DogStand-v1", 8)])
def test_continual_dmc_task_sequences(name, first, n):
    cfg = _resolve(name)
    a = cfg.algo_cfg
    assert cfg.run.env == first and cfg.continual.num_tasks == n
    assert cfg.continual.task_timesteps == 488 * a.num_envs * a.num_steps  # N: 488 iterations per task
    assert (a.num_steps, a.num_minibatches, a.update_epochs, a.ent_coef) == (2048, 32, 10, 0.0)
    assert a.normalize_obs and a.normalize_reward and not cfg.continual.keep_norm_stats


def test_continual_dmc_dynamics_uses_the_reference_friction_row():
    cfg = _resolve("continual-dmc-dynamics")
    assert cfg.run.total_timesteps == 10_000_000 and cfg.continual.friction_row == 1
    table = tasks.friction_table(cfg.continual, 1.5)
    np.testing.assert_allclose(table[:4], [1.5, 0.1201, 0.4520, 0.0820], atol=5e-5)  # reference §2.3, seed 1
