"""A logged row's episode statistics cover every episode that finished since the previous row of its chunk (those
of the logged update's task), not only the logged update's: checked against a numpy reference and end to end
(a run logged every 3 updates against the same run logged every update)."""

from __future__ import annotations

import json
import math

import numpy as np

from plasticine_jax.run.driver import window_episode_stats


def _reference(n, ret, length, task, first, last):
    """Loop over updates: pool every finished episode of the logged update's task."""
    eps, sum_ret, sum_len = 0.0, 0.0, 0.0
    for u in range(first, last + 1):
        if task[u] == task[last] and n[u] > 0:
            eps += float(n[u])
            sum_ret += float(n[u]) * float(ret[u])
            sum_len += float(n[u]) * float(length[u])
    nan = float("nan")
    return eps, (sum_ret / eps if eps else nan), (sum_len / eps if eps else nan)


def test_window_pools_every_episode_of_the_logged_task():
    rng = np.random.default_rng(0)
    runs, updates = 3, 12
    n = rng.integers(0, 3, (runs, updates)).astype(np.float32)
    ret = np.where(n > 0, rng.normal(100, 30, (runs, updates)), np.nan).astype(np.float32)
    length = np.where(n > 0, rng.integers(10, 500, (runs, updates)), np.nan).astype(np.float32)
    task = np.repeat(np.arange(3), 4)[None].repeat(runs, 0).astype(np.float32)  # a task switch every 4 updates
    ach = np.where(n > 0, rng.uniform(0, 100, (runs, updates)), np.nan).astype(np.float32)
    outs = {"charts/episodes": n, "charts/episodic_return": ret, "charts/episodic_length": length,
            "charts/current_task": task, "charts/achievements/collect_wood": ach,
            "losses/value_loss": rng.normal(size=(runs, updates)).astype(np.float32)}
    checked = 0
    for r in range(runs):
        for first, last in [(0, 2), (3, 5), (2, 9), (0, 11), (7, 7)]:
            got = window_episode_stats(outs, r, first, last)
            eps, mean_ret, mean_len = _reference(n[r], ret[r], length[r], task[r], first, last)
            _, mean_ach, _ = _reference(n[r], ach[r], length[r], task[r], first, last)
            assert got["charts/episodes"] == eps
            for key, want in [("charts/episodic_return", mean_ret), ("charts/episodic_length", mean_len),
                              ("charts/achievements/collect_wood", mean_ach)]:
                if math.isnan(want):
                    assert math.isnan(got[key])
                else:
                    assert abs(got[key] - want) <= 1e-9 * abs(want)
                    checked += 1
            assert "losses/value_loss" not in got  # losses stay the logged update's
    assert checked > 20
    assert window_episode_stats({"losses/loss": n}, 0, 0, 3) == {}  # a learner without episode counts: unchanged


def _rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_rows_summarise_every_episode_since_the_previous_row(tmp_path):
    from plasticine_jax.cli import main

    args = ["train", "--algo", "ppo", "--env", "gymnax:CartPole-v1", "--num-seeds", "2", "--ppo.num-envs", "4",
            "--ppo.num-steps", "32", "--ppo.num-minibatches", "4", "--total-timesteps", "1536", "--chunk-updates",
            "6", "--no-wandb", "--no-progress"]
    assert main([*args, "--log-every", "1", "--out", str(tmp_path / "each")]) == 0
    assert main([*args, "--log-every", "3", "--out", str(tmp_path / "third")]) == 0
    each, third = _rows(tmp_path / "each"), _rows(tmp_path / "third")
    assert len(each) == 2 * 12 and len(third) == 2 * 4
    for row in third:
        window = [e for e in each if e["seed"] == row["seed"] and row["update"] - 3 < e["update"] <= row["update"]]
        same = next(e for e in window if e["update"] == row["update"])
        assert row["losses/value_loss"] == same["losses/value_loss"]  # the logged update's own values
        n = [e["charts/episodes"] for e in window]
        assert row["charts/episodes"] == sum(n) > same["charts/episodes"]  # early CartPole: episodes every update
        want = sum(e["charts/episodes"] * e["charts/episodic_return"] for e in window if e["charts/episodes"]) / sum(n)
        assert abs(row["charts/episodic_return"] - want) < 1e-4 * want
