"""Coupled L2 (``l2n``, reference §3.7, §0.1, §6.1 item 6): clip the gradient by global norm, add wd*theta,
then Adam, then -lr -- torch's Adam(weight_decay), not AdamW and not L2-before-clipping. Checked against an
independent float64 NumPy Adam over several steps, for several weight decays at once under vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from plasticine_jax.interventions import l2
from plasticine_jax.interventions.base import build_optimizer, compose, default_hparams
from plasticine_jax.interventions.registry import parse_list, resolve

LR, MAX_NORM, EPS, B1, B2 = 0.05, 0.5, 1e-5, 0.9, 0.999
SHAPES = {"w": (4, 3), "b": (3,)}


def _problem():
    rng = np.random.default_rng(0)
    theta = {k: rng.normal(size=s) * 2.0 for k, s in SHAPES.items()}
    # gradient norms: above, below, far above the clip threshold
    grads = []
    for scale in (3.0, 0.05, 40.0, 0.8):
        g = {k: rng.normal(size=s) for k, s in SHAPES.items()}
        n = np.sqrt(sum(np.sum(v**2) for v in g.values()))
        grads.append({k: v * scale / n for k, v in g.items()})
    return theta, grads


def _np_run(theta, grads, wd, variant="coupled"):
    """float64 reference. coupled: clip(g)+wd*theta -> Adam; adamw: Adam(clip g) + wd*theta decoupled;
    preclip: clip(g + wd*theta) -> Adam."""
    theta = {k: v.copy() for k, v in theta.items()}
    m = {k: np.zeros_like(v) for k, v in theta.items()}
    v2 = {k: np.zeros_like(v) for k, v in theta.items()}
    for t, g in enumerate(grads, start=1):
        if variant == "preclip":
            g = {k: g[k] + wd * theta[k] for k in g}
        norm = np.sqrt(sum(np.sum(x**2) for x in g.values()))
        factor = min(1.0, MAX_NORM / norm)
        g = {k: x * factor for k, x in g.items()}
        if variant == "coupled":
            g = {k: g[k] + wd * theta[k] for k in g}
        for k in theta:
            m[k] = B1 * m[k] + (1 - B1) * g[k]
            v2[k] = B2 * v2[k] + (1 - B2) * g[k] ** 2
            upd = (m[k] / (1 - B1**t)) / (np.sqrt(v2[k] / (1 - B2**t)) + EPS)
            if variant == "adamw":
                upd = upd + wd * theta[k]
            theta[k] = theta[k] - LR * upd
    return theta


def _jax_run(theta, grads, wd):
    iv = compose(resolve(["l2"]))
    tx = build_optimizer(iv, {"l2.weight_decay": wd}, LR, MAX_NORM, EPS, None)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), theta)
    state = tx.init(params)
    for g in grads:
        upd, state = tx.update(jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), g), state, params)
        params = optax.apply_updates(params, upd)
    return params, state


def test_alias_hparam_and_chain_layout():
    assert parse_list("l2n") == ["l2"]
    ivs = compose(resolve(["l2"]))
    assert default_hparams(ivs) == {"l2.weight_decay": 1e-3}
    assert default_hparams(compose(resolve(["l2"], {"l2": l2.Options(weight_decay=0.05)}))) == {
        "l2.weight_decay": 0.05}
    tx = build_optimizer(ivs, {"l2.weight_decay": jnp.float32(1e-3)}, LR, MAX_NORM, EPS, None)
    assert list(tx.init({"w": jnp.zeros(2)}).keys()) == ["clip", "grad", "base"]


def test_steps_equal_clip_then_coupled_l2_then_adam_under_vmap():
    theta, grads = _problem()
    wds = np.array([0.0, 1e-3, 0.3, 2.0], np.float32)
    params, _ = jax.jit(jax.vmap(lambda wd: _jax_run(theta, grads, wd)))(jnp.asarray(wds))
    for i, wd in enumerate(wds):
        want = _np_run(theta, grads, float(wd))
        for k in SHAPES:
            np.testing.assert_allclose(np.asarray(params[k][i]), want[k], rtol=2e-5, atol=2e-6, err_msg=(wd, k))
    # the alternatives are clearly different at wd = 2.0 (so the check above discriminates)
    got = {k: np.asarray(params[k][3]) for k in SHAPES}
    for variant in ("adamw", "preclip"):
        alt = _np_run(theta, grads, 2.0, variant)
        diff = max(np.abs(got[k] - alt[k]).max() for k in SHAPES)
        assert diff > 1e-2, (variant, diff)


def test_single_step_against_optax_adam_on_modified_gradient():
    theta, grads = _problem()
    wd = 0.3
    params, _ = _jax_run(theta, grads[:1], jnp.float32(wd))
    g = grads[0]
    norm = np.sqrt(sum(np.sum(x**2) for x in g.values()))
    g_mod = {k: jnp.asarray(g[k] * MAX_NORM / norm + wd * theta[k], jnp.float32) for k in g}
    adam = optax.adam(LR, b1=B1, b2=B2, eps=EPS)
    p0 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), theta)
    upd, _ = adam.update(g_mod, adam.init(p0), p0)
    want = optax.apply_updates(p0, upd)
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(params[k]), np.asarray(want[k]), rtol=1e-6, atol=1e-7)


def test_trainer_exposes_weight_decay_as_vmappable_hparam():
    from plasticine_jax.algos.ppo import make_train
    from plasticine_jax.algos.ppo_config import PRESETS

    trainer = make_train(PRESETS["cleanrl-cartpole"], "gymnax:CartPole-v1", 4096, resolve(["l2"]))
    assert trainer.default_hparams()["l2.weight_decay"] == 1e-3
    hp = trainer.init(jax.random.PRNGKey(0), {"l2.weight_decay": 0.25}).units["agent"].hp
    assert hp["l2.weight_decay"].dtype == jnp.float32 and float(hp["l2.weight_decay"]) == 0.25
