"""Regenerative regularisation / L2-Init (reference §3.8, §6.2 item 5): the init hook stores theta_0; the loss
term is lambda*||theta - theta_0||^2 (gradient 2 lambda (theta - theta_0)), or the reference's unsquared
lambda*||theta - theta_0|| with a NaN-safe gradient lambda (theta - theta_0)/||theta - theta_0|| (0 at theta_0)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.algos.state import Unit
from plasticine_jax.interventions import regenerative
from plasticine_jax.interventions.base import compose, default_hparams
from plasticine_jax.interventions.registry import parse_list, resolve


def _trees():
    rng = np.random.default_rng(0)
    theta0 = {"dense": {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=(3,))}, "s": rng.normal(size=())}
    delta = jax.tree.map(lambda a: rng.normal(size=np.shape(a)) * 0.1, theta0)
    theta = jax.tree.map(lambda a, d: a + d, theta0, delta)
    f32 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)  # noqa: E731
    return f32(theta0), f32(theta)


def _iv_and_istate(theta0, squared=True):
    iv = compose(resolve(["regenerative"], {"regenerative": regenerative.Options(squared=squared)}))
    assert iv.names == ("regenerative",)
    unit = Unit(theta0, {}, None, {}, {})
    unit = iv.init(None, unit, jax.random.PRNGKey(0))
    return iv, unit.istate  # the composed loss hook reads its part's state, istate["regenerative"]


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def test_alias_defaults_and_theta0_stored():
    assert parse_list("rr") == ["regenerative"]
    theta0, _ = _trees()
    iv, istate = _iv_and_istate(theta0)
    assert default_hparams(iv) == {"regenerative.weight": 0.01}
    assert regenerative.Options().squared is True
    np.testing.assert_array_equal(_flat(istate["regenerative"]["theta0"]), _flat(theta0))


@pytest.mark.parametrize("lam", [0.01, 0.7])
def test_squared_value_and_gradient(lam):
    theta0, theta = _trees()
    iv, istate = _iv_and_istate(theta0)
    hp = {"regenerative.weight": jnp.float32(lam)}
    val, grad = jax.jit(jax.value_and_grad(lambda p: iv.loss(None, p, istate, hp)))(theta)
    d = _flat(theta) - _flat(theta0)
    np.testing.assert_allclose(float(val), lam * np.sum(d**2), rtol=1e-5)
    np.testing.assert_allclose(_flat(grad), 2 * lam * d, rtol=1e-5, atol=1e-8)
    _, g0 = jax.value_and_grad(lambda p: iv.loss(None, p, istate, hp))(theta0)
    assert np.all(_flat(g0) == 0.0)


def test_unsquared_value_gradient_and_nan_safe_at_theta0():
    theta0, theta = _trees()
    iv, istate = _iv_and_istate(theta0, squared=False)
    lam = 0.01
    hp = {"regenerative.weight": jnp.float32(lam)}
    f = jax.jit(jax.value_and_grad(lambda p: iv.loss(None, p, istate, hp)))
    val, grad = f(theta)
    d = _flat(theta) - _flat(theta0)
    n = np.linalg.norm(d)
    np.testing.assert_allclose(float(val), lam * n, rtol=1e-5)
    np.testing.assert_allclose(_flat(grad), lam * d / n, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(_flat(grad)), lam, rtol=1e-5)  # constant magnitude lambda
    val0, grad0 = f(theta0)  # theta = theta_0 exactly (the first update): value 0, gradient 0, no NaN
    assert float(val0) == 0.0
    g0 = _flat(grad0)
    assert np.all(np.isfinite(g0)) and np.all(g0 == 0.0)


def test_weight_is_vmappable():
    theta0, theta = _trees()
    iv, istate = _iv_and_istate(theta0)
    lams = jnp.asarray([0.0, 0.01, 1.0], jnp.float32)
    vals = jax.vmap(lambda lam: iv.loss(None, theta, istate, {"regenerative.weight": lam}))(lams)
    sq = np.sum((_flat(theta) - _flat(theta0)) ** 2)
    np.testing.assert_allclose(np.asarray(vals), np.asarray(lams) * sq, rtol=1e-5)


@pytest.mark.parametrize("names", [["regenerative"], ["regenerative", "parseval"]])
def test_learner_adds_the_loss_term_to_a_unit(names):
    """Through the learner's unit machinery (init hook stores theta_0 in ``unit.istate``, the loss hook is added
    to the unit's loss): the added term is lambda * ||theta - theta_0||^2 (+ the Parseval term when composed),
    for regenerative alone as well as composed."""
    from plasticine_jax.algos import learner as L
    from plasticine_jax.interventions import parseval
    from plasticine_jax.nets import NetConfig, make_network

    net = make_network(NetConfig(widths=(8, 8), activation="relu"), (4,), 3, False)
    iv = compose(resolve(names))
    hp = {k: jnp.float32(v) for k, v in default_hparams(iv).items()}
    spec = L.make_unit_spec("agent", net, iv, hp, learning_rate=lambda h: 1e-3, max_grad_norm=0.5, adam_eps=1e-5,
                            num_updates=10, steps_per_update=4, env_steps_per_update=64)
    unit = L.init_unit(spec, iv, jax.random.PRNGKey(0), hp)
    theta0 = net.init(jax.random.PRNGKey(0))["params"]
    np.testing.assert_array_equal(_flat(unit.istate["regenerative"]["theta0"]), _flat(theta0))
    rng = np.random.default_rng(3)
    theta = jax.tree.map(lambda a: a + jnp.asarray(rng.normal(size=a.shape) * 0.1, jnp.float32), unit.params)
    loss = L.loss_with_interventions(spec, iv, lambda p, u: (jnp.float32(1.5), {"losses/base": jnp.float32(1.5)}))
    val, aux = jax.jit(loss)(theta, unit)
    want = 0.01 * np.sum((_flat(theta) - _flat(theta0)) ** 2)
    if "parseval" in names:
        want += 1e-3 * sum(parseval.parseval_penalty(theta[t][f"dense_{i}"]["kernel"], 1.0)
                           for t in ("actor_torso", "critic_torso") for i in range(2))
    np.testing.assert_allclose(float(aux["losses/intervention_loss"]), want, rtol=1e-5)
    np.testing.assert_allclose(float(val), 1.5 + want, rtol=1e-5)
