"""Checkpoints and resume (plasticine_jax/run/checkpoint.py): a run stopped after chunk k (as if killed) and resumed
ends bit-identical to an uninterrupted run -- every carry leaf of the final checkpoint and every metrics row but
the wall-clock SPS -- for every learner with 2 vmapped seeds; resuming a finished run is a no-op; corrupt,
missing or mismatched checkpoints are refused with one line and nothing in the out dir changes; a save cut short
(leftover orbax tmp dir) is ignored.

Runs go through the CLI in subprocesses that share a persistent XLA compilation cache, so the stopped and resumed
runs reuse the uninterrupted run's executables (the same code; only compile time is saved)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from plasticine_jax.run.checkpoint import DIRNAME, latest_state

LEARNERS = {
    "ppo": ["--algo", "ppo", "--env", "gymnax:CartPole-v1", "--total-timesteps", "10000"],  # 500 steps/update
    "pqn": ["--algo", "pqn", "--env", "gymnax:CartPole-v1", "--total-timesteps", "1280", "--pqn.num-envs", "4",
            "--pqn.num-steps", "16", "--pqn.num-minibatches", "4"],
    "c51": ["--algo", "c51", "--env", "gymnax:CartPole-v1", "--total-timesteps", "2000", "--c51.learning-starts",
            "300", "--c51.buffer-size", "2000", "--c51.target-network-frequency", "200"],
    "td3": ["--algo", "td3", "--env", "gymnax:Pendulum-v1", "--total-timesteps", "1000", "--td3.learning-starts",
            "200", "--td3.buffer-size", "2000", "--td3.batch-size", "32"],
    "sac": ["--algo", "sac", "--env", "gymnax:Pendulum-v1", "--total-timesteps", "1000", "--sac.learning-starts",
            "200", "--sac.buffer-size", "2000", "--sac.batch-size", "32"],
}
# 20 updates in 4 chunks of 5; the stopped run checkpoints every 2 chunks and stops after 3, so its last chunk's
# rows are past the checkpoint and must be dropped on resume.
COMMON = ["--num-seeds", "2", "--chunk-updates", "5", "--log-every", "2", "--no-wandb", "--no-progress"]
STOP = ["--checkpoint-every", "2", "--stop-after-chunks", "3"]


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xla_cache")


def _cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "WANDB_MODE": "offline", "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    return subprocess.run([sys.executable, "-m", "plasticine_jax", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _rows(out: Path) -> list[dict]:
    """metrics.jsonl rows without the wall-clock throughput (the one column that cannot repeat)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows]


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical results: every leaf of the final carry, every metrics row, the summary's returns."""
    assert _rows(a) == _rows(b)
    (sa, pa), (sb, pb) = latest_state(a), latest_state(b)
    assert pa["finished"] and pb["finished"] and pa["updates_done"] == pb["updates_done"]
    la, lb = jax.tree_util.tree_flatten_with_path(sa)[0], jax.tree_util.tree_flatten_with_path(sb)[0]
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y), jax.tree_util.keystr(path)
    ja, jb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert ja["runs"] == jb["runs"] and ja["per_task"] == jb["per_task"]


def _kill_and_resume(cache: Path, tmp: Path, args: list[str]) -> tuple[Path, Path]:
    full, part = tmp / "full", tmp / "part"
    _ok(_cli(cache, "train", *args, *COMMON, "--out", str(full)))
    r = _ok(_cli(cache, "train", *args, *COMMON, *STOP, "--out", str(part)))
    assert "stopped after 3 chunk(s) at update 15/20" in r.stdout
    assert not (part / "summary.json").exists()
    assert len(_rows(part)) == 2 * 7  # 15 updates logged every 2, x 2 seeds
    r = _ok(_cli(cache, "train", "--resume", str(part), "--no-progress"))
    assert "from its checkpoint at update 10/20" in r.stderr
    return full, part


