"""Runs split over several devices (``run.devices``): on 4 forced host CPU devices a sharded run is bit-identical
to a one-device run under ``--batch-invariant`` (and so is a seed run alone); with XLA's default CPU code every
device runs the one-device program of its own slice bit for bit, and the whole agrees with a one-device run of all
runs up to float rounding (XLA's CPU code depends on the number of runs per program). The runs really live on 4
devices, uneven splits fall back to a divisor, and a bad ``--devices`` or ``--batch-invariant`` is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from plasticine_jax.errors import ConfigError
from plasticine_jax.run import devices

BASE = ["--num-seeds", "8", "--total-timesteps", "4000", "--ppo.num-envs", "4", "--ppo.num-steps", "50",
        "--log-every", "4", "--no-wandb", "--no-progress", "--interventions", "redo"]
FLAGS = [*BASE, "--batch-invariant"]


def _env(n_devices: int) -> dict[str, str]:
    """The environment of a subprocess that sees ``n_devices`` host CPU devices."""
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}", "JAX_PLATFORMS": "cpu"}


def _run(args: list[str], n_devices: int) -> subprocess.CompletedProcess:
    env = _env(n_devices)
    return subprocess.run([sys.executable, "-m", "plasticine_jax", "train", *args], env=env, capture_output=True,
                          text=True, timeout=600)


def _rows(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    """An uninterrupted 8-seed run (20 updates) split over 4 devices."""
    out = tmp_path_factory.mktemp("devices") / "four"
    res = _run([*FLAGS, "--out", str(out)], 4)
    assert res.returncode == 0, res.stderr[-2000:]
    return out


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows]


def test_sharded_cli_run_equals_one_device_bit_for_bit(four, tmp_path):
    one = _run([*FLAGS, "--out", str(tmp_path / "one"), "--devices", "1"], 4)
    assert one.returncode == 0, one.stderr[-2000:]
    alone = _run([*FLAGS, "--num-seeds", "1", "--seed", "3", "--out", str(tmp_path / "alone")], 4)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert json.loads((four / "config.json").read_text())["run_devices"] == 4
    assert json.loads((tmp_path / "one" / "config.json").read_text())["run_devices"] == 1
    a, b = _strip(_rows(four)), _strip(_rows(tmp_path / "one"))
    assert len(a) == 8 * 5 and a == b  # every logged value of every seed and update, bit for bit
    assert _strip(_rows(tmp_path / "alone")) == [r for r in a if r["seed"] == 3]  # a seed alone: the same bits
    assert len({r["losses/value_loss"] for r in a if r["update"] == 4}) == 8  # eight different runs, not copies


def test_default_xla_each_device_runs_the_one_device_program():
    """Default XLA flags: one compiled chunk of PPO (+ReDo) over 2 of 4 devices equals, bit for bit, a one-device
    run of each device's four runs, and the 8 runs of a one-device program up to float rounding."""
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np, tyro
        from plasticine_jax.config import TrainArgs, resolve_run
        from plasticine_jax.run import devices
        from plasticine_jax.run.driver import build_learner
        cfg = resolve_run(tyro.cli(TrainArgs, args=["--total-timesteps", "20000", "--interventions", "redo"]))
        L = build_learner(cfg)
        keys = jnp.stack([jax.random.PRNGKey(s) for s in range(8)])
        hp = {k: jnp.full((8,), v, jnp.float32) for k, v in L.default_hparams().items()}
        carry = jax.jit(jax.vmap(L.init))(keys, hp)
        vstep = jax.vmap(L.run_updates, in_axes=(0, None, None))
        one = jax.jit(lambda c, s: vstep(c, s, 3))
        mesh = devices.runs_mesh(2)
        sharded = devices.put(carry, mesh)
        four = devices.compile_runs(lambda c, s: vstep(c, s, 3), mesh, (sharded, 0), replicated=(1,))(sharded, 0)
        assert len({s.device for x in jax.tree.leaves(four) for s in x.addressable_shards}) == 2
        slices = [one(jax.tree.map(lambda x: x[i:i + 4], carry), 0) for i in (0, 4)]
        per_slice = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *slices)
        whole = one(carry, 0)
        for a, b, c in zip(jax.tree.leaves(four), jax.tree.leaves(per_slice), jax.tree.leaves(whole)):
            np.testing.assert_array_equal(np.asarray(a), b)
            if b.dtype.kind == "f":
                np.testing.assert_allclose(b, np.asarray(c), rtol=1e-5, atol=1e-6, equal_nan=True)
            else:
                np.testing.assert_array_equal(b, np.asarray(c))
        p0, p1 = carry.units["agent"].params, four[0].units["agent"].params
        moved = max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(jax.tree.leaves(p0),
                                                                                           jax.tree.leaves(p1)))
        assert moved > 1e-3, moved  # three updates moved the params: the comparison is not of untouched inits
        print("ok")
    """)
    env = _env(4)
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]


def test_runs_live_on_every_device():
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp
        from plasticine_jax.run import devices
        mesh = devices.runs_mesh(4)
        keys, x = devices.put((jax.random.split(jax.random.PRNGKey(0), 8), jnp.arange(8.0)), mesh)
        f = devices.compile_runs(jax.vmap(lambda k, x: x * 2 + jax.random.uniform(k)), mesh, (keys, x))
        y = f(keys, x)
        print(sorted(len(s.data) for s in y.addressable_shards), len({s.device for s in y.addressable_shards}),
              y.sharding == devices.runs_sharding(mesh))
    """)
    env = _env(4)
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["[2,", "2,", "2,", "2]", "4", "True"]


