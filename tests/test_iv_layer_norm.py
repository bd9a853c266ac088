"""LayerNorm intervention (reference §3.5): Dense -> LayerNorm(eps 1e-5) -> activation before every hidden
nonlinearity, checked against a hand-written NumPy forward pass; LN scale/bias are producers of their units."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from plasticine_jax.interventions import layer_norm
from plasticine_jax.interventions.base import apply_net_transforms, compose
from plasticine_jax.interventions.registry import parse_list, resolve
from plasticine_jax.nets import NetConfig, make_network
from plasticine_jax.nets.structure import ParamRef

OBS_DIM, ACTIONS, WIDTHS = 5, 3, (8, 6)
NP_ACT = {"relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh}


def _ln_network(activation: str, options: layer_norm.Options | None = None):
    ivs = compose(resolve(["layer_norm"], {"layer_norm": options} if options else None))
    cfg = apply_net_transforms(NetConfig(torso="mlp", widths=WIDTHS, activation=activation), ivs)
    return make_network(cfg, (OBS_DIM,), ACTIONS, continuous=False)


def _np_layer_norm(h, scale, bias, eps):
    mu = h.mean(-1, keepdims=True)
    var = ((h - mu) ** 2).mean(-1, keepdims=True)  # biased, as torch/flax
    return (h - mu) / np.sqrt(var + eps) * scale + bias


def _np_forward(params, x, activation, eps):
    """dense -> layernorm -> activation per hidden layer, then the linear heads (separate towers)."""
    act = NP_ACT[activation]
    out = {}
    for torso, head in (("actor_torso", "policy_head"), ("critic_torso", "value_head")):
        p = jax.tree.map(lambda a: np.asarray(a, np.float64), params[torso])
        h = x.astype(np.float64)
        for i in range(len(WIDTHS)):
            h = h @ p[f"dense_{i}"]["kernel"] + p[f"dense_{i}"]["bias"]
            h = act(_np_layer_norm(h, p[f"ln_{i}"]["scale"], p[f"ln_{i}"]["bias"], eps))
        hp = jax.tree.map(lambda a: np.asarray(a, np.float64), params[head]["main"])
        out[head] = h @ hp["kernel"] + hp["bias"]
    return out["policy_head"], out["value_head"][:, 0]


def _randomised(params, seed=1):
    """Non-trivial LN affine params and biases (init has scale 1, bias 0, zero dense biases)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: np.asarray(a) + rng.normal(size=a.shape).astype(np.float32) * 0.3, params)


def test_alias_and_transform_sets_layer_norm_with_torch_eps():
    assert parse_list("ln") == ["layer_norm"]
    (iv,) = resolve(["layer_norm"])
    cfg = iv.transform_net(NetConfig())
    assert cfg.layer_norm is True and cfg.ln_eps == 1e-5
    assert layer_norm.Options().eps == 1e-5


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_params_and_outputs_match_numpy(activation):
    net = _ln_network(activation)
    params = net.init(jax.random.PRNGKey(0))["params"]
    for torso in ("actor_torso", "critic_torso"):
        assert sorted(params[torso]) == ["dense_0", "dense_1", "ln_0", "ln_1"]
        for i, w in enumerate(WIDTHS):
            np.testing.assert_array_equal(params[torso][f"ln_{i}"]["scale"], np.ones(w, np.float32))
            np.testing.assert_array_equal(params[torso][f"ln_{i}"]["bias"], np.zeros(w, np.float32))
    params = _randomised(params)
    x = np.random.default_rng(2).normal(size=(7, OBS_DIM)).astype(np.float32)
    logits, value = net.apply(params, {}, x)
    want_logits, want_value = _np_forward(params, x, activation, 1e-5)
    np.testing.assert_allclose(np.asarray(logits), want_logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(value), want_value, rtol=1e-5, atol=1e-6)
    # the sown activation is post-LN, post-nonlinearity
    _, acts = net.apply_with_activations(params, {}, x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["actor_torso"])
    h = x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"]
    want0 = NP_ACT[activation](_np_layer_norm(h, p["ln_0"]["scale"], p["ln_0"]["bias"], 1e-5))
    np.testing.assert_allclose(np.asarray(acts["actor_torso/act_0"]), want0, rtol=1e-5, atol=1e-6)


def test_epsilon_is_1e5_and_configurable():
    """With tiny pre-activations (variance ~ eps) the output pins eps: 1e-5 matches, flax's 1e-6 does not."""
    net = _ln_network("relu")
    params = _randomised(net.init(jax.random.PRNGKey(0))["params"])
    for torso in ("actor_torso", "critic_torso"):
        for i in range(len(WIDTHS)):
            d = params[torso][f"dense_{i}"]
            params[torso][f"dense_{i}"] = {"kernel": d["kernel"] * 1e-3, "bias": d["bias"] * 1e-3}
    x = np.random.default_rng(3).normal(size=(6, OBS_DIM)).astype(np.float32)
    logits, _ = net.apply(params, {}, x)
    want, _ = _np_forward(params, x, "relu", 1e-5)
    wrong, _ = _np_forward(params, x, "relu", 1e-6)
    np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-4, atol=1e-6)
    assert np.abs(wrong - want).max() > 100 * np.abs(np.asarray(logits) - want).max()
    # Options(eps=...) reaches the module
    net3 = _ln_network("relu", layer_norm.Options(eps=1e-3))
    assert net3.cfg.ln_eps == 1e-3
    logits3, _ = net3.apply(params, {}, x)
    want3, _ = _np_forward(params, x, "relu", 1e-3)
    np.testing.assert_allclose(np.asarray(logits3), want3, rtol=1e-4, atol=1e-6)


def test_vanilla_has_no_layer_norm():
    net = make_network(NetConfig(torso="mlp", widths=WIDTHS), (OBS_DIM,), ACTIONS, continuous=False)
    params = net.init(jax.random.PRNGKey(0))["params"]
    assert sorted(params["actor_torso"]) == ["dense_0", "dense_1"]


def test_structure_lists_ln_scale_and_bias_as_producers():
    net = _ln_network("relu")
    params = net.init(jax.random.PRNGKey(0))["params"]
    assert len(net.groups) == 2 * len(WIDTHS)
    for g in net.groups:
        torso, act = g.name.split("/")
        i = int(act.split("_")[1])
        assert g.width == WIDTHS[i] and g.copies == 1
        assert ParamRef((torso, f"ln_{i}", "scale"), 0, reset_value=1.0) in g.producers
        assert ParamRef((torso, f"ln_{i}", "bias"), 0, reset_value=0.0) in g.producers
        assert ParamRef((torso, f"dense_{i}", "kernel"), 1) in g.producers
        for ref in g.producers:  # every producer's unit axis has the group's width
            leaf = params
            for k in ref.path:
                leaf = leaf[k]
            assert leaf.shape[ref.axis] == g.width


def test_conv_torso_gets_channelwise_layer_norm():
    ivs = compose(resolve(["layer_norm"]))
    cfg = apply_net_transforms(NetConfig(torso="nature_cnn", widths=(16,), activation="relu", shared=True), ivs)
    net = make_network(cfg, (36, 36, 2), ACTIONS, continuous=False)
    params = net.init(jax.random.PRNGKey(0))["params"]["torso"]
    assert [params[f"ln_{i}"]["scale"].shape for i in range(4)] == [(32,), (64,), (64,), (16,)]
