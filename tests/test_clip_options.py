"""Gradient clipping options (global_norm, per_network, elementwise) against independent numpy computations."""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.algos.ppo import make_train
from plasticine_jax.algos.ppo_config import PPOConfig
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import CLIPS, build_optimizer, compose, gradient_clip
from plasticine_jax.nets import NetConfig

MAX_NORM = 0.5
# The actor's sub-network, spelled out here rather than asked of Network.sub_network: its torso, its head and the
# Gaussian policy's free log-std; everything else (critic torso, value head) is the critic's.
ACTOR = ("actor_torso", "policy_head", "log_std")
TWO_TOWERS = NetConfig(torso="mlp", widths=(32, 32), activation="tanh", shared=False)


def _learner(net: NetConfig = TWO_TOWERS, env: str = "gymnax:CartPole-v1", **over):
    return make_train(PPOConfig(net=net, **over), env, 10240)


def _params(learner):
    return learner.init(jax.random.PRNGKey(0)).units["agent"].params


def _flat(tree) -> dict[tuple[str, ...], np.ndarray]:
    """{key path: float64 array}, independent of jax's tree utilities in what follows."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tuple(k.key for k in p): np.asarray(x, np.float64) for p, x in leaves}


def _norm(flat: dict, keep=lambda path: True) -> float:
    return float(np.sqrt(sum((v ** 2).sum() for p, v in flat.items() if keep(p))))


def _is_actor(path) -> bool:
    return path[0] in ACTOR


def _grads(params, actor_scale: float, critic_scale: float, seed: int = 1):
    """Hand-made gradients: N(0, 1) entries scaled per tower."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    out = [jax.random.normal(k, x.shape) * (actor_scale if p[0].key in ACTOR else critic_scale)
           for (p, x), k in zip(leaves, keys, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, out)


def _clip(name: str, network, grads, max_norm: float = MAX_NORM):
    tx = gradient_clip(name, max_norm, network)
    updates, _ = tx.update(grads, tx.init(grads))
    return _flat(updates)


def test_global_norm_scales_everything_by_one_norm():
    """global_norm: every entry times max_norm / ||g_all|| (one norm over both towers)."""
    lrn = _learner()
    grads = _grads(_params(lrn), actor_scale=3.0, critic_scale=1e-3)
    g = _flat(grads)
    total = _norm(g)
    assert total > MAX_NORM
    out = _clip("global_norm", lrn.network, grads)
    for p, v in g.items():
        np.testing.assert_allclose(out[p], v * MAX_NORM / total, rtol=1e-5, atol=1e-9, err_msg=str(p))
    np.testing.assert_allclose(_norm(out), MAX_NORM, rtol=1e-5)
    assert _norm(out, lambda p: not _is_actor(p)) < 0.5 * _norm(g, lambda p: not _is_actor(p))  # critic shrunk


def test_per_network_clips_each_tower_by_its_own_norm():
    """per_network: the actor scaled by max_norm / ||g_actor||; the critic, below max_norm, untouched."""
    lrn = _learner()
    grads = _grads(_params(lrn), actor_scale=3.0, critic_scale=1e-3)
    g = _flat(grads)
    actor_norm, critic_norm = _norm(g, _is_actor), _norm(g, lambda p: not _is_actor(p))
    assert actor_norm > MAX_NORM > critic_norm
    out = _clip("per_network", lrn.network, grads)
    for p, v in g.items():
        want = v * MAX_NORM / actor_norm if _is_actor(p) else v
        np.testing.assert_allclose(out[p], want, rtol=1e-5, atol=1e-9, err_msg=str(p))
    np.testing.assert_allclose(_norm(out, _is_actor), MAX_NORM, rtol=1e-5)


def test_per_network_clips_both_towers_when_both_are_large():
    """per_network with both towers above max_norm: each ends at norm max_norm (sqrt 2 max_norm overall)."""
    lrn = _learner()
    grads = _grads(_params(lrn), actor_scale=3.0, critic_scale=0.2)
    g = _flat(grads)
    actor_norm, critic_norm = _norm(g, _is_actor), _norm(g, lambda p: not _is_actor(p))
    assert min(actor_norm, critic_norm) > MAX_NORM
    out = _clip("per_network", lrn.network, grads)
    for p, v in g.items():
        want = v * MAX_NORM / (actor_norm if _is_actor(p) else critic_norm)
        np.testing.assert_allclose(out[p], want, rtol=1e-5, atol=1e-9, err_msg=str(p))
    np.testing.assert_allclose(_norm(out), np.sqrt(2) * MAX_NORM, rtol=1e-5)