@pytest.mark.parametrize("algo", list(LEARNERS))
def test_kill_and_resume_is_bit_identical(algo, xla_cache, tmp_path):
    full, part = _kill_and_resume(xla_cache, tmp_path, LEARNERS[algo])
    _assert_same_run(full, part)
    assert len(_rows(full)) == 2 * 10  # no duplicated or missing rows
    assert sorted(p.name for p in (part / DIRNAME).iterdir()) == ["10", "20"]  # the last K=2 kept
    state, _ = latest_state(full)
    if algo in ("c51", "td3", "sac"):  # the replay buffer travelled with the checkpoint
        assert state["buffer"]["size"].tolist() == [2000 if algo == "c51" else 1000] * 2


def test_continual_run_resumes_across_a_task_switch(xla_cache, tmp_path):
    # 3 tasks x 6 updates of PPO on permuted CartPole with shrink-and-perturb, chunks of 4 updates: stopped at
    # update 8 (task 1, checkpoint there), resumed across the switch to task 2 at update 12.
    args = ["--preset", "cpu-permuted-cartpole", "--continual.num-tasks", "3", "--continual.task-timesteps", "3000",
            "--interventions", "snp", "--num-seeds", "2", "--chunk-updates", "4", "--log-every", "1", "--no-wandb",
            "--no-progress"]
    full, part = tmp_path / "full", tmp_path / "part"
    _ok(_cli(xla_cache, "train", *args, "--out", str(full)))
    r = _ok(_cli(xla_cache, "train", *args, "--stop-after-chunks", "2", "--out", str(part)))
    assert "at update 8/18" in r.stdout
    assert {row["task"] for row in _rows(part)} == {0, 1}
    _ok(_cli(xla_cache, "train", "--resume", str(part), "--no-progress"))
    _assert_same_run(full, part)
    assert [row["task"] for row in _rows(part) if row["seed"] == 0] == [0] * 6 + [1] * 6 + [2] * 6


@pytest.fixture(scope="module")
def ppo_runs(xla_cache, tmp_path_factory) -> tuple[Path, Path]:
    """A finished PPO run and the same run stopped after 3 chunks (checkpoints kept: updates 10 and 15)."""
    tmp = tmp_path_factory.mktemp("ppo")
    args = [*LEARNERS["ppo"], *COMMON]
    _ok(_cli(xla_cache, "train", *args, "--out", str(tmp / "full")))
    _ok(_cli(xla_cache, "train", *args, "--stop-after-chunks", "3", "--out", str(tmp / "part")))
    return tmp / "full", tmp / "part"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_resume_of_a_finished_run_changes_nothing(ppo_runs, xla_cache, tmp_path):
    out = _copy(ppo_runs[0], tmp_path / "run")
    before = _snapshot(out)
    r = _ok(_cli(xla_cache, "train", "--resume", str(out)))
    assert r.stdout.strip() == f"run in {out} already finished (20 updates); nothing to do"
    assert _snapshot(out) == before


def _refused(cache: Path, out: Path, needle: str, *extra: str) -> str:
    """Resume of ``out`` exits 2 with one line holding ``needle`` and leaves every file as it was."""
    before = _snapshot(out) if out.exists() else None
    r = _cli(cache, "train", "--resume", str(out), *extra)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --") and needle in lines[0], r.stderr
    if before is not None:
        assert _snapshot(out) == before
    return lines[0]


def test_corrupt_checkpoint_is_refused_and_nothing_changes(ppo_runs, xla_cache, tmp_path):
    out = _copy(ppo_runs[1], tmp_path / "run")
    data = max((p for p in (out / DIRNAME / "15" / "state").rglob("*") if p.is_file() and "/d/" in str(p)),
               key=lambda p: p.stat().st_size)  # the largest array data file
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    line = _refused(xla_cache, out, f"checkpoint {(out / DIRNAME / '15').absolute()} is corrupt")
    assert "to resume from the previous checkpoint (update 10)" in line  # the fix: fall back one checkpoint


