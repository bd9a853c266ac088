"""``run.run_axis.over_runs``: several runs are vmapped; a single run is traced without ``vmap`` and gets its run axis
back, with the values of the vmapped program (up to XLA's float rounding); under ``--batch-invariant`` it is vmapped
with a copy of itself (a run axis of 2: XLA compiles a run axis of 1 like a plain call)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tyro

from plasticine_jax.config import TrainArgs, resolve_run
from plasticine_jax.run import batch_invariance
from plasticine_jax.run.driver import build_learner
from plasticine_jax.run.run_axis import over_runs


def _probe():
    """A per-run function that records, for each trace, whether it was batched by ``vmap`` (and the batch size)."""
    seen, sizes = [], []

    @jax.custom_batching.custom_vmap
    def mark(x):
        return x

    @mark.def_vmap
    def _batched(axis_size, in_batched, x):
        seen[-1] = True
        sizes.append(axis_size)
        return x, in_batched[0]

    def f(x, k, n):
        seen.append(False)
        x = mark(x)
        return {"y": jnp.cumsum(x) * k + n, "s": x.sum()}

    return f, seen, sizes


@pytest.mark.parametrize("runs", [1, 3])
def test_one_run_is_traced_unbatched_and_keeps_the_run_axis(runs):
    f, seen, _ = _probe()
    x = jnp.arange(runs * 4, dtype=jnp.float32).reshape(runs, 4)
    out = jax.jit(over_runs(f, in_axes=(0, None, None)), static_argnums=2)(x, jnp.float32(2.0), 1)
    assert seen == [runs > 1]  # vmapped only when there are several runs
    want = jax.vmap(f, in_axes=(0, None, None))(x, jnp.float32(2.0), 1)
    assert out["y"].shape == (runs, 4) and out["s"].shape == (runs,)
    np.testing.assert_array_equal(out["y"], want["y"])
    np.testing.assert_array_equal(out["s"], want["s"])


def test_batch_invariant_batches_one_run_with_its_copy_and_bad_axes_are_refused(monkeypatch):
    f, seen, sizes = _probe()
    monkeypatch.setattr(batch_invariance, "active", lambda: True)
    x = jnp.arange(4.0)[None] + 1.0
    out = over_runs(f, in_axes=(0, None, None))(x, jnp.float32(2.0), 1)
    assert seen == [True] and sizes == [2]  # vmapped over the run and its copy
    assert out["y"].shape == (1, 4) and out["s"].shape == (1,)
    np.testing.assert_array_equal(out["y"], (jnp.cumsum(x[0]) * 2.0 + 1)[None])
    np.testing.assert_array_equal(out["s"], jnp.array([10.0]))
    with pytest.raises(ValueError, match="maps axis 0 or nothing"):
        over_runs(f, in_axes=(1, None, None))(jnp.ones((4, 1)), 1.0, 0)


def test_a_single_ppo_run_matches_its_vmapped_program():
    """Three PPO updates of one seed, unbatched and vmapped: the same run up to float rounding, and it trained."""
    cfg = resolve_run(tyro.cli(TrainArgs, args=["--total-timesteps", "1500", "--ppo.num-envs", "4",
                                                "--ppo.num-steps", "125"]))
    learner = build_learner(cfg)
    keys = jax.random.PRNGKey(3)[None]
    hp = {k: jnp.full((1,), v, jnp.float32) for k, v in learner.default_hparams().items()}
    init = jax.jit(over_runs(learner.init))(keys, hp)
    for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(jax.jit(jax.vmap(learner.init))(keys, hp)), strict=True):
        np.testing.assert_array_equal(a, b)  # the same draws
    one = jax.jit(over_runs(learner.run_updates, in_axes=(0, None, None)), static_argnums=2)(init, 0, 3)
    both = jax.jit(jax.vmap(learner.run_updates, in_axes=(0, None, None)), static_argnums=2)(init, 0, 3)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(both), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
        else:
            np.testing.assert_array_equal(a, b)
    p0, p1 = jax.tree.leaves(init.units["agent"].params), jax.tree.leaves(one[0].units["agent"].params)
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(p0, p1, strict=True)) > 1e-4  # it trained
