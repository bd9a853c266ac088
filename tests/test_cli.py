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


def _main(capsys, *args: str) -> tuple[int, str]:
    """``cli.main(args)`` in this process: (exit code, what it wrote to stderr); tyro's own parse errors exit
    through ``SystemExit``, whose code is returned."""
    from plasticine_jax.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


def _rows(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_train_writes_config_and_metrics(tmp_path):
    out = tmp_path / "run"
    r = _cli("train", "--algo", "ppo", "--env", "gymnax:CartPole-v1", "--num-seeds", "2", "--total-timesteps",
             "10240", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["num_seeds"] == 2 and cfg["ppo"]["num_envs"] == 5 and cfg["seeds"] == [0, 1]
    rows = _rows(out)
    assert {r["seed"] for r in rows} == {0, 1}
    assert len(rows) == 2 * 2  # 20 updates of 5 envs x 100 steps (cartpole preset), logged every 10
    for row in rows:
        assert row["step"] in (5000, 10000)
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
    (["--ppo.num-minibatches", "7"], "--ppo.num-minibatches must be a divisor"),
    (["--interventions", "redo", "--redo.tau", "-1"], "--redo.tau must be in [0, 1)"),
    (["--ppo.clip-coef", "-0.1"], "--ppo.clip-coef must be > 0"),
    (["--interventions", "snp", "--snp.coef", "2"], "--snp.coef must be in [0, 1]"),
    (["--net.widths"], "--net.widths needs one or more positive layer widths"),
    (["--env", "craftax:Craftax-Foo-v1"], "unknown craftax env"),
    (["--pqn.learning-rate", "1e-3"], "applies to --algo pqn, not --algo ppo"),
    (["--algo", "td3", "--env", "gymnax:CartPole-v1"], "td3"),
    (["--algo", "pqn", "--env", "gymnax:Pendulum-v1"], "discrete"),
    (["--algo", "td3", "--env", "gymnax:Pendulum-v1", "--td3.tau", "1.5"], "--td3.tau"),
    (["--algo", "c51", "--c51.v-min", "5", "--c51.v-max", "1"], "--c51.v-min"),
    (["--preset", "pendulum"], "unknown ppo preset"),
    (["--preset", "atari"], "needs image observations"),
    (["--metrics.cadence", "epoch"], "--metrics.cadence"),
    (["--on-divergence", "ignore"], "--on-divergence"),
])
def test_bad_input_one_clear_line(tmp_path, capsys, args, needle):
    """In this process (``cli.main``, what ``python -m plasticine_jax`` calls): each bad input is one line and a
    non-zero code; the same through a real process is test_bad_input_exits_the_process_with_one_line."""
    code, err = _main(capsys, "train", "--total-timesteps", "1024", "--num-seeds", "1", "--out",
                      str(tmp_path / "bad"), "--no-wandb", *args)
    assert code != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


@pytest.mark.parametrize("args,needle", [
    (["--num-seeds", "0"], "num-seeds"),  # a run option out of range
    (["--interventions", "ca,dff"], "both replace the hidden activation"),  # interventions that cannot compose
])
def test_bad_input_exits_the_process_with_one_line(tmp_path, args, needle):
    """``python -m plasticine_jax``: a non-zero exit status and nothing else on stderr (no warning, no
    traceback), for a bad run option and for interventions that cannot compose."""
    r = _cli("train", "--total-timesteps", "1024", "--num-seeds", "1", "--out", str(tmp_path / "bad"),
             "--no-wandb", *args)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


@pytest.mark.parametrize("algo,env,steps", [
    ("pqn", "gymnax:CartPole-v1", "4096"),
    ("c51", "gymnax:CartPole-v1", "1200"),
    ("td3", "gymnax:Pendulum-v1", "1200"),
    ("sac", "gymnax:Pendulum-v1", "1200"),
])
def test_every_learner_trains_from_the_cli(tmp_path, algo, env, steps):
    """Each learner writes config.json (its own section) and metrics.jsonl rows for both seeds with per-unit
    plasticity metrics; a too-short schedule is announced with one warning line."""
    out = tmp_path / algo
    extra = [f"--{algo}.learning-starts", "400"] if algo in ("c51", "td3", "sac") else []
    r = _cli("train", "--algo", algo, "--env", env, "--num-seeds", "2", "--total-timesteps", steps,
             "--metrics.every", "2", "--log-every", "1", "--out", str(out), "--no-wandb", *extra)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((out / "config.json").read_text())
    assert algo in cfg and cfg["run"]["algo"] == algo
    rows = _rows(out)
    assert {row["seed"] for row in rows} == {0, 1}
    units = ("actor/", "critic/") if algo in ("td3", "sac") else ("",)
    last = [row for row in rows if row["update"] == max(r["update"] for r in rows)]
    for row in last:
        for u in units:
            for m in ("dormant_ratio", "stable_rank", "weight_magnitude", "gradient_norm"):
                assert row.get(f"plasticity/{u}{m}") is not None, (u, m, sorted(row))


def test_unreachable_schedule_warns_in_one_line(tmp_path):
    r = _cli("train", "--total-timesteps", "5120", "--num-seeds", "1", "--interventions", "rl", "--out",
             str(tmp_path / "w"), "--no-wandb")
    assert r.returncode == 0, r.stderr[-2000:]
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "--rl.frequency 1000" in warn[0] and "10 updates" in warn[0], r.stderr


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
                "--ppo.learning-rate", "--metrics.every", "--track", "--wandb-project", "--algo", "--pqn.q-lambda",
                "--td3.policy-noise", "--sac.alpha", "--c51.n-atoms", "--metrics.cadence"):
        assert opt in r.stdout, opt


def test_num_envs_is_a_run_option():
    """--num-envs sets the learner's envs per seed (as --<algo>.num-envs does); the two may not disagree."""
    import tyro

    from plasticine_jax.config import TrainArgs, resolve_run
    from plasticine_jax.errors import ConfigError

    parse = lambda argv: resolve_run(tyro.cli(TrainArgs, args=argv))
    assert parse(["--algo", "pqn", "--num-envs", "6"]).algo_cfg.num_envs == 6
    assert parse(["--num-envs", "6", "--ppo.num-envs", "6"]).algo_cfg.num_envs == 6
    assert parse([]).algo_cfg.num_envs == 5  # the cartpole preset's
    with pytest.raises(ConfigError, match="disagree"):
        parse(["--num-envs", "6", "--ppo.num-envs", "4"])
