"""Parseval regularisation (reference §3.9, §6.2 item 6): lambda * sum_W ||W W^T - s I||_F^2 with W = [out, in]
(conv kernels as [out, kh*kw*in]); zero for W with orthonormal rows scaled to W W^T = s I; gradient checked by
float64 central differences (in a subprocess, so x64 never leaks into other tests); torso layers only (the
kernels come from the network's declared layout, ``Network.torso_kernel_paths``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.interventions import parseval
from plasticine_jax.interventions.base import Context, compose, default_hparams
from plasticine_jax.interventions.parseval import parseval_penalty
from plasticine_jax.interventions.registry import parse_list, resolve
from plasticine_jax.nets import NetConfig, make_network


def _np_penalty(kernel, s):
    w = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1]).T  # [out, in]
    return np.sum((w @ w.T - s * np.eye(w.shape[0])) ** 2)


def _scaled_orthonormal_rows(shape, s, seed=0):
    """A flax kernel [..., in, out] whose W = [out, prod(...)*in] has W W^T = s I (numpy QR)."""
    fan_in, out = int(np.prod(shape[:-1])), shape[-1]
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(fan_in, out)))  # orthonormal columns
    return (np.sqrt(s) * q).reshape(shape).astype(np.float32)


def test_alias_and_defaults():
    assert parse_list("pr") == ["parseval"]
    iv = compose(resolve(["parseval"]))
    assert iv.names == ("parseval",)
    assert default_hparams(iv) == {"parseval.weight": 1e-3, "parseval.s": 1.0}
    assert parseval.Options().layers == "all"


@pytest.mark.parametrize("shape", [(7, 4), (4, 4), (3, 3, 2, 5)])
@pytest.mark.parametrize("s", [1.0, 2.5])
def test_penalty_zero_for_scaled_orthonormal_rows(shape, s):
    k = _scaled_orthonormal_rows(shape, s)
    w = k.reshape(-1, shape[-1]).T
    np.testing.assert_allclose(w @ w.T, s * np.eye(shape[-1]), atol=1e-5)
    assert float(parseval_penalty(jnp.asarray(k), jnp.float32(s))) < 1e-9
    # the wrong s (or a perturbed W) is penalised, with the NumPy value
    assert float(parseval_penalty(jnp.asarray(k), jnp.float32(s + 1.0))) > 0.5
    k2 = k + np.random.default_rng(1).normal(size=shape).astype(np.float32) * 0.3
    np.testing.assert_allclose(float(parseval_penalty(jnp.asarray(k2), jnp.float32(s))), _np_penalty(k2, s),
                               rtol=1e-5)


def test_gradient_matches_closed_form_float32():
    """d/dW ||W W^T - sI||^2 = 4 (W W^T - sI) W, in kernel coordinates."""
    k = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32) * 0.5
    g = np.asarray(jax.grad(parseval_penalty)(jnp.asarray(k), jnp.float32(1.5)), np.float64)
    w = k.astype(np.float64).T
    want = (4 * (w @ w.T - 1.5 * np.eye(4)) @ w).T
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


_FD_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from plasticine_jax.interventions.base import Context
    from plasticine_jax.interventions.registry import resolve
    from plasticine_jax.interventions.parseval import parseval_penalty
    from plasticine_jax.nets import NetConfig, make_network

    # a tiny shared IMPALA torso (one conv sequence: 5 conv kernels, 4-d) and a dense layer, float64 params
    net = make_network(NetConfig(torso="impala_cnn", widths=(5,), activation="relu", shared=True, channels=(2,)),
                       (4, 4, 1), 2, False)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.4), net.param_shapes)
    assert params["torso"]["seq0_conv"]["kernel"].dtype == jnp.float64
    assert params["torso"]["seq0_conv"]["kernel"].shape == (3, 3, 1, 2)
    (iv,) = resolve(["parseval"])
    ctx = Context(net, num_updates=1, steps_per_update=1, env_steps_per_update=1)
    hp = {"parseval.weight": jnp.asarray(0.3), "parseval.s": jnp.asarray(1.7)}
    loss = jax.jit(lambda p: iv.loss(ctx, p, None, hp))
    grad = jax.grad(loss)(params)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    gflat, _ = jax.flatten_util.ravel_pytree(grad)
    h = 1e-6
    fd = np.array([(loss(unravel(flat.at[i].add(h))) - loss(unravel(flat.at[i].add(-h)))) / (2 * h)
                   for i in range(flat.size)])
    np.testing.assert_allclose(np.asarray(gflat), fd, rtol=1e-6, atol=1e-8)
    # the heads and biases get no gradient; every torso kernel does
    for head in ("policy_head", "value_head"):
        assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grad[head]))
    for layer, leaves in grad["torso"].items():
        if "kernel" in leaves:
            assert np.abs(np.asarray(leaves["kernel"])).min() > 0, layer
        assert np.all(np.asarray(leaves["bias"]) == 0), layer
    assert sum("kernel" in v for v in grad["torso"].values()) == 6  # seq0_conv, 4 res-block convs, dense_0
    # bare penalty too
    k = jnp.asarray(rng.normal(size=(4, 3)))
    g = jax.grad(parseval_penalty)(k, 0.8)
    fdk = np.zeros((4, 3))
    for i in range(4):
        for j in range(3):
            e = jnp.zeros((4, 3)).at[i, j].set(h)
            fdk[i, j] = (parseval_penalty(k + e, 0.8) - parseval_penalty(k - e, 0.8)) / (2 * h)
    np.testing.assert_allclose(np.asarray(g), fdk, rtol=1e-6, atol=1e-8)
    print("FD-OK", flat.size)
    """
)


