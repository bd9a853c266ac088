"""TRAC and Kron as interventions (reference §3.11, §3.12): how ``build_optimizer`` wires them. TRAC wraps Adam and
sees the clipped (and L2-coupled) gradients; Kron replaces Adam; Kron's per-seed key comes from the init hook so
vmapped seeds draw different probes. (The optimizers themselves: tests/test_trac.py, tests/test_kron.py.)

The wiring is checked against oracles that do not use the project's ``trac()``/``kron()``: TRAC(Adam) written
from its definition in float64 NumPy (so a chain that dropped TRAC, or fed it unclipped gradients, fails), and
Kron against ``psgd_jax`` (when importable) and against the defining property of its step (update = -lr *
RMS-capped P(bias-corrected momentum of the *clipped* gradients), with P = kron(Q_i^T Q_i) from its state)."""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special as sp

from plasticine_jax.algos.state import Unit
from plasticine_jax.interventions import trac as trac_iv
from plasticine_jax.interventions.base import build_optimizer, compose
from plasticine_jax.interventions.registry import parse_list, resolve
from plasticine_jax.optim.kron import PSGD_JAX_KEY, KronState, kron_state
from plasticine_jax.optim.trac import TracState, trac_state

LR, MAX_NORM, EPS = 1e-2, 0.5, 1e-5
B1, B2 = 0.9, 0.999  # Adam's (optax defaults, as build_optimizer's)
BETAS = np.array([0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999])  # TRAC's


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


def _np_clip(g):
    """Global-norm clipping in float64 NumPy."""
    g = {k: np.asarray(v, np.float64) for k, v in g.items()}
    n = np.sqrt(sum(np.sum(x**2) for x in g.values()))
    return {k: x * min(1.0, MAX_NORM / n) for k, x in g.items()}


def _run(tx, params, grads, state=None):
    state = tx.init(params) if state is None else state
    step = jax.jit(tx.update)
    for g in grads:
        upd, state = step(g, state, params)
        params = optax.apply_updates(params, upd)
    return params, state


def _find(tree, cls):
    return [s for s in jax.tree.leaves(tree, is_leaf=lambda v: isinstance(v, cls)) if isinstance(s, cls)]


def _np_trac_adam(theta0, grads, *, s_prev, eps, x_mode="official", wd=0.0, clip=True):
    """TRAC wrapping Adam(LR, EPS) in float64 NumPy, from the definitions (``optim.trac.trac``'s docstring):
    g_t = clip(raw g_t) [+ wd theta_t]; u_t = Adam's update; x_t = rho_t x_{t-1} with rho_t = max(S,0)/(S+eps)
    (official; 1 for keep); h_t = <x_t, g_t>; x <- x_t + u_t; v_j <- beta_j^2 v_j + h^2; sigma_j <- beta_j
    sigma_j - h; s_j = s_prev / erfi(1/sqrt 2) * erfi(clip(sigma_j / (sqrt 2 sqrt v_j + eps), +-9));
    S = sum_j s_j; theta_{t+1} = theta_ref + max(S, 0) x. Returns the per-step (theta, state) trajectory."""
    ref = {k: np.asarray(v, np.float64) for k, v in theta0.items()}
    theta = dict(ref)
    x = {k: np.zeros_like(v) for k, v in ref.items()}
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    v2 = {k: np.zeros_like(v) for k, v in ref.items()}
    sigma, var, scale = np.full(6, 1e-8), np.zeros(6), 0.0
    pref = s_prev / sp.erfi(1 / np.sqrt(2))
    out = []
    for t, raw in enumerate(grads, start=1):
        g = _np_clip(raw) if clip else {k: np.asarray(a, np.float64) for k, a in raw.items()}
        g = {k: g[k] + wd * theta[k] for k in g}
        u = {}
        for k in g:
            m[k] = B1 * m[k] + (1 - B1) * g[k]
            v2[k] = B2 * v2[k] + (1 - B2) * g[k] ** 2
            u[k] = -LR * (m[k] / (1 - B1**t)) / (np.sqrt(v2[k] / (1 - B2**t)) + EPS)
        rho = (scale / (scale + eps) if scale > 0 else 0.0) if x_mode == "official" else 1.0
        x = {k: rho * a for k, a in x.items()}
        h = sum(np.sum(x[k] * g[k]) for k in g)
        x = {k: x[k] + u[k] for k in x}
        var = BETAS**2 * var + h**2
        sigma = BETAS * sigma - h
        s = pref * sp.erfi(np.clip(sigma / (np.sqrt(2) * np.sqrt(var) + eps), -9.0, 9.0))
        scale = float(np.sum(s))
        theta = {k: ref[k] + max(scale, 0.0) * x[k] for k in ref}
        out.append((theta, {"x": x, "sigma": sigma, "variance": var, "s": s, "scale": scale}))
    return out


