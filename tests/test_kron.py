"""Kron (PSGD): optimises, per-seed randomness under vmap, determinism, jit, equivalence to psgd_jax."""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plasticine_jax.optim.kron import (
    PSGD_JAX_KEY,
    KronState,
    kron,
    kron_state,
    precond_update_prob_schedule,
    set_kron_key,
)

kx, kw = jax.random.split(jax.random.PRNGKey(0))
X = jax.random.normal(kx, (64, 6)) * jnp.array([5.0, 2.0, 1.0, 0.5, 0.2, 0.1])  # ill-conditioned
Y = X @ jax.random.normal(kw, (6, 3))
PARAMS = {"w": jnp.zeros((6, 3)), "b": jnp.zeros(3), "s": jnp.float32(0.0)}


def loss(p):
    return jnp.mean((X @ p["w"] + p["b"] - Y) ** 2) + (p["s"] - 1.0) ** 2


def train(tx, params, steps, key=None):
    """Scan ``steps`` optimizer steps; returns final params, losses, final opt state."""
    state = tx.init(params)
    if key is not None:
        state = set_kron_key(state, key)

    def step(carry, _):
        p, s = carry
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return (optax.apply_updates(p, u), s), loss(p)

    (params, state), losses = jax.lax.scan(step, (params, state), None, length=steps)
    return params, losses, state


def test_optimises_least_squares():
    params, losses, state = jax.jit(lambda p: train(kron(0.1), p, 100))(PARAMS)
    assert float(losses[0]) / float(loss(params)) > 300.0
    ks = kron_state(state)
    assert isinstance(ks, KronState) and int(ks.count) == 100
    assert ks.Qs_preconditioners["w"][0].shape == (6, 6) and ks.Qs_preconditioners["w"][1].shape == (3, 3)
    assert ks.Qs_preconditioners["b"][0].shape == (3,)  # 1-D leaf: diagonal factor
    assert ks.Qs_preconditioners["s"][0].shape == ()  # scalar leaf


def test_vmapped_seeds_with_different_keys_differ():
    """Identical params and gradients, different keys: the probes (hence Q and the updates) differ."""
    tx = kron(0.1)
    keys = jax.random.split(jax.random.PRNGKey(7), 2)
    batch = jax.tree.map(lambda a: jnp.stack([a, a]), PARAMS)
    params, losses, state = jax.jit(jax.vmap(lambda p, k: train(tx, p, 5, k)))(batch, keys)
    q = kron_state(state).Qs_preconditioners["w"][0]
    assert not np.allclose(q[0], q[1])
    assert not np.allclose(params["w"][0], params["w"][1])
    np.testing.assert_array_equal(losses[:, 0][0], losses[:, 0][1])  # same start


def test_key_in_factory_under_vmap_and_from_params():
    # key passed to the factory as a (vmapped) tracer: init stores it, update reads only the state
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    states = jax.vmap(lambda k: kron(0.1, key=k).init(PARAMS))(keys)
    np.testing.assert_array_equal(kron_state(states).key, jax.random.key_data(keys))
    # typed keys are accepted too
    typed = kron(0.1, key=jax.random.key(1)).init(PARAMS)
    np.testing.assert_array_equal(kron_state(typed).key, jax.random.key_data(jax.random.key(1)))
    # key=None: derived from the params -> differs between seeds whose params differ, equal otherwise
    tx = kron(0.1)
    pk = jax.vmap(lambda s: kron_state(tx.init(jax.tree.map(lambda a: a + s, PARAMS))).key)
    k = pk(jnp.array([0.0, 0.1, 0.0]))
    assert not np.array_equal(k[0], k[1]) and np.array_equal(k[0], k[2])


def test_same_key_same_result():
    tx = kron(0.1)
    key = jax.random.PRNGKey(11)
    run = jax.jit(lambda p, k: train(tx, p, 20, k))
    p1, l1, _ = run(PARAMS, key)
    p2, l2, _ = run(PARAMS, key)
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(p1["w"], p2["w"])
    batch = jax.tree.map(lambda a: jnp.stack([a, a]), PARAMS)
    pv, lv, _ = jax.jit(jax.vmap(lambda p, k: train(tx, p, 20, k)))(batch, jnp.stack([key, key]))
    np.testing.assert_array_equal(pv["w"][0], pv["w"][1])
    np.testing.assert_allclose(pv["w"][0], p1["w"], rtol=1e-5, atol=1e-6)


def test_jit_single_step_and_eager_agree():
    tx = kron(1e-2, weight_decay=1e-3, key=jax.random.PRNGKey(0))
    state = tx.init(PARAMS)
    g = jax.grad(loss)(PARAMS)
    u_eager, s_eager = tx.update(g, state, PARAMS)
    u_jit, s_jit = jax.jit(tx.update)(g, state, PARAMS)
    np.testing.assert_allclose(u_jit["w"], u_eager["w"], rtol=1e-5, atol=1e-8)
    assert int(kron_state(s_jit).count) == 1


def test_update_schedule():
    sched = precond_update_prob_schedule()
    p = np.asarray(jax.vmap(sched)(jnp.array([1.0, 500.0, 1000.0, 4100.0, 10_000.0])))
    np.testing.assert_allclose(p, [1.0, 1.0, np.exp(-0.5), 0.03, 0.03], rtol=1e-5)
    # deterministic (psgd_jax) mode with p = 0.5: the preconditioner changes every second step only
    tx = kron(0.1, preconditioner_update_probability=0.5, key=jax.random.PRNGKey(0))
    state, params, qs = tx.init(PARAMS), PARAMS, []
    for _ in range(4):
        u, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, u)
        qs.append(np.asarray(kron_state(state).Qs_preconditioners["w"][0]))
    assert np.array_equal(qs[0], np.eye(6)) and not np.array_equal(qs[1], qs[0])
    assert np.array_equal(qs[2], qs[1]) and not np.array_equal(qs[3], qs[2])


def _import_psgd_jax():
    # psgd_jax 0.2.9 imports optax._src.clipping (removed in optax 0.2.5) without using it
    sys.modules.setdefault("optax._src.clipping", types.ModuleType("optax._src.clipping"))
    return pytest.importorskip("psgd_jax.kron")


def test_matches_psgd_jax_with_its_key():
    pk = _import_psgd_jax()
    params = {"w": jax.random.normal(kx, (6, 3)), "b": jnp.zeros(3), "c": 0.1 * jnp.ones((3, 2, 4))}

    def loss2(p):
        return loss({**p, "s": 0.0}) + 3.0 * jnp.sum(p["c"] ** 2)

    def run(tx):
        state = tx.init(params)

        def step(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(loss2)(p), s, p)
            return (optax.apply_updates(p, u), s), u

        return jax.lax.scan(step, (params, state), None, length=15)[1]

    for kw in [{}, {"memory_save_mode": "one_diag", "b1": 0.0, "weight_decay": 0.01}]:
        ref = jax.jit(lambda kw=kw: run(pk.kron(1e-2, precond_update_precision="float32", **kw)))()
        got = jax.jit(lambda kw=kw: run(kron(1e-2, key=PSGD_JAX_KEY, **kw)))()
        for name in params:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-7)