def test_elementwise_clips_each_entry():
    """elementwise: each entry clipped to [-max_norm, max_norm], the rest unchanged."""
    lrn = _learner()
    grads = _grads(_params(lrn), actor_scale=3.0, critic_scale=0.3)
    g = _flat(grads)
    out = _clip("elementwise", lrn.network, grads)
    clipped = 0
    for p, v in g.items():
        np.testing.assert_allclose(out[p], np.clip(v, -MAX_NORM, MAX_NORM), rtol=1e-6, err_msg=str(p))
        clipped += int((np.abs(v) > MAX_NORM).sum())
    unclipped = sum(int((np.abs(v) < MAX_NORM).sum()) for v in g.values())
    assert clipped > 100 and unclipped > 100  # both regimes exercised


def test_shared_torso_per_network_equals_global_norm():
    """One shared torso is one sub-network: per_network equals global_norm (and does clip)."""
    lrn = _learner(net=replace(TWO_TOWERS, shared=True))
    params = _params(lrn)
    assert "torso" in params and "actor_torso" not in params
    assert {lrn.network.sub_network(p) for p in _flat(params)} == {"torso"}
    grads = jax.tree.map(lambda x: jnp.full(x.shape, 0.7), params)
    per, glob = _clip("per_network", lrn.network, grads), _clip("global_norm", lrn.network, grads)
    for p in per:
        np.testing.assert_allclose(per[p], glob[p], rtol=1e-6, err_msg=str(p))
    np.testing.assert_allclose(_norm(per), MAX_NORM, rtol=1e-5)


def test_continuous_log_std_belongs_to_the_actor():
    """A Gaussian policy's free log_std is clipped with the actor tower, not the critic."""
    lrn = _learner(env="gymnax:Pendulum-v1")
    params = _params(lrn)
    assert "log_std" in params
    assert lrn.network.sub_network(("log_std",)) == lrn.network.sub_network(("policy_head", "main", "kernel"))
    assert lrn.network.sub_network(("log_std",)) != lrn.network.sub_network(("value_head", "main", "kernel"))
    # only log_std (large) and the critic (small, below max_norm) carry gradient
    grads = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.full(x.shape, 10.0) if p[0].key == "log_std"
        else jnp.full(x.shape, 1e-4) if not _is_actor((p[0].key,)) else jnp.zeros(x.shape), params)
    g = _flat(grads)
    out = _clip("per_network", lrn.network, grads)
    np.testing.assert_allclose(out[("log_std",)], MAX_NORM * np.sign(g[("log_std",)]) / np.sqrt(g[("log_std",)].size),
                               rtol=1e-5)
    for p, v in g.items():
        if not _is_actor(p):
            np.testing.assert_allclose(out[p], v, rtol=1e-6, err_msg=str(p))  # critic untouched


def test_unknown_clip_names_the_options():
    """An unknown clip name raises ConfigError naming every option; per_network needs the network."""
    with pytest.raises(ConfigError) as e:
        gradient_clip("global", 1.0, _learner().network)
    for name in CLIPS:
        assert name in str(e.value)
    assert set(CLIPS) == {"global_norm", "per_network", "elementwise"}
    with pytest.raises(ConfigError, match="network"):
        gradient_clip("per_network", 1.0, None)
    with pytest.raises(ConfigError):
        make_train(PPOConfig(clip="bogus"), "gymnax:CartPole-v1", 10240)


def _numpy_clip(clip: str, g: dict, max_norm: float) -> dict:
    """The three options in numpy, with the actor / critic split of ``ACTOR``."""
    if clip == "elementwise":
        return {p: np.clip(v, -max_norm, max_norm) for p, v in g.items()}
    if clip == "global_norm":
        norms = dict.fromkeys(g, _norm(g))
    else:
        a, c = _norm(g, _is_actor), _norm(g, lambda p: not _is_actor(p))
        norms = {p: a if _is_actor(p) else c for p in g}
    return {p: v * min(1.0, max_norm / norms[p]) for p, v in g.items()}


def _first_adam_step(clipped: dict, lr: float, eps: float) -> dict:
    """Adam's bias-corrected first step: -lr * c / (|c| + eps)."""
    return {p: -lr * c / (np.abs(c) + eps) for p, c in clipped.items()}