def _check_trac(tx, params, grads, traj):
    """Step the wired chain and compare its params and TRAC state with the float64 oracle after every step.
    Returns the number of steps on which the params had moved visibly (S x above float32 rounding)."""
    state, p = tx.init(params), params
    step = jax.jit(tx.update)
    visible = 0
    for t, (g, (want, w)) in enumerate(zip(grads, traj, strict=True), start=1):
        upd, state = step(g, state, p)
        p = optax.apply_updates(p, upd)
        ts = trac_state(state)
        assert int(ts.count) == t
        np.testing.assert_allclose(np.asarray(ts.variance, np.float64), w["variance"], rtol=1e-4)
        np.testing.assert_allclose(np.asarray(ts.sigma, np.float64), w["sigma"], rtol=1e-4, atol=1e-12)
        np.testing.assert_allclose(np.asarray(ts.s, np.float64), w["s"], rtol=1e-4, atol=1e-12)
        np.testing.assert_allclose(float(ts.scale), w["scale"], rtol=1e-4, atol=1e-12)
        for k in params:
            np.testing.assert_allclose(np.asarray(ts.x[k], np.float64), w["x"][k], rtol=1e-4, atol=1e-8)
            np.testing.assert_allclose(np.asarray(p[k], np.float64), want[k], rtol=1e-6, atol=1e-7)
            # the step itself: theta_{t+1} - theta_0 = max(S, 0) x, to 1e-4 of its size where it is visible
            moved = np.asarray(p[k], np.float64) - np.asarray(params[k], np.float64)
            wmoved = want[k] - np.asarray(params[k], np.float64)
            np.testing.assert_allclose(moved, wmoved, atol=3e-7 + 1e-4 * np.abs(wmoved).max())
        visible += max(np.abs(want[k] - np.asarray(params[k], np.float64)).max() for k in params) > 1e-4
    return p, state, visible


def _adam_only(params, grads):
    """What the chain would compute if TRAC were silently dropped: clip -> Adam."""
    tx = optax.chain(optax.clip_by_global_norm(MAX_NORM), optax.scale_by_adam(eps=EPS),
                     optax.scale_by_learning_rate(LR))
    return _run(tx, params, grads)[0]


def test_aliases_and_order():
    assert parse_list("trac,kron") == ["trac", "kron"]
    iv = compose(resolve(["kron", "trac"]))
    assert iv.names == ("trac", "kron")
    trac_part, kron_part = iv.parts
    assert trac_part.wrap_base is not None and trac_part.base_optimizer is None
    assert kron_part.base_optimizer is not None and kron_part.init is not None
    assert iv.wrap_base is not None and iv.base_optimizer is not None and iv.init is not None


