"""One executable for every chunk: ``run_updates(..., count)`` runs only the first ``count`` of its ``num`` updates
(a traced trip count, ``learner.scan_first``), so the driver's last, shorter chunk reuses the chunk program
instead of compiling the whole update again. The runs it produces are the runs of separate programs, bit for bit.
"""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import tyro

from plasticine_jax.algos.learner import scan_first
from plasticine_jax.cli import main
from plasticine_jax.config import TrainArgs, resolve_run
from plasticine_jax.run import devices
from plasticine_jax.run.driver import build_learner


def _body(c, x):
    c = c * 1.5 + x
    return c, {"c": c, "x": x}


def test_scan_first_is_scan_of_the_first_count_steps_with_zero_rows_after():
    xs = jnp.arange(1.0, 6.0)
    f = jax.jit(lambda c, k: scan_first(_body, c, xs, k))  # one program, the count traced
    for count in (0, 1, 3, 5, 9):
        got_c, got = f(jnp.float32(0.5), count)
        n = min(count, 5)
        want_c, want = jax.lax.scan(_body, jnp.float32(0.5), xs[:n])
        np.testing.assert_array_equal(got_c, want_c)
        for k in ("c", "x"):
            assert got[k].shape == (5,)
            np.testing.assert_array_equal(got[k][:n], want[k])
            assert (got[k][n:] == 0).all()
    assert f._cache_size() == 1
    # vmapped carry, unbatched count: still a loop with one trip count
    cs = jnp.array([0.5, -1.0, 2.0], jnp.float32)
    got_c, got = jax.jit(jax.vmap(lambda c, k: scan_first(_body, c, xs, k), in_axes=(0, None)))(cs, 2)
    want_c, want = jax.vmap(lambda c: jax.lax.scan(_body, c, xs[:2]))(cs)
    np.testing.assert_array_equal(got_c, want_c)
    np.testing.assert_array_equal(got["c"][:, :2], want["c"])
    assert (got["c"][:, 2:] == 0).all()


def test_ppo_updates_with_a_count_are_the_updates_without_one():
    """Two of three PPO updates over 2 vmapped seeds: the run of a 2-update program, bit for bit, which trained."""
    cfg = resolve_run(tyro.cli(TrainArgs, args=["--total-timesteps", "1500", "--ppo.num-envs", "4",
                                                "--ppo.num-steps", "125"]))
    learner = build_learner(cfg)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (0, 1)])
    hp = {k: jnp.full((2,), v, jnp.float32) for k, v in learner.default_hparams().items()}
    init = jax.jit(jax.vmap(learner.init))(keys, hp)
    counted = jax.jit(jax.vmap(learner.run_updates, in_axes=(0, None, None, None)), static_argnums=2)
    plain = jax.jit(jax.vmap(learner.run_updates, in_axes=(0, None, None)), static_argnums=2)
    (s_a, m_a), (s_b, m_b) = counted(init, 0, 3, 2), plain(init, 0, 2)
    for a, b in zip(jax.tree.leaves(s_a), jax.tree.leaves(s_b), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(s_a.update[0]) == 2
    for k in m_b:
        assert m_a[k].shape[1] == 3
        np.testing.assert_array_equal(m_a[k][:, :2], m_b[k])
        assert (m_a[k][:, 2] == 0).all(), k
    s_c, _ = counted(init, 0, 3, 3)
    assert int(s_c.update[0]) == 3  # the full count runs every update
    p0, p2 = jax.tree.leaves(init.units["agent"].params), jax.tree.leaves(s_a.units["agent"].params)
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(p0, p2, strict=True)) > 1e-4


def _rows(out) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows]


def test_uneven_last_chunk_compiles_no_second_program(tmp_path, monkeypatch):
    """7 updates in chunks of 3 (3, 3, 1): one chunk program is compiled, and the rows are those of the run in one
    chunk of 7, every update logged, bit for bit."""
    calls = []
    real = devices.compile_runs

    def counting(fn, mesh, example, replicated=()):
        calls.append(example[2] if len(example) == 3 else "init")  # the chunk program's example: its length
        return real(fn, mesh, example, replicated)

    monkeypatch.setattr(devices, "compile_runs", counting)
    args = ["train", "--total-timesteps", "3500", "--num-seeds", "2", "--log-every", "1", "--no-wandb",
            "--no-progress", "--compile-cache", "off"]
    assert main([*args, "--chunk-updates", "3", "--out", str(tmp_path / "three")]) == 0
    assert calls == ["init", 3]  # the chunk program, once; the last chunk of 1 update reuses it
    assert main([*args, "--chunk-updates", "7", "--out", str(tmp_path / "seven")]) == 0
    a, b = _rows(tmp_path / "three"), _rows(tmp_path / "seven")
    assert [r["update"] for r in a if r["seed"] == 0] == list(range(1, 8))
    assert a == b


def _program(compiled) -> str:
    """Optimized HLO without source metadata (stack frames are recorded in trace order)."""
    text = compiled.as_text().split("\nFileNames")[0]
    return re.sub(r", metadata=\{[^}]*\}", "", text)


def test_compile_programs_gives_the_fresh_carry_and_the_chunk_program():
    """``compile_programs``: init's fresh carry (weak types included) and the chunk program lowered from it,
    the program a resumed run compiles again."""
    from plasticine_jax.run.driver import compile_programs
    from plasticine_jax.run.run_axis import over_runs

    cfg = resolve_run(tyro.cli(TrainArgs, args=["--total-timesteps", "1000", "--ppo.num-envs", "2",
                                                "--ppo.num-steps", "50"]))
    learner = build_learner(cfg)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (0, 1)])
    hp = {k: jnp.full((2,), v, jnp.float32) for k, v in learner.default_hparams().items()}
    fresh, run_chunk = compile_programs(learner, None, keys, hp, 4)
    want = jax.jit(over_runs(learner.init))(keys, hp)
    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(want), strict=True):
        assert a.dtype == b.dtype and a.weak_type == b.weak_type
        np.testing.assert_array_equal(a, b)
    vstep = over_runs(learner.run_updates, in_axes=(0, None, None, None))

    def chunk_fn(carry, start, count):  # named as the driver's, which names the HLO module
        return vstep(carry, start, 4, count)

    direct = jax.jit(chunk_fn).lower(want, 0, 4).compile()
    assert _program(run_chunk) == _program(direct)
