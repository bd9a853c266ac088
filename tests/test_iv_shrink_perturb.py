"""Shrink & Perturb (reference §3.1, §6.2 item 11): theta' = lambda*theta + (1-lambda)*phi for each choice of phi
(fresh init sample, theta_0, or the paper's Gaussian noise), soft vs hard schedule, vmappable coefficient, and
the hook under vmap over seeds and under jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plasticine_jax.algos.state import Unit
from plasticine_jax.interventions import shrink_perturb as snp
from plasticine_jax.interventions.base import Context, build_optimizer, default_hparams
from plasticine_jax.nets import NetConfig, make_network

COEF = 0.7  # far from 1 so every term of the formula is visible
NUM_UPDATES = 10
NET = make_network(NetConfig(widths=(8, 8), activation="relu"), (4,), 3, False)
# snp adds nothing to the optimizer chain, so one (compiled) Adam step serves every test
TX = build_optimizer(snp.make(snp.Options()), {}, 1e-2, 0.5, 1e-5, NET)
CTX = Context(NET, num_updates=NUM_UPDATES, steps_per_update=4, env_steps_per_update=64, tx=TX)


def _batch(key, n=32):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return (jax.random.normal(k1, (n, 4)), jax.random.randint(k2, (n,), 0, 3), jax.random.normal(k3, (n,)),
            jax.random.normal(k4, (n,)))


def _loss(params, net_state, batch):
    obs, act, adv, ret = batch
    logits, value = NET.apply(params, net_state, obs)
    logp = jax.nn.log_softmax(logits)
    return -(logp[jnp.arange(obs.shape[0]), act] * adv).mean() + 0.5 * ((value - ret) ** 2).mean()


def _learner(iv, seed=0, steps=3):
    """Init, the hook's init, then ``steps`` real Adam steps so theta != theta_0 and the moments are non-zero."""
    key = jax.random.PRNGKey(seed)
    variables = NET.init(key)
    params = variables.pop("params")
    hp = {k: jnp.float32(v) for k, v in default_hparams(iv).items()}
    assert set(hp) == {"shrink_perturb.coef", "shrink_perturb.sigma"}
    learner = Unit(params, variables, TX.init(params), {}, hp)
    if iv.init is not None:
        learner = iv.init(CTX, learner, jax.random.PRNGKey(99))
    for i in range(steps):
        learner = _step(learner, jax.random.PRNGKey(100 + i))
    return learner


@jax.jit
def _step(learner, key):
    grads = jax.grad(_loss)(learner.params, learner.net_state, _batch(key))
    updates, opt_state = TX.update(grads, learner.opt_state, learner.params)
    return learner.replace(params=optax.apply_updates(learner.params, updates), opt_state=opt_state)


def _formula(theta, phi, coef):
    """lambda*theta + (1-lambda)*phi, computed independently in float32 NumPy."""
    c = np.float32(coef)
    return jax.tree.map(lambda t, f: c * np.asarray(t) + (np.float32(1) - c) * np.asarray(f), theta, phi)


