"""TRAC and Kron as interventions (reference §3.11, §3.12): how ``build_optimizer`` wires them. TRAC wraps Adam and
sees the clipped (and L2-coupled) gradients; Kron replaces Adam; Kron's per-seed key comes from the init hook so
vmapped seeds draw different probes. (The optimizers themselves: tests/test_trac.py, tests/test_kron.py.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plasticine_jax.interventions import trac as trac_iv
from plasticine_jax.interventions.base import LearnerState, build_optimizer, compose
from plasticine_jax.optim.kron import KronState, kron, kron_state
from plasticine_jax.interventions.registry import parse_list, resolve
from plasticine_jax.optim.trac import TracState, trac, trac_state

LR, MAX_NORM, EPS = 1e-2, 0.5, 1e-5


def _problem(n_steps=6):
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.asarray(rng.normal(size=3), jnp.float32)}
    grads = []
    for i in range(n_steps):  # norms alternate far above / below the clip threshold -> step-dependent clip factors
        scale = (30.0, 0.1, 5.0, 0.3, 80.0, 2.0)[i % 6]
        g = {k: rng.normal(size=v.shape) for k, v in params.items()}
        n = np.sqrt(sum(np.sum(x**2) for x in g.values()))
        grads.append({k: jnp.asarray(x * scale / n, jnp.float32) for k, x in g.items()})
    return params, grads


def _clip(g):
    n = float(optax.global_norm(g))
    return jax.tree.map(lambda x: x * min(1.0, MAX_NORM / n), g)


def _run(tx, params, grads):
    state = tx.init(params)
    step = jax.jit(tx.update)
    for g in grads:
        upd, state = step(g, state, params)
        params = optax.apply_updates(params, upd)
    return params, state


def _find(tree, cls):
    return [s for s in jax.tree.leaves(tree, is_leaf=lambda v: isinstance(v, cls)) if isinstance(s, cls)]


def _adam():
    return optax.chain(optax.scale_by_adam(eps=EPS), optax.scale_by_learning_rate(LR))


def test_aliases_and_order():
    assert parse_list("trac,kron") == ["trac", "kron"]
    ivs = compose(resolve(["kron", "trac"]))
    assert [iv.name for iv in ivs] == ["trac", "kron"]
    assert ivs[0].wrap_base is not None and ivs[0].base_optimizer is None
    assert ivs[1].base_optimizer is not None and ivs[1].init is not None


def test_trac_wraps_adam_and_sees_clipped_gradients():
    params, grads = _problem()
    ivs = compose(resolve(["trac"]))
    tx = build_optimizer(ivs, {}, LR, MAX_NORM, EPS)
    state0 = tx.init(params)
    assert list(state0.keys()) == ["clip", "base"]
    assert isinstance(state0["base"], TracState)
    assert len(_find(state0["base"].base_state, optax.ScaleByAdamState)) == 1  # TRAC's base is Adam
    got, state = _run(tx, params, grads)
    # independent: TRAC(Adam) fed gradients clipped by hand
    o = trac_iv.Options()
    ref_tx = trac(_adam(), s_prev=o.s_prev, eps=o.eps, keep_x=o.keep_x)
    ref_state = ref_tx.init(params)
    ref = params
    for g in grads:
        upd, ref_state = ref_tx.update(_clip(g), ref_state, ref)
        ref = optax.apply_updates(ref, upd)
    for k in params:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(ref[k]), rtol=1e-5, atol=1e-7)
    ts = trac_state(state)
    np.testing.assert_allclose(np.asarray(ts.sigma), np.asarray(ref_state.sigma), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ts.variance), np.asarray(ref_state.variance), rtol=1e-5)
    assert int(ts.count) == len(grads)
    # ... and not the unclipped gradients (h_t = <x_t, g_t> is what TRAC accumulates)
    _, raw_state = _run(trac(_adam(), s_prev=o.s_prev, eps=o.eps), params, grads)
    assert not np.allclose(np.asarray(raw_state.variance), np.asarray(ts.variance), rtol=1e-2)


def test_trac_after_l2_sees_coupled_gradient():
    params, grads = _problem(4)
    ivs = compose(resolve(["trac", "l2"]))
    wd = 0.2
    tx = build_optimizer(ivs, {"l2.weight_decay": jnp.float32(wd)}, LR, MAX_NORM, EPS)
    assert list(tx.init(params).keys()) == ["clip", "l2_grad", "base"]
    got, _ = _run(tx, params, grads)
    ref_tx = trac(_adam())
    ref_state = ref_tx.init(params)
    ref = params
    for g in grads:
        g2 = jax.tree.map(lambda c, p: c + wd * p, _clip(g), ref)
        upd, ref_state = ref_tx.update(g2, ref_state, ref)
        ref = optax.apply_updates(ref, upd)
    for k in params:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(ref[k]), rtol=1e-5, atol=1e-7)


def test_kron_replaces_adam():
    params, grads = _problem(4)
    ivs = compose(resolve(["kron"]))
    tx = build_optimizer(ivs, {}, LR, MAX_NORM, EPS)
    state0 = tx.init(params)
    assert _find(state0, optax.ScaleByAdamState) == []
    assert len(_find(state0, KronState)) == 1
    key = jnp.asarray([7, 11], jnp.uint32)
    # same key in both: the intervention's chain == clip -> kron(lr)
    (iv,) = ivs
    learner = iv.init(None, LearnerState(params, {}, state0, {}, {}), key)
    np.testing.assert_array_equal(np.asarray(kron_state(learner.opt_state).key), np.asarray(key))
    state = learner.opt_state
    p = params
    ref_tx = kron(LR, key=key)
    ref_state = ref_tx.init(params)
    ref = params
    step, ref_step = jax.jit(tx.update), jax.jit(ref_tx.update)
    for g in grads:
        upd, state = step(g, state, p)
        p = optax.apply_updates(p, upd)
        rupd, ref_state = ref_step(_clip(g), ref_state, ref)
        ref = optax.apply_updates(ref, rupd)
    for k in params:
        np.testing.assert_allclose(np.asarray(p[k]), np.asarray(ref[k]), rtol=1e-5, atol=1e-7)
    assert int(kron_state(state).count) == len(grads)


@pytest.mark.parametrize("names", [["kron"], ["kron", "trac"]])
def test_kron_keys_differ_across_vmapped_seeds_via_init_hook(names):
    from plasticine_jax.algos.ppo import make_train
    from plasticine_jax.algos.ppo_config import PRESETS

    trainer = make_train(PRESETS["cartpole"], "gymnax:CartPole-v1", 4096, resolve(names))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    runner = jax.jit(jax.vmap(trainer.init))(keys)
    ks = np.asarray(kron_state(runner.learner.opt_state).key)
    assert ks.shape == (2, 2) and not np.array_equal(ks[0], ks[1])
    # the init hook replaced the key kron's own init derives from the params
    tx = trainer._optimizer(trainer.default_hparams())
    for i in range(2):
        params_i = jax.tree.map(lambda a, i=i: a[i], runner.learner.params)
        own = np.asarray(kron_state(tx.init(params_i)).key)
        assert not np.array_equal(ks[i], own)
    if "trac" in names:  # TRAC wraps Kron then
        assert isinstance(runner.learner.opt_state["base"], TracState)


def _trac_tx(**kw):
    return build_optimizer(compose(resolve(["trac"], {"trac": trac_iv.Options(**kw)})), {}, LR, MAX_NORM, EPS)


def _quadratic():
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)}
    target = jnp.asarray(rng.normal(size=(5, 4)) * 3.0, jnp.float32)
    noise = jnp.asarray(rng.normal(size=(51, 5, 4)) * 0.1, jnp.float32)
    return params, target, noise


def _trac_warm(follow):
    """TRAC after 50 steps on a noisy quadratic (S ~ 0.7: its steps are well above float rounding)."""
    params, target, noise = _quadratic()
    tx = _trac_tx(follow_edits=follow)

    def step(carry, n):
        p, s = carry
        u, s = tx.update({"w": p["w"] - target + n}, s, p)
        return (optax.apply_updates(p, u), s), None

    (p, s), _ = jax.jit(lambda: jax.lax.scan(step, (params, tx.init(params)), noise[:-1]))()
    return tx, p, s, {"w": p["w"] - target + noise[-1]}


def test_trac_keeps_parameter_edits_of_other_interventions():
    """A reset (or projection, SnP...) between two steps must survive the next TRAC step."""
    tx, p, state, g = _trac_warm(follow=True)
    assert float(trac_state(state).scale) > 0.1
    edited = {"w": p["w"].at[0].set(0.0)}  # e.g. ReDo zeroing a consumer row
    step = jax.jit(tx.update)
    upd, _ = step(g, state, edited)
    upd_noedit, _ = step(g, state, p)
    after = optax.apply_updates(edited, upd)
    # the edit stays, and the step is TRAC's own step, the same with or without the edit
    np.testing.assert_array_equal(np.asarray(after["w"][0]), np.asarray(upd["w"][0]))
    assert np.abs(np.asarray(upd_noedit["w"])).min() > 1e-5
    np.testing.assert_allclose(np.asarray(upd["w"]), np.asarray(upd_noedit["w"]), rtol=1e-2, atol=1e-6)
    # follow_edits=False: TRAC rebuilds theta = theta_ref + x*S and undoes the edit within one step
    tx, p, state, g = _trac_warm(follow=False)
    edited = {"w": p["w"].at[0].set(0.0)}
    step = jax.jit(tx.update)
    after = optax.apply_updates(edited, step(g, state, edited)[0])
    want = optax.apply_updates(p, step(g, state, p)[0])  # as if the edit had never happened
    np.testing.assert_allclose(np.asarray(after["w"]), np.asarray(want["w"]), rtol=1e-5, atol=1e-6)


def test_trac_follow_edits_is_trac_without_edits():
    """Without edits, re-anchoring changes nothing beyond float rounding. (Only 50 steps: TRAC's scale dynamics
    are chaotic -- a 1e-7 relative change of theta_0 gives O(1) differences after ~100 steps.)"""
    params, target, noise = _quadratic()

    def run(tx):
        def step(carry, n):
            p, s = carry
            u, s = tx.update({"w": p["w"] - target + n}, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, s), _ = jax.lax.scan(step, (params, tx.init(params)), noise[:-1])
        return p, trac_state(s)

    (pa, sa), (pb, sb) = jax.jit(lambda: (run(_trac_tx(follow_edits=True)), run(_trac_tx(follow_edits=False))))()
    assert float(sa.scale) > 0.1  # TRAC has moved away from theta_0
    assert np.abs(np.asarray(pa["w"] - params["w"])).max() > 0.1
    np.testing.assert_allclose(np.asarray(pa["w"]), np.asarray(pb["w"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sa.scale), np.asarray(sb.scale), rtol=1e-5)