@pytest.mark.parametrize("clip", CLIPS)
def test_build_optimizer_clips_before_adam(clip):
    """build_optimizer's first update is Adam's step on the clipped gradient; max_grad_norm 0 disables the clip."""
    lrn = _learner()
    params = _params(lrn)
    grads = _grads(params, actor_scale=3.0, critic_scale=1e-3)
    g = _flat(grads)
    lr, eps = 0.1, 0.5  # eps comparable to the clipped entries so Adam does not erase the clip's scale
    vanilla = compose([])
    tx = build_optimizer(vanilla, {}, lr, MAX_NORM, eps, lrn.network, clip)
    updates, _ = tx.update(grads, tx.init(params), params)
    want = _first_adam_step(_numpy_clip(clip, g, MAX_NORM), lr, eps)
    raw = _first_adam_step(g, lr, eps)
    for p, v in _flat(updates).items():
        np.testing.assert_allclose(v, want[p], rtol=1e-4, atol=1e-8, err_msg=str(p))
    assert max(np.abs(_flat(updates)[p] - raw[p]).max() for p in g) > 1e-2  # the clip changed the step
    tx_off = build_optimizer(vanilla, {}, lr, 0.0, eps, lrn.network, clip)
    assert "clip" not in tx_off.init(params)
    off, _ = tx_off.update(grads, tx_off.init(params), params)
    for p, v in _flat(off).items():
        np.testing.assert_allclose(v, raw[p], rtol=1e-4, atol=1e-8, err_msg=str(p))


# ------------------------------------------------------------------ end to end through PPOConfig(clip=...)
C_MAX, LR, EPS = 1e-3, 1e4, 1e-3  # a huge lr: the step dwarfs the params, so float32 keeps it to ~1e-7


def _one_update(clip: str):
    """(clipped gradient recovered from one PPO optimizer step, pre-clip gradient norm) for ``clip``."""
    # with lr and eps known, Adam's first step u = -lr c / (|c| + eps) inverts to the clipped gradient c
    cfg_net = NetConfig(torso="mlp", widths=(16, 16), activation="tanh", shared=False)
    lrn = make_train(PPOConfig(num_envs=4, num_steps=32, num_minibatches=1, update_epochs=1, learning_rate=LR,
                               anneal_lr=False, adam_eps=EPS, max_grad_norm=C_MAX, clip=clip, net=cfg_net),
                     "gymnax:CartPole-v1", 4 * 32)
    state = lrn.init(jax.random.PRNGKey(7))
    new, m = jax.jit(lambda s: lrn.run_updates(s, 0, 1))(state)
    before, after = _flat(state.units["agent"].params), _flat(new.units["agent"].params)
    clipped = {}
    for p in before:
        u = -(after[p] - before[p]) / LR
        assert np.abs(u).max() < 0.99
        clipped[p] = u * EPS / (1.0 - np.abs(u))
    return clipped, float(np.asarray(m["plasticity/gradient_norm"])[0])


def test_ppo_config_clip_reaches_the_optimizer():
    """PPOConfig(clip=...) is the clip applied in training: one shared raw gradient, three exact clip results."""
    c_glob, norm = _one_update("global_norm")
    c_per, norm_per = _one_update("per_network")
    c_elem, norm_elem = _one_update("elementwise")
    np.testing.assert_allclose([norm_per, norm_elem], [norm, norm], rtol=1e-5)  # same rollout, same raw gradient
    assert norm > 20 * C_MAX  # clipping is active
    np.testing.assert_allclose(_norm(c_glob), C_MAX, rtol=1e-3)
    raw = {p: v * norm / C_MAX for p, v in c_glob.items()}  # the raw gradient, recovered from the global clip
    np.testing.assert_allclose(_norm(raw), norm, rtol=1e-3)
    # per_network: each tower at norm C_MAX, as an independent numpy clip of the raw gradient
    a_norm, c_norm = _norm(raw, _is_actor), _norm(raw, lambda p: not _is_actor(p))
    assert min(a_norm, c_norm) > 5 * C_MAX
    np.testing.assert_allclose([_norm(c_per, _is_actor), _norm(c_per, lambda p: not _is_actor(p))], [C_MAX, C_MAX],
                               rtol=1e-3)
    for p, v in raw.items():
        want = v * C_MAX / (a_norm if _is_actor(p) else c_norm)
        np.testing.assert_allclose(c_per[p], want, rtol=1e-4, atol=1e-10, err_msg=str(p))
    # elementwise: every entry of the raw gradient clipped to [-C_MAX, C_MAX]
    at_bound = 0
    for p, v in raw.items():
        np.testing.assert_allclose(c_elem[p], np.clip(v, -C_MAX, C_MAX), rtol=1e-4, atol=1e-10, err_msg=str(p))
        at_bound += int((np.abs(v) > C_MAX).sum())
    assert at_bound > 10
    assert _norm(c_elem) > 3 * C_MAX  # per-entry, not a norm clip