def test_gradient_matches_float64_central_differences():
    import jax.flatten_util  # noqa: F401  (the script uses it; make sure it exists here)

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", "import jax.flatten_util\n" + _FD_SCRIPT], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    # 235 params: conv 3*3*1*2+2, four res convs 3*3*2*2+2, dense 8*5+5, heads 5*2+2 and 5*1+1
    assert "FD-OK 235" in res.stdout
    assert not jax.config.jax_enable_x64  # never enabled here


def _net(torso: str):
    if torso == "mlp":
        return make_network(NetConfig(torso="mlp", widths=(8, 6, 5), activation="relu"), (4,), 2, False)
    return make_network(NetConfig(torso="nature_cnn", widths=(16, 12), activation="relu", shared=True),
                        (36, 36, 1), 2, False)


def _ctx(net):
    return Context(net, num_updates=10, steps_per_update=4, env_steps_per_update=64)


def _params(torso: str):
    net = _net(torso)
    return net, net.init(jax.random.PRNGKey(0))["params"]


def test_which_layers_all_vs_last():
    net = _net("mlp")
    all_paths = set(net.torso_kernel_paths())
    assert all_paths == {(t, f"dense_{i}", "kernel") for t in ("actor_torso", "critic_torso") for i in range(3)}
    assert set(net.torso_kernel_paths(last_only=True)) == {("actor_torso", "dense_2", "kernel"),
                                                           ("critic_torso", "dense_2", "kernel")}
    net = _net("nature")
    assert set(net.torso_kernel_paths()) == {("torso", n, "kernel")
                                             for n in ("conv_0", "conv_1", "conv_2", "dense_0", "dense_1")}
    assert net.torso_kernel_paths(last_only=True) == [("torso", "dense_1", "kernel")]
    # with LayerNorm inserted the LN params are not kernels: the same kernels are regularised
    ln = make_network(NetConfig(torso="mlp", widths=(8, 6, 5), activation="relu", layer_norm=True), (4,), 2, False)
    assert set(ln.torso_kernel_paths()) == {(t, f"dense_{i}", "kernel") for t in ("actor_torso", "critic_torso")
                                            for i in range(3)}


@pytest.mark.parametrize("layers", ["all", "last"])
def test_loss_hook_sums_regularised_layers_only(layers):
    net, p = _params("mlp")
    ctx = _ctx(net)
    iv = compose(resolve(["parseval"], {"parseval": parseval.Options(layers=layers)}))
    # orthogonal sqrt(2) init gives W W^T = 2 I exactly for wide-enough layers: use another s and perturb
    rng = np.random.default_rng(4)
    p = jax.tree.map(lambda a: a + rng.normal(size=a.shape).astype(np.float32) * 0.1, p)
    hp = {"parseval.weight": jnp.float32(0.01), "parseval.s": jnp.float32(1.3)}
    val = float(jax.jit(lambda q: iv.loss(ctx, q, {}, hp))(p))
    idx = range(3) if layers == "all" else [2]
    want = 0.01 * sum(_np_penalty(p[t][f"dense_{i}"]["kernel"], 1.3) for t in ("actor_torso", "critic_torso")
                      for i in idx)
    assert want > 1e-3
    np.testing.assert_allclose(val, want, rtol=1e-5)
    # heads (and, for "last", earlier layers) never contribute
    p2 = jax.tree.map(lambda a: a, p)
    p2["policy_head"] = jax.tree.map(lambda a: a * 5.0 + 1.0, p["policy_head"])
    p2["value_head"] = jax.tree.map(lambda a: a * 5.0 + 1.0, p["value_head"])
    if layers == "last":
        scaled = jax.tree.map(lambda a: a * 3.0, p["actor_torso"]["dense_0"])
        p2["actor_torso"] = {**p["actor_torso"], "dense_0": scaled}
    np.testing.assert_allclose(float(iv.loss(ctx, p2, {}, hp)), val, rtol=1e-6)
