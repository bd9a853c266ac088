"""TRAC wrapper and erfi vs scipy and an independent float64 NumPy re-implementation of reference §3.11."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special as sp

from plasticine_jax.optim.trac import TracState, dawson, erfi, trac, trac_scale, trac_state

BETAS = np.array([0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999])
T = 50


# ----------------------------------------------------------------------------------------------- erfi


def test_erfi_matches_scipy():
    x = np.concatenate(
        [np.linspace(-9.5, 9.5, 100_001), np.logspace(-30, np.log10(9.5), 500), [0.0, 1 / np.sqrt(2)]]
    ).astype(np.float32)
    got = np.asarray(jax.jit(erfi)(jnp.asarray(x)), np.float64)
    want = sp.erfi(x.astype(np.float64))
    nz = want != 0
    rel = np.abs(got - want)[nz] / np.abs(want)[nz]
    assert rel.max() < 1e-5, (rel.max(), x[nz][np.argmax(rel)])
    assert np.all(got[x == 0] == 0.0)
    assert np.all(np.sign(got) == np.sign(x))


def test_dawson_matches_scipy():
    x = np.concatenate([np.linspace(-100, 100, 40_001), np.logspace(-30, 20, 500)]).astype(np.float32)
    got = np.asarray(dawson(jnp.asarray(x)), np.float64)
    want = sp.dawsn(x.astype(np.float64))
    nz = want != 0
    rel = np.abs(got - want)[nz] / np.abs(want)[nz]
    assert rel.max() < 1e-5, (rel.max(), x[nz][np.argmax(rel)])


def test_erfi_overflow_is_inf_not_nan():
    got = np.asarray(erfi(jnp.array([9.6, -12.0, 1e30, jnp.inf, -jnp.inf], jnp.float32)))
    assert np.all(np.isinf(got)) and np.all(np.sign(got) == [1, -1, 1, 1, -1])
    assert np.isfinite(np.asarray(erfi(jnp.float32(9.0))))


# ------------------------------------------------------------------------- float64 NumPy reference (§3.11)


def np_trac(theta0, grads, *, mode, lr=1e-3, s_prev=1e-8, eps=1e-8, clip=None, n=None):
    """TRAC(Adam) in float64, written from the spec. Returns per-step params and S.

    ``grads``: a list (one list of arrays per step) or a function (theta, t) -> list of arrays (closed loop).
    ``mode="official"``: the authors' code literally (x reconstructed from theta every step); ``"keep"``: x
    carried over unscaled."""
    b1, b2, aeps = 0.9, 0.999, 1e-8
    grad_fn = grads if callable(grads) else (lambda th, t: grads[t - 1])
    n = len(grads) if n is None else n
    theta_ref = [np.asarray(t, np.float64) for t in theta0]
    theta = [t.copy() for t in theta_ref]
    m = [np.zeros_like(t) for t in theta]
    v = [np.zeros_like(t) for t in theta]
    x = [np.zeros_like(t) for t in theta]
    S, var, sig = 0.0, np.zeros(len(BETAS)), np.full(len(BETAS), 1e-8)
    pref = s_prev / sp.erfi(1 / np.sqrt(2))
    thetas, scales = [], []
    for t in range(1, n + 1):
        g = [np.asarray(gi, np.float64) for gi in grad_fn(theta, t)]
        if clip is not None:
            gn = np.sqrt(sum(np.sum(gi**2) for gi in g))
            g = [gi * min(1.0, clip / gn) for gi in g]
        u = []
        for i, gi in enumerate(g):
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi**2
            u.append(-lr * (m[i] / (1 - b1**t)) / (np.sqrt(v[i] / (1 - b2**t)) + aeps))
        if mode == "official":  # the reference reconstructs x from theta
            x = [(th - r) / (S + eps) for th, r in zip(theta, theta_ref, strict=True)]
        h = sum(np.sum(xi * gi) for xi, gi in zip(x, g, strict=True))
        x = [xi + ui for xi, ui in zip(x, u, strict=True)]
        var = BETAS**2 * var + h * h
        sig = BETAS * sig - h
        S = float(np.sum(pref * sp.erfi(sig / (np.sqrt(2) * np.sqrt(var) + eps))))
        theta = [r + xi * max(S, 0.0) for r, xi in zip(theta_ref, x, strict=True)]
        thetas.append(theta)
        scales.append(S)
    return thetas, np.array(scales)


def make_problem(zero_ref=False, drift=1.0, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (4,)]
    theta0 = [(0.0 if zero_ref else 0.5) * rng.normal(size=s).astype(np.float32) for s in shapes]
    d = [rng.normal(size=s) for s in shapes]
    grads = [[(drift * di + noise * rng.normal(size=di.shape)).astype(np.float32) for di in d] for _ in range(T)]
    return theta0, grads


def run_jax(tx, theta0, grads):
    params = {"w": jnp.asarray(theta0[0]), "b": jnp.asarray(theta0[1])}
    state = tx.init(params)
    update = jax.jit(tx.update)
    thetas, scales = [], []
    for g in grads:
        u, state = update({"w": jnp.asarray(g[0]), "b": jnp.asarray(g[1])}, state, params)
        params = optax.apply_updates(params, u)
        thetas.append([np.asarray(params["w"]), np.asarray(params["b"])])
        scales.append(float(trac_scale(state)))
    return thetas, np.array(scales), state


def assert_close_to_f64(jt, nt, theta0, rel, ulps):
    for t in range(len(nt)):
        for a, b, r in zip(jt[t], nt[t], theta0, strict=True):
            disp = np.abs(b - r).max()  # size of the TRAC displacement theta - theta_ref
            assert np.abs(a - b).max() <= rel * disp + ulps * np.finfo(np.float32).eps * np.abs(b).max(), t


@pytest.mark.parametrize("mode", ["official", "keep"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_explicit_x_matches_float64_reference(mode, clip):
    """theta_ref != 0: float32 theta - theta_ref cancels here, but "official"/"keep" never form it."""
    theta0, grads = make_problem()
    tx = trac(optax.adam(1e-3), x_mode=mode)
    if clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    jt, js, state = run_jax(tx, theta0, grads)
    nt, ns = np_trac(theta0, grads, mode=mode, clip=clip)
    assert ns[-1] > 100 * ns[0]  # S actually moves over the sequence
    np.testing.assert_allclose(js, ns, rtol=2e-5)
    assert_close_to_f64(jt, nt, theta0, 2e-5, 2)
    assert isinstance(trac_state(state), TracState)


@pytest.mark.parametrize(
    "zero_ref,s_prev",
    [(True, 1e-8), (False, 1.0)],  # regimes where float32 theta - theta_ref does not cancel
)
def test_reconstruct_matches_float64_reference(zero_ref, s_prev):
    theta0, grads = make_problem(zero_ref=zero_ref)
    jt, js, _ = run_jax(trac(optax.adam(1e-3), s_prev=s_prev, x_mode="reconstruct"), theta0, grads)
    nt, ns = np_trac(theta0, grads, mode="official", s_prev=s_prev)
    np.testing.assert_allclose(js, ns, rtol=1e-4)
    assert_close_to_f64(jt, nt, theta0, 1e-4, 4)


def test_official_erases_x_when_scale_nonpositive():
    """Reference semantics: S <= 0 resets theta to theta_ref and x is lost ("official" and "reconstruct");
    "keep" keeps x and follows another trajectory."""
    # weak drift: S goes negative at step 2. theta_ref = 0 so float32 "reconstruct" keeps x exactly enough (with
    # a nonzero theta_ref the ~1e-10 displacement is below one ulp of theta and float32 x is lost)
    theta0, grads = make_problem(zero_ref=True, drift=0.3, noise=1.0)
    nt, ns = np_trac(theta0, grads, mode="official")
    assert ns[1] <= 0
    for mode in ("official", "reconstruct"):
        jt, js, _ = run_jax(trac(optax.adam(1e-3), x_mode=mode), theta0, grads)
        np.testing.assert_allclose(js, ns, rtol=1e-3)
        for t in np.nonzero(ns <= 0)[0]:
            np.testing.assert_array_equal(jt[t][0], theta0[0])
    _, ks = np_trac(theta0, grads, mode="keep")
    _, kjs, _ = run_jax(trac(optax.adam(1e-3), x_mode="keep"), theta0, grads)
    np.testing.assert_allclose(kjs, ks, rtol=1e-4)
    assert ks[-1] > 0 and not np.allclose(ks, ns)


@pytest.mark.parametrize("mode", ["official", "keep", "reconstruct"])
def test_first_step(mode):
    theta0, grads = make_problem(zero_ref=True)  # theta_ref = 0: the 1e-10 first step is representable
    params = {"w": jnp.asarray(theta0[0]), "b": jnp.asarray(theta0[1])}
    tx = trac(optax.adam(1e-3), x_mode=mode)
    state = tx.init(params)
    assert float(trac_scale(state)) == 0.0
    np.testing.assert_array_equal(state.theta_ref["w"], theta0[0])
    g = {"w": jnp.asarray(grads[0][0]), "b": jnp.asarray(grads[0][1])}
    u, state = tx.update(g, state, params)
    # h_1 = 0 (x_1 = 0), v = 0, sigma_j = beta_j * 1e-8  ->  erfi argument = beta_j exactly
    s1 = 1e-8 / sp.erfi(1 / np.sqrt(2)) * sp.erfi(BETAS).sum()
    np.testing.assert_allclose(float(trac_scale(state)), s1, rtol=1e-6)
    adam_u = -1e-3 * grads[0][0] / (np.abs(grads[0][0]) + 1e-8)
    new_w = np.asarray(optax.apply_updates(params, u)["w"])
    np.testing.assert_allclose(new_w - theta0[0], adam_u * s1, rtol=2e-5, atol=0)  # f32 bias corr.
    if mode == "reconstruct":
        assert state.x is None
    else:
        np.testing.assert_allclose(state.x["w"], adam_u, rtol=2e-5)
    assert int(state.count) == 1


def test_x_mode_names_and_deprecated_keep_x():
    params = {"w": jnp.ones((3,), jnp.float32)}
    with pytest.raises(ValueError, match="official, keep, reconstruct"):
        trac(optax.adam(1e-3), x_mode="paper")
    g = {"w": jnp.asarray([1.0, -2.0, 0.5], jnp.float32)}
    for keep_x, mode in ((True, "keep"), (False, "reconstruct")):
        a, b = trac(optax.sgd(0.1), keep_x=keep_x), trac(optax.sgd(0.1), x_mode=mode)
        sa, sb = a.init(params), b.init(params)
        for _ in range(30):
            ua, sa = a.update(g, sa, params)
            ub, sb = b.update(g, sb, params)
            np.testing.assert_array_equal(np.asarray(ua["w"]), np.asarray(ub["w"]))


def test_intervention_rejects_unknown_x_mode():
    from plasticine_jax.errors import ConfigError
    from plasticine_jax.interventions import trac as trac_iv

    assert trac_iv.Options().x_mode == "official"
    with pytest.raises(ConfigError, match=r"--trac\.x-mode .*official, keep, reconstruct"):
        trac_iv.make(trac_iv.Options(x_mode="paper"))


# ------------------------------------------------------------ shifting objective: the official algorithm

JUMP_D = 8


def jump_problem(seed, c_scale):
    rng = np.random.default_rng(seed)
    c = c_scale * rng.normal(size=JUMP_D)
    theta0 = (0.5 * rng.normal(size=JUMP_D)).astype(np.float32)
    return c, theta0


def run_jax_jump(mode, theta0, c, n1, lr):
    """theta -> 0.5 |theta - c_t|^2 with c_t = c for n1 steps, then -c for n1 steps (float32, jitted scan)."""
    tx = trac(optax.adam(lr), x_mode=mode)
    cj = jnp.asarray(c, jnp.float32)

    def step(carry, t):
        p, s = carry
        u, s = tx.update(p - jnp.where(t <= n1, cj, -cj), s, p)
        p = optax.apply_updates(p, u)
        return (p, s), (p, trac_scale(s))

    p0 = jnp.asarray(theta0)
    run = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), jnp.arange(1, 2 * n1 + 1)))
    _, (ps, ss) = run(p0)
    return np.asarray(ps, np.float64), np.asarray(ss, np.float64)


@pytest.mark.parametrize(
    "seed,c_scale,lr,n1,erased",
    [
        (0, 1.0, 3e-3, 100, False),  # S stays > 0 after the jump (x is only scaled by rho ~ 1 - eps/S)
        (6, 3.0, 1e-2, 150, True),  # S <= 0 soon after the jump: x is erased, theta = theta_ref from then on
    ],
)
def test_official_matches_float64_official_on_jumping_optimum(seed, c_scale, lr, n1, erased):
    """x_mode="official" in float32 follows a float64 run of the authors' algorithm (x reconstructed from theta
    every step) on a quadratic whose optimum jumps from c to -c; "keep" does not, and the literal float32
    reconstruction ("reconstruct", theta_ref != 0) is far less accurate.

    Tolerance: float32 TRAC is not reproducible to 1e-6 over hundreds of steps on this problem whatever the x
    handling: the rounding of its own float32 sigma/v state and of erfi (~1e-7) is amplified by the S feedback
    to 1e-5..1e-4 of |theta| after ~150 steps (an independent float32 NumPy simulation of the recursion shows the
    same), so the bound is 2e-4 of max|theta|, with the float64 run itself reproducible to ~1e-8 under a
    1-ulp perturbation of theta_0."""
    c, theta0 = jump_problem(seed, c_scale)

    def grad_fn(th, t):
        return [th[0] - (c if t <= n1 else -c)]

    nt, ns = np_trac([theta0], grad_fn, mode="official", lr=lr, n=2 * n1)
    want = np.stack([th[0] for th in nt])
    scale = np.abs(want).max()
    assert ns[n1 - 1] > 0.5  # TRAC has scaled up before the jump
    assert (ns[n1:] <= 0).any() == erased

    got, js = run_jax_jump("official", theta0, c, n1, lr)
    err = np.abs(got - want).max(axis=1) / scale
    assert err.max() < 2e-4, (err[:n1].max(), err[n1:].max())
    big = np.abs(ns) > 1e-2
    np.testing.assert_allclose(js[big], ns[big], rtol=2e-3)
    if erased:  # the official algorithm restarts from theta_ref: exactly theta_ref while S <= 0
        for t in np.nonzero(ns <= 0)[0]:
            assert (js[t] <= 0) == (ns[t] <= 0)
            np.testing.assert_array_equal(got[t], theta0)

    keep, _ = run_jax_jump("keep", theta0, c, n1, lr)
    keep_err = np.abs(keep - want).max(axis=1) / scale
    assert keep_err[n1:].max() > 1e-2  # "keep" is another algorithm: measurably off after the jump
    assert keep_err[n1:].max() > 50 * err[n1:].max()

    recon, _ = run_jax_jump("reconstruct", theta0, c, n1, lr)
    recon_err = np.abs(recon - want).max(axis=1) / scale
    assert recon_err.max() > 1e-1 and recon_err.max() > 100 * err.max()


def test_vmap_over_seeds_equals_unvmapped():
    probs = [make_problem(seed=s) for s in range(3)]
    tx = trac(optax.adam(1e-3))
    params = {
        "w": jnp.stack([jnp.asarray(p[0][0]) for p in probs]),
        "b": jnp.stack([jnp.asarray(p[0][1]) for p in probs]),
    }

    def run(params, gw, gb):
        def step(carry, g):
            params, state = carry
            u, state = tx.update({"w": g[0], "b": g[1]}, state, params)
            params = optax.apply_updates(params, u)
            return (params, state), trac_scale(state)

        (params, _), scales = jax.lax.scan(step, (params, tx.init(params)), (gw, gb))
        return params, scales

    gw = jnp.stack([jnp.stack([jnp.asarray(g[0]) for g in p[1]]) for p in probs])
    gb = jnp.stack([jnp.stack([jnp.asarray(g[1]) for g in p[1]]) for p in probs])
    vparams, vscales = jax.jit(jax.vmap(run))(params, gw, gb)
    for i in range(3):
        p_i = jax.tree.map(lambda a, i=i: a[i], params)
        sparams, sscales = jax.jit(run)(p_i, gw[i], gb[i])
        np.testing.assert_allclose(vscales[i], sscales, rtol=1e-6)
        np.testing.assert_allclose(vparams["w"][i], sparams["w"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(vparams["b"][i], sparams["b"], rtol=1e-6, atol=1e-7)
    assert not np.allclose(vscales[0], vscales[1])


def test_scale_stays_finite_under_consistent_gradients():
    """Same-signed h for many steps drives sigma/sqrt(2v) past erfi's float32 range; S must stay finite."""
    params = {"w": jnp.ones((4,), jnp.float32)}
    tx = trac(optax.sgd(1e-2), s_prev=1e-8)
    state = tx.init(params)

    def step(carry, _):
        params, state = carry
        u, state = tx.update({"w": jnp.ones((4,), jnp.float32)}, state, params)
        return (optax.apply_updates(params, u), state), trac_scale(state)

    (_, state), scales = jax.jit(lambda p, s: jax.lax.scan(step, (p, s), None, length=400))(params, state)
    scales = np.asarray(scales)
    assert np.all(np.isfinite(scales)) and scales[-1] > 1e20
