"""Networks: reference shapes (Nature 3136, IMPALA 2048), initialisers, sown activations and the declared
neuron structure (producers/consumers) that ReDo, resets and per-layer metrics rely on."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from plasticine_jax.nets import NetConfig, make_network
from plasticine_jax.nets.structure import get_path


def _init(net, seed=0):
    v = net.init(jax.random.PRNGKey(seed))
    return v.pop("params"), v


def test_nature_cnn_reference_shapes_and_flatten_tile():
    net = make_network(NetConfig(torso="nature_cnn", widths=(512,), activation="relu", shared=True), (84, 84, 4), 6,
                       False)
    params, state = _init(net)
    assert params["torso"]["dense_0"]["kernel"].shape == (3136, 512)  # 64 * 7 * 7
    (logits, value), acts = net.apply_with_activations(params, state, jnp.zeros((2, 84, 84, 4)))
    assert logits.shape == (2, 6) and value.shape == (2,)
    assert [acts[f"torso/act_{i}"].shape[1:] for i in range(4)] == [(20, 20, 32), (9, 9, 64), (7, 7, 64), (512,)]
    g = {x.name: x for x in net.groups}
    assert g["torso/act_2"].consumers[0].tile == 49  # channel mask tiled over the 7x7 NHWC positions
    assert {c.path[0] for c in g["torso/act_3"].consumers} == {"policy_head", "value_head"}


def test_impala_cnn_reference_shapes():
    net = make_network(NetConfig(torso="impala_cnn", widths=(256,), activation="relu", shared=True, init="torch"),
                       (64, 64, 3), 15, False)
    params, _ = _init(net)
    assert params["torso"]["dense_0"]["kernel"].shape == (2048, 256)  # 32 * 8 * 8
    recyclable = [x.name for x in net.groups if x.recyclable]
    assert len(recyclable) == 7  # 6 inner ResBlock ReLUs + the final dense ReLU
    assert len(net.groups) == 14  # every hidden activation, 12 in ResBlocks + stream + dense (reference: 14)


def test_orthogonal_init_gains_and_torch_default_bounds():
    net = make_network(NetConfig(widths=(64, 64), activation="tanh"), (8,), 4, False)
    params, _ = _init(net)
    k = np.asarray(params["actor_torso"]["dense_1"]["kernel"])
    np.testing.assert_allclose(k.T @ k, 2.0 * np.eye(64), atol=1e-4)  # orthogonal, gain sqrt(2)
    h = np.asarray(params["policy_head"]["main"]["kernel"])
    np.testing.assert_allclose(h.T @ h, 1e-4 * np.eye(4), atol=1e-8)  # gain 0.01
    assert np.all(np.asarray(params["actor_torso"]["dense_0"]["bias"]) == 0)
    tnet = make_network(NetConfig(widths=(32,), activation="relu", init="torch"), (10,), 2, False)
    tparams, _ = _init(tnet)
    w, b = (np.asarray(tparams["actor_torso"]["dense_0"][n]) for n in ("kernel", "bias"))
    bound = 1 / math.sqrt(10)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound and np.abs(b).max() > bound / 2


def test_structure_shapes_match_params_and_activations():
    """Every producer/consumer axis has exactly width*copies (or width) entries, for each torso kind."""
    cases = [
        (NetConfig(widths=(16, 8), activation="crelu", layer_norm=True), (5,)),
        (NetConfig(torso="nature_cnn", widths=(16,), activation="dff", shared=True), (36, 36, 2)),
        (NetConfig(torso="impala_cnn", channels=(4, 8), widths=(16,), activation="relu", shared=True,
                   layer_norm=True, injection=True), (16, 16, 3)),
    ]
    for cfg, shape in cases:
        net = make_network(cfg, shape, 3, False)
        params, state = _init(net)
        _, acts = net.apply_with_activations(params, state, jnp.zeros((2, *shape)))
        assert set(acts) == {g.name for g in net.groups}
        for g in net.groups:
            assert acts[g.name].shape[-1] == g.width * g.copies
            for ref in g.producers:
                assert get_path(params, ref.path).shape[ref.axis] == g.width, ref
            for ref in g.consumers:
                assert get_path(params, ref.path).shape[ref.axis] == g.width * g.copies * ref.tile, ref


def test_gaussian_head_for_continuous_actions():
    net = make_network(NetConfig(), (3,), 2, True)
    params, state = _init(net)
    (mean, log_std), value = net.apply(params, state, jnp.ones((5, 3)))
    assert mean.shape == (5, 2) and log_std.shape == (5, 2) and value.shape == (5,)
    np.testing.assert_array_equal(np.asarray(log_std), 0.0)
