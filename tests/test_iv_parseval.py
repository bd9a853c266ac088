"""Parseval regularisation (reference §3.9, §6.2 item 6): lambda * sum_W ||W W^T - s I||_F^2 with W = [out, in]
(conv kernels as [out, kh*kw*in]); zero for W with orthonormal rows scaled to W W^T = s I; gradient checked by
float64 central differences (in a subprocess, so x64 never leaks into other tests); torso layers only."""

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
from plasticine_jax.interventions.base import compose, default_hparams
from plasticine_jax.interventions.parseval import parseval_penalty, regularised_kernels
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
    ivs = compose(resolve(["parseval"]))
    assert default_hparams(ivs) == {"parseval.weight": 1e-3, "parseval.s": 1.0}
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
    from plasticine_jax.interventions.registry import resolve
    from plasticine_jax.interventions.parseval import parseval_penalty

    rng = np.random.default_rng(0)
    params = {
        "torso": {"conv_0": {"kernel": rng.normal(size=(2, 2, 2, 3)), "bias": rng.normal(size=(3,))},
                  "dense_0": {"kernel": rng.normal(size=(12, 5)) * 0.4, "bias": rng.normal(size=(5,))}},
        "policy_head": {"main": {"kernel": rng.normal(size=(5, 2)), "bias": np.zeros(2)}},
    }
    params = jax.tree.map(jnp.asarray, params)
    assert params["torso"]["conv_0"]["kernel"].dtype == jnp.float64
    (iv,) = resolve(["parseval"])
    hp = {"parseval.weight": jnp.asarray(0.3), "parseval.s": jnp.asarray(1.7)}
    loss = jax.jit(lambda p: iv.loss(None, p, None, hp))
    grad = jax.grad(loss)(params)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    gflat, _ = jax.flatten_util.ravel_pytree(grad)
    h = 1e-6
    fd = np.array([(loss(unravel(flat.at[i].add(h))) - loss(unravel(flat.at[i].add(-h)))) / (2 * h)
                   for i in range(flat.size)])
    np.testing.assert_allclose(np.asarray(gflat), fd, rtol=1e-6, atol=1e-8)
    # the head and biases get no gradient; the torso kernels do
    assert np.all(np.asarray(grad["policy_head"]["main"]["kernel"]) == 0)
    assert np.all(np.asarray(grad["torso"]["dense_0"]["bias"]) == 0)
    assert np.abs(np.asarray(grad["torso"]["conv_0"]["kernel"])).min() > 0
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
    assert "FD-OK 104" in res.stdout
    assert not jax.config.jax_enable_x64  # never enabled here


def _params(torso: str):
    if torso == "mlp":
        net = make_network(NetConfig(torso="mlp", widths=(8, 6, 5), activation="relu"), (4,), 2, False)
    else:
        net = make_network(NetConfig(torso="nature_cnn", widths=(16, 12), activation="relu", shared=True),
                           (36, 36, 1), 2, False)
    return net.init(jax.random.PRNGKey(0))["params"]


def test_which_layers_all_vs_last():
    p = _params("mlp")
    all_paths = set(regularised_kernels(p, "all"))
    assert all_paths == {(t, f"dense_{i}", "kernel") for t in ("actor_torso", "critic_torso") for i in range(3)}
    assert set(regularised_kernels(p, "last")) == {("actor_torso", "dense_2", "kernel"),
                                                    ("critic_torso", "dense_2", "kernel")}
    p = _params("nature")
    assert set(regularised_kernels(p, "all")) == {("torso", n, "kernel")
                                                   for n in ("conv_0", "conv_1", "conv_2", "dense_0", "dense_1")}
    assert regularised_kernels(p, "last") == [("torso", "dense_1", "kernel")]


@pytest.mark.parametrize("layers", ["all", "last"])
def test_loss_hook_sums_regularised_layers_only(layers):
    p = _params("mlp")
    (iv,) = compose(resolve(["parseval"], {"parseval": parseval.Options(layers=layers)}))
    # orthogonal sqrt(2) init gives W W^T = 2 I exactly for wide-enough layers: use another s and perturb
    rng = np.random.default_rng(4)
    p = jax.tree.map(lambda a: a + rng.normal(size=a.shape).astype(np.float32) * 0.1, p)
    hp = {"parseval.weight": jnp.float32(0.01), "parseval.s": jnp.float32(1.3)}
    val = float(jax.jit(lambda q: iv.loss(None, q, None, hp))(p))
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
    np.testing.assert_allclose(float(iv.loss(None, p2, None, hp)), val, rtol=1e-6)
