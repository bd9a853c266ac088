"""``experiments/parity.py`` without rejax (CI has no rejax venv): every workload builds a valid learner of ours,
one quick workload trains and is evaluated, the statistics match numpy, and saved reports re-print."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import parity  # noqa: E402

from plasticine_jax.algos import registry  # noqa: E402


@pytest.mark.parametrize("name", list(parity.WORKLOADS))
def test_workload_builds_our_learner_with_the_stated_settings(name):
    """Our side of each workload is a valid config (the CLI's validation passes) with every stated option set."""
    w = parity.WORKLOADS[name]
    learner = parity.our_learner(w, w.quick_timesteps)
    registry.config_module(w.algo).validate(learner.cfg)
    cfg = asdict(learner.cfg)
    for k, v in w.ours.items():
        if k == "net":
            for nk, nv in v.items():
                got = cfg["net"][nk]
                assert (tuple(got) if isinstance(got, list) else got) == nv, (name, nk)
        else:
            assert cfg[k] == v, (name, k)
    assert learner.num_updates >= 1


def test_quick_workload_trains_and_is_evaluated():
    """ppo-cartpole at its quick budget: steps counted, one final return per seed, within CartPole's range."""
    w = parity.WORKLOADS["ppo-cartpole"]
    r = parity.run_ours(w, seeds=2, timesteps=w.quick_timesteps, repeats=1, evaluate=True)
    assert r["steps_per_seed"] == w.quick_timesteps and r["steps_per_s"] > 0 and r["compile_s"] > 0
    assert len(r["eval_returns"]) == 2 and all(1.0 <= x <= 500.0 for x in r["eval_returns"])


def test_mean_ci_brackets_the_mean_and_narrows_with_data():
    """BCa bootstrap CI of the mean: contains the numpy mean, narrower for 4x the samples, degenerate if constant."""
    rng = np.random.default_rng(0)
    small, large = rng.normal(10.0, 2.0, 8), rng.normal(10.0, 2.0, 32)
    m, lo, hi = parity.mean_ci(list(small))
    assert m == pytest.approx(small.mean()) and lo < m < hi
    m2, lo2, hi2 = parity.mean_ci(list(large))
    assert hi2 - lo2 < hi - lo
    assert parity.mean_ci([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)


def test_learning_summary_ratios_and_plateau(monkeypatch):
    """Raw ratio only for positive rejax means; the margin ratio over a random policy; stuck = below the plateau."""
    monkeypatch.setattr(parity, "random_return", lambda env: -1200.0)
    w = parity.WORKLOADS["td3-pendulum"]
    s = parity.learning_summary(w, [-200.0, -300.0], [-400.0, -600.0])
    assert s["ratio"] is None
    assert s["ratio_above_random"] == pytest.approx((-250.0 + 1200.0) / (-500.0 + 1200.0))
    monkeypatch.setattr(parity, "random_return", lambda env: 1.0)
    b = parity.WORKLOADS["ppo-breakout"]
    s = parity.learning_summary(b, [20.0, 6.9, 25.0, 7.0], [19.0, 21.0, 6.5, 24.0])
    assert s["ratio"] == pytest.approx(np.mean([20.0, 6.9, 25.0, 7.0]) / np.mean([19.0, 21.0, 6.5, 24.0]))
    assert (s["stuck_ours"], s["stuck_rejax"]) == (0.5, 0.25)


def test_random_return_of_cartpole():
    """Uniformly random CartPole episodes last about 22 steps (gymnax)."""
    assert 15.0 < parity.random_return("gymnax:CartPole-v1", episodes=256) < 30.0


def test_report_reprints_merged_runs(tmp_path, monkeypatch, capsys):
    """--report merges saved runs (later files win) and prints both tables without training."""
    monkeypatch.setattr(parity, "random_return", lambda env: 20.0)
    run = {"ours": {"seeds": 1, "steps_per_seed": 100, "steps_per_s": 200.0, "compile_s": 1.0},
           "rejax": {"seeds": 1, "steps_per_seed": 100, "steps_per_s": 100.0, "compile_s": 2.0}}
    first = {"workloads": {"ppo-cartpole": {"timesteps": 100, "differs": "x", "runs": [run],
                                           "learning": {"ours_per_seed": [100.0, 120.0],
                                                        "rejax_per_seed": [90.0, 110.0]}}}}
    second = json.loads(json.dumps(first))
    second["workloads"]["ppo-cartpole"]["learning"]["ours_per_seed"] = [400.0, 420.0]
    paths = []
    for i, rep in enumerate((first, second)):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(rep))
    out = tmp_path / "merged.json"
    assert parity.main(["--report", *map(str, paths), "--out", str(out)]) == 0
    merged = json.loads(out.read_text())["workloads"]["ppo-cartpole"]["learning"]
    assert merged["ours"][0] == pytest.approx(410.0) and merged["ratio"] == pytest.approx(410.0 / 100.0)
    printed = capsys.readouterr().out
    assert "Learning parity" in printed and "Speed" in printed and "2.00" in printed


def test_bad_arguments_fail_before_any_work(capsys):
    """An unknown workload or ablation factor is one error line and exit 2 (no venv, no training)."""
    assert parity.main(["--workloads", "nope"]) == 2
    assert "unknown workload 'nope'" in capsys.readouterr().err
    assert parity.main(["--workloads", "none", "--ablation", "ppo-cartpole", "--ablation-factors", "wd"]) == 2
    assert "--ablation-factors" in capsys.readouterr().err


def test_roofline_counts_the_dense_layer_flops_by_hand():
    """experiments/roofline.py's FLOPs per env step, against a hand count of ppo-cartpole (actor 4-64-64-2 and
    critic 4-64-64-1, 5 epochs) and ppo-breakout (400-256-256-{6 actions, 1}, 4 epochs): the rollout forward
    pass, then per epoch forward, weight gradients, and input gradients of every layer but the first."""
    import roofline

    def by_hand(obs, width, actions, epochs):
        towers = [[(obs, width), (width, width), (width, actions)], [(obs, width), (width, width), (width, 1)]]
        fwd = sum(2 * i * o for t in towers for i, o in t)
        input_grads = sum(2 * i * o for t in towers for i, o in t[1:])
        return fwd + epochs * (fwd + fwd + input_grads)

    cartpole = parity.our_learner(parity.WORKLOADS["ppo-cartpole"], 5_000)
    assert roofline.flops_per_env_step(cartpole) == by_hand(4, 64, 2, 5) == 279_552
    breakout = parity.our_learner(parity.WORKLOADS["ppo-breakout"], 16_384)
    n_actions = breakout.env.action_space.n
    assert roofline.flops_per_env_step(breakout) == by_hand(400, 256, n_actions, 4)
