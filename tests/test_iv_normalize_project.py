"""Normalize-and-Project (reference §3.6, §6.2 item 4): LayerNorm inserted before nonlinearities; every weight
matrix projected back to its initial Frobenius norm (heads only with ``project_heads``), each LayerNorm
(scale, bias) pair jointly to its initial norm, biases free; after every step (``mode=step``) or on due
updates only (``mode=update``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.algos.state import Unit
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions import normalize_project as nap
from plasticine_jax.interventions.base import Context, apply_net_transforms, compose
from plasticine_jax.interventions.registry import parse_list, resolve
from plasticine_jax.nets import NetConfig, make_network

OBS_SHAPE = (12, 12, 2)


def _setup(opts: nap.Options, torso: str = "mlp"):
    """(intervention, ctx, learner after the init hook) on a tiny network."""
    iv = compose(resolve(["normalize_project"], {"normalize_project": opts}))
    assert iv.names == ("normalize_project",)
    if torso == "mlp":
        cfg, obs_shape = NetConfig(torso="mlp", widths=(8, 6), activation="relu"), (5,)
    else:  # a conv torso (impala: conv kernels 4-d, LN on channels) on a small image
        cfg = NetConfig(torso="impala_cnn", widths=(8,), activation="relu", shared=True, channels=(4, 4))
        obs_shape = OBS_SHAPE
    net = make_network(apply_net_transforms(cfg, iv), obs_shape, 3, continuous=False)
    ctx = Context(net, num_updates=10, steps_per_update=4, env_steps_per_update=64)
    params = net.init(jax.random.PRNGKey(0))["params"]
    learner = Unit(params, {}, None, {}, {})
    learner = iv.init(ctx, learner, jax.random.PRNGKey(1))
    return iv, ctx, learner


def _leaves(params):
    return {"/".join(getattr(k, "key", str(k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(params)}


def _perturb(params, seed=3):
    """Like a few optimizer steps: every leaf scaled by its own random factor plus noise."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: jnp.asarray(np.asarray(a) * rng.uniform(0.3, 3.0) + rng.normal(size=a.shape).astype(np.float32)
                              * 0.1), params)


def _is_kernel(name):
    return name.endswith("/kernel")


def _is_head(name):
    return name.startswith(("policy_head", "value_head"))


def _ln_pairs(leaves):
    return sorted({n.rsplit("/", 1)[0] for n in leaves if n.endswith("/scale")})


def _joint(leaves, p):
    return np.sqrt(np.sum(leaves[p + "/scale"].astype(np.float64) ** 2) + np.sum(leaves[p + "/bias"] ** 2.0))


def test_alias_defaults_and_bad_mode():
    assert parse_list("nap") == ["normalize_project"]
    o = nap.Options()
    assert (o.insert_ln, o.mode, o.frequency, o.project_heads) == (True, "step", 10, False)
    with pytest.raises(ConfigError, match="step or update"):
        nap.make(nap.Options(mode="sometimes"))


def test_insert_ln_adds_layer_norm():
    iv_ln, _, learner = _setup(nap.Options())
    assert sorted(learner.params["actor_torso"]) == ["dense_0", "dense_1", "ln_0", "ln_1"]
    assert iv_ln.transform_net(NetConfig()).layer_norm is True
    iv, _, learner = _setup(nap.Options(insert_ln=False))
    assert iv.parts[0].transform_net is None
    assert apply_net_transforms(NetConfig(), iv) == NetConfig()  # the architecture is left alone
    assert sorted(learner.params["actor_torso"]) == ["dense_0", "dense_1"]


@pytest.mark.parametrize("torso", ["mlp", "impala"])
@pytest.mark.parametrize("project_heads", [False, True])
def test_step_projection_restores_initial_norms(project_heads, torso):
    iv, ctx, learner = _setup(nap.Options(project_heads=project_heads), torso)
    assert iv.after_step is not None and iv.after_update is None
    init = _leaves(learner.params)
    pert_params = _perturb(learner.params)
    pert = _leaves(pert_params)
    out = _leaves(iv.after_step(ctx, learner.replace(params=pert_params), jax.random.PRNGKey(2)).params)
    ln_pairs = _ln_pairs(init)
    assert ln_pairs, "LayerNorm inserted"
    n_kernels = 0
    for name, w in out.items():
        if _is_kernel(name) and (project_heads or not _is_head(name)):
            n_kernels += 1
            np.testing.assert_allclose(np.linalg.norm(w), np.linalg.norm(init[name]), rtol=2e-6, err_msg=name)
            # a pure rescale of the perturbed kernel (direction kept)
            c = np.linalg.norm(init[name]) / np.linalg.norm(pert[name])
            np.testing.assert_allclose(w, pert[name] * c, rtol=2e-6, atol=1e-7, err_msg=name)
        elif any(name.startswith(p + "/") for p in ln_pairs):
            continue
        else:  # biases (and heads when not projected) are untouched
            np.testing.assert_array_equal(w, pert[name], err_msg=name)
    assert n_kernels == sum(_is_kernel(n) and (project_heads or not _is_head(n)) for n in init)
    for p in ln_pairs:  # joint (scale, bias) norm restored, by one common factor
        np.testing.assert_allclose(_joint(out, p), _joint(init, p), rtol=2e-6, err_msg=p)
        f = _joint(init, p) / _joint(pert, p)
        np.testing.assert_allclose(out[p + "/scale"], pert[p + "/scale"] * f, rtol=2e-6, atol=1e-7)
        np.testing.assert_allclose(out[p + "/bias"], pert[p + "/bias"] * f, rtol=2e-6, atol=1e-7)


def test_initial_norms_recorded_per_layer():
    _, _, learner = _setup(nap.Options(project_heads=False))
    norms = learner.istate["normalize_project"]
    init = _leaves(learner.params)
    want_k = {n[: -len("/kernel")] + "/kernel" for n in init if _is_kernel(n) and not _is_head(n)}
    assert set(norms["kernels"]) == want_k
    for k, v in norms["kernels"].items():
        np.testing.assert_allclose(float(v), np.linalg.norm(init[k]), rtol=1e-6)
    for p in _ln_pairs(init):  # scale 1, bias 0 at init -> sqrt(width)
        np.testing.assert_allclose(float(norms["ln"][p]), np.sqrt(init[p + "/scale"].size), rtol=1e-6)
    _, _, learner_h = _setup(nap.Options(project_heads=True))
    assert set(learner_h.istate["normalize_project"]["kernels"]) == want_k | {
        "policy_head/main/kernel", "value_head/main/kernel"}


def test_update_mode_projects_only_on_due_updates():
    iv, ctx, learner = _setup(nap.Options(mode="update", frequency=3))
    assert iv.after_step is None and iv.after_update is not None
    init = _leaves(learner.params)
    pert_params = _perturb(learner.params)
    pert = _leaves(pert_params)
    acts = ctx.network.apply_with_activations(pert_params, learner.net_state, jnp.zeros((4, 5)))[1]
    step = jax.jit(lambda lr, idx: iv.after_update(ctx, lr, jax.random.PRNGKey(0), idx, acts))
    for idx in range(7):
        out = _leaves(step(learner.replace(params=pert_params), jnp.asarray(idx, jnp.int32)).params)
        due = (idx + 1) % 3 == 0  # completed updates 3, 6, ...
        name = "actor_torso/dense_1/kernel"
        if due:
            np.testing.assert_allclose(np.linalg.norm(out[name]), np.linalg.norm(init[name]), rtol=2e-6)
        else:
            for n in out:
                np.testing.assert_array_equal(out[n], pert[n], err_msg=(idx, n))