def _noise(key, params):
    """The documented draw: one N(0, 1) sample per leaf (flatten order), keys = split(key, #leaves)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [np.asarray(jax.random.normal(k, x.shape, x.dtype))
                                        for k, x in zip(keys, leaves, strict=True)])


def _close(got, want, rtol=1e-6, atol=1e-7):
    jax.tree.map(lambda g, w: np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol), got,
                 want)


def _same(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def _differs(a, b):
    return any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a),
                                                                                  jax.tree.leaves(b), strict=True))


def test_fresh_target_interpolates_toward_a_new_init_sample():
    iv = snp.make(snp.Options(coef=COEF, target="fresh"))
    learner = _learner(iv)
    key = jax.random.PRNGKey(7)
    out = iv.after_step(CTX, learner, key)
    phi = CTX.fresh_params(key)
    _close(out.params, _formula(learner.params, phi, COEF))
    assert _differs(phi, NET.init(jax.random.PRNGKey(0))["params"])  # phi is a new sample, not theta_0
    _same(out.opt_state, learner.opt_state)  # optimizer untouched
    # another key -> another fresh sample -> another result
    assert _differs(iv.after_step(CTX, learner, jax.random.PRNGKey(8)).params, out.params)


def test_init_target_pulls_toward_recorded_theta0():
    iv = snp.make(snp.Options(coef=COEF, target="init"))
    theta0 = NET.init(jax.random.PRNGKey(0))["params"]
    learner = _learner(iv)
    _same(learner.istate["shrink_perturb"]["theta0"], theta0)  # recorded by init, before training
    assert _differs(learner.params, theta0)
    out = iv.after_step(CTX, learner, jax.random.PRNGKey(7))
    _close(out.params, _formula(learner.params, theta0, COEF))
    # deterministic: the key does not matter
    _same(iv.after_step(CTX, learner, jax.random.PRNGKey(8)).params, out.params)
    _same(out.istate, learner.istate)


def test_noise_target_adds_sigma_times_the_documented_normal_draw():
    sigma = 0.05
    iv = snp.make(snp.Options(coef=COEF, sigma=sigma, target="noise"))
    learner = _learner(iv)
    key = jax.random.PRNGKey(7)
    out = iv.after_step(CTX, learner, key)
    eps = _noise(key, learner.params)
    want = jax.tree.map(lambda t, e: np.float32(COEF) * np.asarray(t) + np.float32(sigma) * e, learner.params, eps)
    _close(out.params, want)


def test_soft_mode_fires_after_every_step_only():
    iv = snp.make(snp.Options(coef=COEF, mode="soft"))
    assert iv.after_step is not None and iv.after_update is None


def test_hard_mode_fires_only_on_due_updates():
    iv = snp.make(snp.Options(coef=COEF, mode="hard", frequency=3))
    assert iv.after_step is None and iv.after_update is not None
    learner = _learner(iv)
    key = jax.random.PRNGKey(5)
    acts = NET.apply_with_activations(learner.params, learner.net_state, jnp.zeros((4, 4)))[1]
    want = _formula(learner.params, CTX.fresh_params(key), COEF)
    hook = jax.jit(lambda lr, idx: iv.after_update(CTX, lr, key, idx, acts))  # idx traced, as a scan index
    fired = []
    for idx in range(NUM_UPDATES):
        out = hook(learner, jnp.int32(idx))
        if _differs(out.params, learner.params):
            fired.append(idx)
            _close(out.params, want)
        else:
            _same(out, learner)
    assert fired == [2, 5, 8]  # updates 3, 6, 9 (1-based)


def test_coef_is_vmappable():
    iv = snp.make(snp.Options(target="fresh"))
    learner = _learner(iv)
    key = jax.random.PRNGKey(7)
    coefs = jnp.array([0.0, 0.5, 0.9, 0.999999], jnp.float32)

    def one(c):
        return iv.after_step(CTX, learner.replace(hp={**learner.hp, "shrink_perturb.coef": c}), key).params

    out = jax.vmap(one)(coefs)
    phi = CTX.fresh_params(key)
    results = [jax.tree.map(lambda x, i=i: x[i], out) for i in range(4)]
    for c, r in zip(np.asarray(coefs), results, strict=True):
        _close(r, _formula(learner.params, phi, c))
    _close(results[0], phi)  # lambda = 0: a pure re-init
    for i in range(4):
        for j in range(i + 1, 4):
            assert _differs(results[i], results[j])


@pytest.mark.parametrize("target", ["fresh", "noise"])
def test_vmap_over_seeds_and_jit(target):
    iv = snp.make(snp.Options(coef=COEF, target=target))
    learners = [_learner(iv, seed=s, steps=1) for s in (0, 1)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *learners)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    out = jax.jit(jax.vmap(lambda lr, k: iv.after_step(CTX, lr, k)))(stacked, keys)
    single = jax.jit(lambda lr, k: iv.after_step(CTX, lr, k))
    for i in range(2):
        got = jax.tree.map(lambda x, i=i: x[i], out.params)
        eager = iv.after_step(CTX, learners[i], keys[i]).params
        phi = CTX.fresh_params(keys[i]) if target == "fresh" else None
        want = (_formula(learners[i].params, phi, COEF) if target == "fresh" else
                jax.tree.map(lambda t, e: np.float32(COEF) * np.asarray(t) + np.float32(0.01) * e,
                             learners[i].params, _noise(keys[i], learners[i].params)))
        _close(got, want)
        _close(single(learners[i], keys[i]).params, eager)
    # same start, different keys -> different perturbations
    same_start = jax.vmap(lambda k: iv.after_step(CTX, learners[0], k).params)(keys)
    assert _differs(jax.tree.map(lambda x: x[0], same_start), jax.tree.map(lambda x: x[1], same_start))