def test_mismatched_or_missing_checkpoint_is_refused(ppo_runs, xla_cache, tmp_path):
    out = _copy(ppo_runs[1], tmp_path / "run")
    # other flags than the run's own
    _refused(xla_cache, out, "run.seed: 7 != saved 0", *LEARNERS["ppo"], *COMMON, "--seed", "7")
    _refused(xla_cache, out, "differs from --resume", "--out", str(tmp_path / "elsewhere"))
    # a checkpoint written by another package version
    meta = out / DIRNAME / "15" / "position" / "metadata"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "package_version": "0.0.1"}))
    _refused(xla_cache, out, "written by plasticine-jax 0.0.1")
    # no checkpoint at all, no run at all
    shutil.rmtree(out / DIRNAME)
    _refused(xla_cache, out, "no checkpoint in")
    _refused(xla_cache, tmp_path / "nothing", "config.json is missing")


def test_interrupted_save_is_ignored(ppo_runs, xla_cache, tmp_path):
    # a save cut short leaves <step>.orbax-checkpoint-tmp (orbax renames it to <step> only once complete): the
    # resume ignores it, continues from the last complete checkpoint (update 15) and removes it.
    out = _copy(ppo_runs[1], tmp_path / "run")
    tmp = out / DIRNAME / "20.orbax-checkpoint-tmp"
    shutil.copytree(out / DIRNAME / "15", tmp)
    (tmp / "commit_success.txt").unlink()
    for p in (tmp / "state").rglob("*"):
        if p.is_file():
            p.write_bytes(b"")
    # the same command line as the run plus --resume is accepted too
    r = _ok(_cli(xla_cache, "train", *LEARNERS["ppo"], *COMMON, "--out", str(out), "--resume", str(out)))
    assert "from its checkpoint at update 15/20" in r.stderr
    assert not tmp.exists()
    _assert_same_run(ppo_runs[0], out)


def test_off_policy_resume_needs_the_buffer(xla_cache, tmp_path):
    out = tmp_path / "run"
    r = _ok(_cli(xla_cache, "train", *LEARNERS["td3"], *COMMON, "--no-checkpoint-buffer", "--stop-after-chunks", "1",
                 "--out", str(out)))
    assert "leave out the replay buffers" in r.stderr
    _refused(xla_cache, out, "holds no replay buffer")


def test_host_env_run_resumes_with_fresh_envs(xla_cache, tmp_path):
    # envpool's simulators live outside the carry: the resumed run says so in one line, restores the rest and
    # writes every row exactly once
    pytest.importorskip("envpool")
    out = tmp_path / "run"
    # plasticity metrics off: host-env executables miss the compilation cache, and metrics are not the point here
    args = ["--algo", "td3", "--env", "envpool:CartpoleBalance-v1", "--total-timesteps", "2000",
            "--td3.learning-starts", "200", "--td3.buffer-size", "2000", "--td3.batch-size", "32", *COMMON,
            "--metrics.every", "0"]
    _ok(_cli(xla_cache, "train", *args, "--stop-after-chunks", "2", "--out", str(out)))
    r = _ok(_cli(xla_cache, "train", "--resume", str(out), "--no-progress"))
    notes = [line for line in r.stderr.splitlines() if line.startswith("note: envpool envs")]
    assert len(notes) == 1 and "restart from fresh episodes" in notes[0]
    assert [row["update"] for row in _rows(out) if row["seed"] == 0] == list(range(2, 21, 2))
    state, position = latest_state(out)
    assert position["finished"] and state["update"].tolist() == [20, 20]


