"""CLI contract: a tiny run writes config.json + metrics.jsonl with every metric for every seed; sweeps
vmap over hyperparameters; bad input exits non-zero with one clear line and no traceback."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

REQUIRED = ["plasticity/dormant_ratio", "plasticity/active_fraction", "plasticity/stable_rank",
            "plasticity/effective_rank", "plasticity/weight_magnitude", "plasticity/weight_difference",
            "plasticity/gradient_norm", "plasticity/feature_norm", "plasticity/feature_variance",
            "plasticity/policy_entropy", "charts/episodic_return", "charts/episodic_length",
            "charts/learning_rate", "charts/SPS", "losses/value_loss", "losses/policy_loss"]


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "plasticine_jax", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def _rows(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_train_writes_config_and_metrics(tmp_path):
    out = tmp_path / "run"
    r = _cli("train", "--algo", "ppo", "--env", "gymnax:CartPole-v1", "--num-seeds", "2", "--total-timesteps",
             "10240", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["num_seeds"] == 2 and cfg["ppo"]["num_envs"] == 4 and cfg["seeds"] == [0, 1]
    rows = _rows(out)
    assert {r["seed"] for r in rows} == {0, 1}
    assert len(rows) == 2 * 2  # 20 updates, logged every 10
    for row in rows:
        assert row["step"] in (5120, 10240)
        for k in REQUIRED:
            assert k in row, k
            assert row[k] is None or math.isfinite(row[k])
        assert all(row[k] is not None for k in REQUIRED if k.startswith("plasticity/"))
    assert "final return" in r.stdout  # the summary table
    assert (out / "wandb").exists()  # offline W&B run


def test_sweep_vmaps_hyperparameters(tmp_path):
    out = tmp_path / "sweep"
    r = _cli("train", "--num-seeds", "2", "--total-timesteps", "5120", "--interventions", "snp",
             "--sweep", "snp.coef=0.9,1.0", "--out", str(out), "--no-wandb")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _rows(out)
    assert {(r["seed"], r["shrink_perturb.coef"]) for r in rows} == {(0, 0.9), (1, 0.9), (0, 1.0), (1, 1.0)}
    by = {(r["seed"], r["shrink_perturb.coef"]): r["plasticity/weight_magnitude"] for r in rows}
    assert by[(0, 0.9)] != by[(0, 1.0)]  # the coefficient really differs per vmapped run


@pytest.mark.parametrize("args,needle", [
    (["--env", "gymnax:NoSuchEnv-v0"], "unknown gymnax env"),
    (["--env", "procgen2:x"], "unknown env backend"),
    (["--env", "CartPole-v1"], "needs a backend prefix"),
    (["--algo", "dqn"], "unknown algorithm"),
    (["--num-seeds", "0"], "num-seeds"),
    (["--interventions", "bogus"], "unknown intervention"),
    (["--interventions", "ca,dff"], "both replace the hidden activation"),
    (["--sweep", "nosuch=1,2"], "not a vmappable hyperparameter"),
    (["--ppo.num-minibatches", "7"], "divisible"),
])
def test_bad_input_one_clear_line(tmp_path, args, needle):
    r = _cli("train", "--total-timesteps", "1024", "--num-seeds", "1", "--out", str(tmp_path / "bad"),
             "--no-wandb", *args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


def test_refuses_to_overwrite_a_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"keep": 1}\n')
    r = _cli("train", "--total-timesteps", "1024", "--out", str(out), "--no-wandb")
    assert r.returncode != 0 and "not empty" in r.stderr
    assert (out / "metrics.jsonl").read_text() == '{"keep": 1}\n'


def test_help_lists_options():
    r = _cli("train", "--help")
    assert r.returncode == 0
    for opt in ("--num-seeds", "--total-timesteps", "--interventions", "--sweep", "--snp.coef", "--redo.tau",
                "--ppo.learning-rate", "--metrics.every", "--track", "--wandb-project"):
        assert opt in r.stdout, opt