@pytest.mark.parametrize("s_prev", [1e-8, 1e-2])  # the default (a tiny first scale), and a visible S * x
@pytest.mark.parametrize("x_mode", ["official", "keep"])
def test_trac_wraps_adam_and_sees_clipped_gradients(x_mode, s_prev):
    params, grads = _problem()
    opts = trac_iv.Options(x_mode=x_mode, s_prev=s_prev)
    iv = compose(resolve(["trac"], {"trac": opts}))
    tx = build_optimizer(iv, {}, LR, MAX_NORM, EPS, None)  # no post transform: the network is not needed
    state0 = tx.init(params)
    assert list(state0.keys()) == ["clip", "base"]
    assert isinstance(state0["base"], TracState)
    assert len(_find(state0["base"].base_state, optax.ScaleByAdamState)) == 1  # TRAC's base is Adam
    traj = _np_trac_adam(params, grads, s_prev=opts.s_prev, eps=opts.eps, x_mode=x_mode)
    got, state, visible = _check_trac(tx, params, grads, traj)
    if s_prev == 1e-2:  # S x is well above float32 rounding on some steps: the params really moved, TRAC's way
        assert visible >= 1, visible
    # the oracle discriminates: without TRAC (clip -> Adam) the params are far away ...
    adam = _adam_only(params, grads)
    assert max(np.abs(np.asarray(adam[k]) - traj[-1][0][k]).max() for k in params) > 1e-2
    # ... and TRAC fed the unclipped gradients has another iterate x (and another h_t = <x_t, g_t>)
    _, raw = _np_trac_adam(params, grads, s_prev=opts.s_prev, eps=opts.eps, x_mode=x_mode, clip=False)[-1]
    ts = trac_state(state)
    assert not all(np.allclose(raw["x"][k], np.asarray(ts.x[k]), rtol=1e-4, atol=1e-8) for k in params)
    assert not np.allclose(raw["variance"], np.asarray(ts.variance), rtol=1e-4, atol=0)


def test_trac_after_l2_sees_coupled_gradient():
    params, grads = _problem(4)
    iv = compose(resolve(["trac", "l2"]))
    assert iv.names == ("l2", "trac")
    wd = 0.2
    o = trac_iv.Options(s_prev=1e-2)  # a visible step
    iv = compose(resolve(["trac", "l2"], {"trac": o}))
    tx = build_optimizer(iv, {"l2.weight_decay": jnp.float32(wd)}, LR, MAX_NORM, EPS, None)
    assert list(tx.init(params).keys()) == ["clip", "grad", "base"]
    traj = _np_trac_adam(params, grads, s_prev=o.s_prev, eps=o.eps, wd=wd)
    _, state, _ = _check_trac(tx, params, grads, traj)
    # without the coupled L2 the oracle's TRAC state is clearly different (the check above discriminates)
    _, plain = _np_trac_adam(params, grads, s_prev=o.s_prev, eps=o.eps)[-1]
    ts = trac_state(state)
    assert not all(np.allclose(plain["x"][k], np.asarray(ts.x[k]), rtol=1e-4, atol=1e-8) for k in params)


def _kron_chain():
    """The intervention and its optimizer chain (clip -> kron)."""
    iv = compose(resolve(["kron"]))
    tx = build_optimizer(iv, {}, LR, MAX_NORM, EPS, None)
    return iv, tx


def test_kron_replaces_adam_defining_property():
    """Each step of the wired chain is Kron's preconditioned step on the clipped gradient: mu_t = b1 mu_{t-1} +
    (1 - b1) clip(g_t), and update_t = -lr * cap(P_t mu_t / (1 - b1^t)) with P_t = kron(Q_i^T Q_i) of the
    preconditioner factors in the state after the step and cap(u) = u / max(1, rms(u) / 1.1) per leaf --
    recomputed in float64 NumPy, with no use of the optimizer's code."""
    params, grads = _problem(4)
    iv, tx = _kron_chain()
    state0 = tx.init(params)
    assert _find(state0, optax.ScaleByAdamState) == []
    assert len(_find(state0, KronState)) == 1
    key = jnp.asarray([7, 11], jnp.uint32)
    unit = iv.init(None, Unit(params, {}, state0, {}, {}), key)
    np.testing.assert_array_equal(np.asarray(kron_state(unit.opt_state).key), np.asarray(key))
    state, p = unit.opt_state, params
    step = jax.jit(tx.update)
    mu = {k: np.zeros(np.shape(v)) for k, v in params.items()}
    b1 = 0.9  # kron.Options().b1
    for t, g in enumerate(grads, start=1):
        upd, state = step(g, state, p)
        p = optax.apply_updates(p, upd)
        ks = kron_state(state)
        assert int(ks.count) == t
        cg = _np_clip(g)
        mu = {k: b1 * mu[k] + (1 - b1) * cg[k] for k in mu}
        for k in params:
            np.testing.assert_allclose(np.asarray(ks.mu[k], np.float64), mu[k], rtol=1e-5, atol=1e-8)
        qs = {k: [np.asarray(q, np.float64) for q in ks.Qs_preconditioners[k]] for k in params}
        assert qs["w"][0].shape == (4, 4) and qs["w"][1].shape == (3, 3) and qs["b"][0].shape == (3,)
        mhat = {k: mu[k] / (1 - b1**t) for k in mu}
        pre = {"w": qs["w"][0].T @ qs["w"][0] @ mhat["w"] @ (qs["w"][1].T @ qs["w"][1]),
               "b": qs["b"][0] ** 2 * mhat["b"]}
        for k in params:
            u = pre[k] / max(1.0, np.sqrt(np.mean(pre[k] ** 2)) / 1.1)
            np.testing.assert_allclose(np.asarray(upd[k], np.float64), -LR * u, rtol=2e-4, atol=1e-9, err_msg=(t, k))
        # a real preconditioner: fitted away from its identity initialisation
        assert not np.allclose(qs["w"][0], np.eye(4), atol=1e-3)
    # the oracle discriminates: Adam's steps are different
    adam = _adam_only(params, grads)
    assert max(np.abs(np.asarray(adam[k]) - np.asarray(p[k])).max() for k in params) > 1e-3