def test_save_cut_short_before_the_rename_is_never_read(tmp_path, monkeypatch):
    # a real save through Checkpointer whose orbax finalize (the tmp -> <step> rename) fails: the data is all on
    # disk in <step>.orbax-checkpoint-tmp, yet the resume sees only the last complete checkpoint
    import jax.numpy as jnp
    from orbax.checkpoint._src.path import atomicity

    import plasticine_jax
    from plasticine_jax.algos.state import RunState, StepCounter, Unit
    from plasticine_jax.run import checkpoint as ckpt

    def carry(u: int) -> RunState:
        unit = Unit(params={"w": jnp.full((2, 3), float(u))}, net_state={}, opt_state=(jnp.zeros(2, jnp.int32),),
                    istate=None, hp={"lr": jnp.ones(2)})
        return RunState(units={"q": unit}, env_state=None, obs=jnp.zeros((2, 4)), key=jnp.zeros((2, 2), jnp.uint32),
                        steps=StepCounter(jnp.zeros(2, jnp.uint32), jnp.zeros(2, jnp.uint32)),
                        update=jnp.full((2,), u, jnp.int32), task=jnp.zeros(2, jnp.int32))

    config = {"run": {"out": str(tmp_path)}, "ppo": {"lr": 1.0}}

    def position(u: int) -> ckpt.Position:
        return ckpt.Position(updates_done=u, num_updates=20, chunk_updates=5, rows_written=0, metrics_bytes=0,
                             package_version=plasticine_jax.__version__, jax_version=jax.__version__,
                             config_hash=ckpt.config_hash(config), buffer_saved=True, finished=False,
                             train_time_s=0.0, state_crc32="")

    saver = ckpt.Checkpointer(tmp_path, keep=2, save_buffer=True)
    saver.save(carry(5), position(5))
    saver.manager.wait_until_finished()

    async def crash(self):
        raise OSError("killed before the rename")

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", crash)
    with pytest.raises(Exception, match="killed before the rename"):  # orbax re-raises it from its save thread
        saver.save(carry(10), position(10))
        saver.manager.wait_until_finished()
    monkeypatch.undo()
    saver.manager.close()
    names = sorted(p.name for p in (tmp_path / DIRNAME).iterdir())
    assert names == ["10.orbax-checkpoint-tmp", "5"]
    assert any((tmp_path / DIRNAME / names[0]).rglob("manifest.ocdbt"))  # the state itself did get written
    step, pos = ckpt.read_position(tmp_path, config, config)
    assert (step, pos.updates_done) == (5, 5)
    state = ckpt.restore(tmp_path, step, pos, carry(0), host_env=False)
    assert np.array_equal(np.asarray(state.units["q"].params["w"]), np.full((2, 3), 5.0))


def test_zero_size_leaves_round_trip(tmp_path):
    # MJX env states (brax backend="mjx") carry zero-size arrays (e.g. no contacts); they must not break a save, and
    # come back with their shapes
    import jax.numpy as jnp

    import plasticine_jax
    from plasticine_jax.algos.state import RunState, StepCounter, Unit
    from plasticine_jax.run import checkpoint as ckpt

    def carry(u: int) -> RunState:
        unit = Unit(params={"w": jnp.full((2, 3), float(u))}, net_state={}, opt_state=(jnp.zeros(2, jnp.int32),),
                    istate=None, hp={"lr": jnp.ones(2)})
        env = {"contact": jnp.zeros((2, 0, 3), jnp.float32), "efc": jnp.zeros((2, 0), jnp.int32),
               "q": jnp.full((2, 5), float(u))}
        return RunState(units={"q": unit}, env_state=env, obs=jnp.zeros((2, 4)), key=jnp.zeros((2, 2), jnp.uint32),
                        steps=StepCounter(jnp.zeros(2, jnp.uint32), jnp.zeros(2, jnp.uint32)),
                        update=jnp.full((2,), u, jnp.int32), task=jnp.zeros(2, jnp.int32))

    config = {"run": {"out": str(tmp_path)}, "ppo": {"lr": 1.0}}
    pos = ckpt.Position(updates_done=5, num_updates=20, chunk_updates=5, rows_written=0, metrics_bytes=0,
                        package_version=plasticine_jax.__version__, jax_version=jax.__version__,
                        config_hash=ckpt.config_hash(config), buffer_saved=True, finished=False, train_time_s=0.0,
                        state_crc32="")
    saver = ckpt.Checkpointer(tmp_path, keep=2, save_buffer=True)
    saver.save(carry(5), pos)
    saver.close()
    step, pos = ckpt.read_position(tmp_path, config, config)
    state = ckpt.restore(tmp_path, step, pos, carry(0), host_env=False)
    assert state.env_state["contact"].shape == (2, 0, 3) and state.env_state["contact"].dtype == jnp.float32
    assert state.env_state["efc"].shape == (2, 0) and state.env_state["efc"].dtype == jnp.int32
    assert np.array_equal(np.asarray(state.env_state["q"]), np.full((2, 5), 5.0))
    assert np.array_equal(np.asarray(state.units["q"].params["w"]), np.full((2, 3), 5.0))