def test_uneven_split_and_bad_devices(tmp_path, capsys):
    from plasticine_jax.cli import main

    res = _run([*BASE[:1], "3", *BASE[2:], "--total-timesteps", "2000", "--devices", "2",
                "--out", str(tmp_path / "three")], 4)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3 runs do not split evenly over 2 devices: using 1" in res.stderr
    assert json.loads((tmp_path / "three" / "config.json").read_text())["run_devices"] == 1
    assert main(["train", *BASE, "--devices", "2", "--out", str(tmp_path / "bad")]) == 2  # this process: 1 device
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --devices 2: only 1 cpu device(s) are visible; use --devices 1 or 0"]
    assert not (tmp_path / "bad").exists()


def test_choose_devices_rules():
    assert devices.choose_devices(8, 0, host_env=False)[0] == 1  # this process sees one CPU device
    assert devices.choose_devices(8, 1, host_env=False) == (1, None)
    with pytest.raises(ConfigError, match="--devices must be >= 0"):
        devices.choose_devices(8, -1, host_env=False)
    assert devices.runs_mesh(1) is None


def test_batch_invariant_keeps_two_runs_per_device(monkeypatch):
    """One run on a device compiles another program (``run_axis``), so --batch-invariant never splits that far."""
    from plasticine_jax.run import batch_invariance

    monkeypatch.setattr(devices.jax, "devices", lambda: ["d0", "d1", "d2", "d3"])
    assert devices.choose_devices(4, 0, host_env=False) == (4, None)  # default flags: one run per device
    monkeypatch.setattr(batch_invariance, "active", lambda: True)
    assert devices.choose_devices(8, 0, host_env=False) == (4, None)
    assert devices.choose_devices(4, 0, host_env=False) == (2, "--batch-invariant keeps at least 2 runs per device: "
                                                             "4 runs over 4 devices use 2 (make seeds x sweep points "
                                                             "a multiple of 8 to use them all)")
    assert devices.choose_devices(3, 0, host_env=False)[0] == 1
    assert devices.choose_devices(1, 0, host_env=False)[0] == 1
    assert devices.choose_devices(6, 2, host_env=False) == (2, None)


def test_sharded_run_resumes_bit_exact_and_refuses_another_split(four, tmp_path):
    """Killed after 2 chunks on 2 of the 4 devices, resumed there: the rows of the uninterrupted 4-device run."""
    cut = _run([*FLAGS, "--out", str(tmp_path / "cut"), "--stop-after-chunks", "2", "--devices", "2"], 4)
    assert cut.returncode == 0, cut.stderr[-1500:]
    env = _env(4)
    cmd = [sys.executable, "-m", "plasticine_jax", "train", "--resume", str(tmp_path / "cut")]
    before = (tmp_path / "cut" / "metrics.jsonl").read_bytes()
    assert 0 < len(before.splitlines()) < 40
    other = subprocess.run([*cmd, "--devices", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [
        "error: --resume: the run was split over 2 device(s), this process would use 1; resume with --devices 2 "
        "(a resume is bit-exact only on the same split)"]
    assert (tmp_path / "cut" / "metrics.jsonl").read_bytes() == before
    res = subprocess.run([*cmd, "--devices", "2"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _strip(_rows(tmp_path / "cut")) == _strip(_rows(four))


def test_batch_invariant_needs_a_fresh_backend(tmp_path, capsys):
    import jax

    from plasticine_jax.cli import main
    from plasticine_jax.run import batch_invariance

    jax.devices()  # this test process has started its backend
    if batch_invariance.active():
        pytest.fail("the test process runs with the batch-invariance flags already set")
    assert main(["train", *FLAGS, "--out", str(tmp_path / "bi")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --batch-invariant: JAX already started its backend in this process; start a fresh process, or set "
        "XLA_FLAGS='--xla_cpu_max_isa=AVX --xla_cpu_experimental_ynn_fusion_type=' before importing jax"]
    assert not (tmp_path / "bi").exists()


def test_sweep_batch_invariance_is_all_cells_or_none():
    from plasticine_jax.run.sweep import Cell, _batch_invariance

    _batch_invariance([Cell("a", {}, {}, ["--num-seeds", "2"])])  # none: nothing to do
    with pytest.raises(ConfigError, match="every cell of a sweep or for none"):
        _batch_invariance([Cell("a", {}, {}, ["--batch-invariant"]), Cell("b", {}, {}, [])])


def test_batch_invariant_pqn_seed_alone_equals_it_among_others(tmp_path):
    """One device, --batch-invariant: PQN seed 2 of a 3-seed run logs the bits of seed 2 run alone."""
    flags = ["--algo", "pqn", "--total-timesteps", "20000", "--log-every", "1", "--no-wandb", "--no-progress",
             "--batch-invariant"]
    three = _run([*flags, "--num-seeds", "3", "--out", str(tmp_path / "three")], 1)
    alone = _run([*flags, "--num-seeds", "1", "--seed", "2", "--out", str(tmp_path / "alone")], 1)
    assert three.returncode == 0 and alone.returncode == 0, (three.stderr + alone.stderr)[-2000:]
    rows = [r for r in _strip(_rows(tmp_path / "three")) if r["seed"] == 2]
    assert len(rows) > 5 and rows == _strip(_rows(tmp_path / "alone"))
    assert rows[0]["losses/td_loss"] != rows[-1]["losses/td_loss"]  # it trained