def _import_psgd_jax():
    # psgd_jax 0.2.9 imports optax._src.clipping (removed in optax 0.2.5) without using it (as tests/test_kron.py)
    sys.modules.setdefault("optax._src.clipping", types.ModuleType("optax._src.clipping"))
    return pytest.importorskip("psgd_jax.kron")


def test_kron_chain_matches_psgd_jax_on_clipped_gradients():
    """With the init hook given psgd_jax's constant key, the wired chain is psgd_jax.kron fed gradients clipped
    by hand (an implementation independent of the project's)."""
    pk = _import_psgd_jax()
    params, grads = _problem(6)
    iv, tx = _kron_chain()
    unit = iv.init(None, Unit(params, {}, tx.init(params), {}, {}), jax.random.PRNGKey(5318008))
    np.testing.assert_array_equal(np.asarray(kron_state(unit.opt_state).key), PSGD_JAX_KEY)
    got, state = _run(tx, params, grads, unit.opt_state)
    assert int(kron_state(state).count) == len(grads)
    ref_tx = pk.kron(LR, precond_update_precision="float32")
    clipped = [jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), _np_clip(g)) for g in grads]
    ref, _ = _run(ref_tx, params, clipped)
    for k in params:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(ref[k]), rtol=1e-4, atol=1e-7)
    # the check discriminates: psgd_jax on the raw (unclipped) gradients, or Adam, end elsewhere
    raw, _ = _run(ref_tx, params, grads)
    assert max(np.abs(np.asarray(raw[k]) - np.asarray(got[k])).max() for k in params) > 1e-4
    adam = _adam_only(params, grads)
    assert max(np.abs(np.asarray(adam[k]) - np.asarray(got[k])).max() for k in params) > 1e-3


@pytest.mark.parametrize("names", [["kron"], ["kron", "trac"]])
def test_kron_keys_differ_across_vmapped_seeds_via_init_hook(names):
    from plasticine_jax.algos.ppo import make_train
    from plasticine_jax.algos.ppo_config import PRESETS

    trainer = make_train(PRESETS["cleanrl-cartpole"], "gymnax:CartPole-v1", 4096, resolve(names))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    runner = jax.jit(jax.vmap(trainer.init))(keys)
    unit = runner.units["agent"]
    ks = np.asarray(kron_state(unit.opt_state).key)
    assert ks.shape == (2, 2) and not np.array_equal(ks[0], ks[1])
    # the init hook replaced the key kron's own init derives from the params
    tx = trainer.unit.make_tx(trainer.default_hparams())
    for i in range(2):
        params_i = jax.tree.map(lambda a, i=i: a[i], unit.params)
        own = np.asarray(kron_state(tx.init(params_i)).key)
        assert not np.array_equal(ks[i], own)
    if "trac" in names:  # TRAC wraps Kron then
        assert isinstance(unit.opt_state["base"], TracState)
        assert len(_find(unit.opt_state["base"].base_state, KronState)) == 1


def _trac_tx(**kw):
    return build_optimizer(compose(resolve(["trac"], {"trac": trac_iv.Options(**kw)})), {}, LR, MAX_NORM, EPS, None)


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
