"""CReLU (``ca``) and Deep Fourier Features (``dff``), reference §3.10: every hidden activation becomes
concat(relu x, relu -x) / concat(sin x, cos x), doubling its width; producing layers keep their width, so the
next layer's fan-in (and the heads') doubles. Checked against NumPy forward passes for an MLP and Nature CNN."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from plasticine_jax.interventions.base import apply_net_transforms, compose
from plasticine_jax.interventions.registry import parse_list, resolve
from plasticine_jax.nets import NetConfig, make_network

NP_ACT = {
    "crelu": lambda x: np.concatenate([np.maximum(x, 0.0), np.maximum(-x, 0.0)], axis=-1),
    "dff": lambda x: np.concatenate([np.sin(x), np.cos(x)], axis=-1),
}
ACTIONS = 3


def _network(name: str, cfg: NetConfig, obs_shape):
    iv = compose(resolve([name]))
    assert iv.activation == name
    cfg = apply_net_transforms(cfg, iv)
    assert cfg.activation == name
    return make_network(cfg, obs_shape, ACTIONS, continuous=False)


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _np_conv_valid(x, kernel, bias, stride):
    """NHWC 'VALID' convolution with a [kh, kw, in, out] kernel, written with sliding windows."""
    k = kernel.shape[0]
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # [B, H', W', C, kh, kw]
    win = win[:, ::stride, ::stride]
    return np.einsum("bhwcij,ijco->bhwo", win, kernel) + bias


def _randomise_biases(params, seed=5):
    rng = np.random.default_rng(seed)

    def f(path, a):
        a = np.asarray(a)
        if getattr(path[-1], "key", None) == "bias":
            return a + rng.normal(size=a.shape).astype(np.float32) * 0.2
        return a

    return jax.tree_util.tree_map_with_path(f, params)


def test_aliases():
    assert parse_list("ca,dff") == ["crelu", "dff"]


@pytest.mark.parametrize("name", ["crelu", "dff"])
def test_mlp_widths_double_and_values_match_numpy(name):
    widths, obs_dim = (8, 6), 5
    net = _network(name, NetConfig(torso="mlp", widths=widths, activation="tanh"), (obs_dim,))
    params = net.init(jax.random.PRNGKey(0))["params"]
    for torso in ("actor_torso", "critic_torso"):
        assert params[torso]["dense_0"]["kernel"].shape == (obs_dim, 8)  # producing widths are kept
        assert params[torso]["dense_1"]["kernel"].shape == (2 * 8, 6)  # next fan-in doubles
    assert params["policy_head"]["main"]["kernel"].shape == (2 * 6, ACTIONS)  # head fan-in doubles
    assert params["value_head"]["main"]["kernel"].shape == (2 * 6, 1)
    assert [(g.width, g.copies, g.activation) for g in net.groups] == [(8, 2, name), (6, 2, name)] * 2

    params = _randomise_biases(params)
    x = np.random.default_rng(1).normal(size=(7, obs_dim)).astype(np.float32) * 2.0
    (logits, value), acts = net.apply_with_activations(params, {}, x)
    p = _f64(params)
    outs = {}
    for torso, head in (("actor_torso", "policy_head"), ("critic_torso", "value_head")):
        h = x.astype(np.float64)
        for i in range(len(widths)):
            pre = h @ p[torso][f"dense_{i}"]["kernel"] + p[torso][f"dense_{i}"]["bias"]
            h = NP_ACT[name](pre)
            assert h.shape == (7, 2 * widths[i])
            np.testing.assert_allclose(np.asarray(acts[f"{torso}/act_{i}"]), h, rtol=1e-5, atol=1e-5)
        outs[head] = h @ p[head]["main"]["kernel"] + p[head]["main"]["bias"]
    np.testing.assert_allclose(np.asarray(logits), outs["policy_head"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(value), outs["value_head"][:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["crelu", "dff"])
def test_nature_cnn_channels_double_and_values_match_numpy(name):
    """44x44 input: conv maps 10x10x32 -> 4x4x64 -> 2x2x64; each activation emits 2x channels."""
    obs_shape = (44, 44, 3)
    net = _network(name, NetConfig(torso="nature_cnn", widths=(16,), activation="relu", shared=True), obs_shape)
    params = net.init(jax.random.PRNGKey(0))["params"]
    t = params["torso"]
    assert t["conv_0"]["kernel"].shape == (8, 8, 3, 32)
    assert t["conv_1"]["kernel"].shape == (4, 4, 2 * 32, 64)
    assert t["conv_2"]["kernel"].shape == (3, 3, 2 * 64, 64)
    assert t["dense_0"]["kernel"].shape == (2 * 2 * 2 * 64, 16)  # flatten of 2x2x128
    assert params["policy_head"]["main"]["kernel"].shape == (2 * 16, ACTIONS)
    assert params["value_head"]["main"]["kernel"].shape == (2 * 16, 1)
    assert [(g.width, g.copies) for g in net.groups] == [(32, 2), (64, 2), (64, 2), (16, 2)]

    params = _randomise_biases(params)
    x = np.random.default_rng(2).uniform(0, 255, size=(3, *obs_shape)).astype(np.float32)
    (logits, value), acts = net.apply_with_activations(params, {}, x)
    p = _f64(params)
    h = x.astype(np.float64) / 255.0
    for i, stride in enumerate((4, 2, 1)):
        pre = _np_conv_valid(h, p["torso"][f"conv_{i}"]["kernel"], p["torso"][f"conv_{i}"]["bias"], stride)
        h = NP_ACT[name](pre)
        assert acts[f"torso/act_{i}"].shape == h.shape and h.shape[-1] == 2 * pre.shape[-1]
        np.testing.assert_allclose(np.asarray(acts[f"torso/act_{i}"]), h, rtol=1e-5, atol=1e-5)
    h = h.reshape(h.shape[0], -1)
    h = NP_ACT[name](h @ p["torso"]["dense_0"]["kernel"] + p["torso"]["dense_0"]["bias"])
    np.testing.assert_allclose(np.asarray(acts["torso/act_3"]), h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), h @ p["policy_head"]["main"]["kernel"] + p["policy_head"]["main"][
        "bias"], rtol=1e-5, atol=1e-5)
    want_v = (h @ p["value_head"]["main"]["kernel"] + p["value_head"]["main"]["bias"])[:, 0]
    np.testing.assert_allclose(np.asarray(value), want_v, rtol=1e-5, atol=1e-5)
