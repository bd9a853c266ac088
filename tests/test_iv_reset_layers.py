"""Layer resets (reference §3.4, §6.2 item 3): only the chosen layers change, to exactly the fresh sample of
``ctx.fresh_params(key)`` (``which=heads``: policy and value heads; ``which=all``: everything but log_std), their
Adam moments are zeroed and every other optimizer entry is untouched; ``reset_optimizer=False`` leaves the
optimizer state alone; the schedule fires only on due updates; vmap over seeds and jit. A unit with a target
network gets the reset layers mirrored into its target (``mirror_target``), and only those."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plasticine_jax.algos.state import Unit
from plasticine_jax.interventions import reset_layers as rl
from plasticine_jax.interventions.base import Context, build_optimizer
from plasticine_jax.nets import NetConfig, make_network

HEADS = ("policy_head", "value_head")
CFG = NetConfig(widths=(8, 8), activation="tanh")
DISCRETE = make_network(CFG, (4,), 3, False)
CONTINUOUS = make_network(CFG, (4,), 2, True)


def _tx(net, iv):
    return build_optimizer(iv, {}, 1e-2, 0.5, 1e-5, net)


def _ctx(net, iv):
    """The unit's static context, with the optimizer the opt state was built by (for the moment reset)."""
    return Context(net, num_updates=10, steps_per_update=4, env_steps_per_update=64, tx=_tx(net, iv))


def _acts(net, learner, n=2):
    """What the learner hands to ``after_update`` (resets do not read it)."""
    return net.apply_with_activations(learner.params, learner.net_state, jnp.zeros((n, 4)))[1]


def _learner(net, iv, seed=0, steps=3):
    """Init + ``steps`` real Adam steps on a PPO-like loss (discrete: categorical, continuous: Gaussian with the
    state-independent log-std), so params differ from any init and every moment is non-zero."""
    variables = net.init(jax.random.PRNGKey(seed))
    params = variables.pop("params")
    tx = _tx(net, iv)
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed + 100), 4)
    obs, adv, ret = jax.random.normal(k1, (32, 4)), jax.random.normal(k2, (32,)), jax.random.normal(k3, (32,))
    continuous = "log_std" in params
    act = jax.random.normal(k4, (32, 2)) if continuous else jax.random.randint(k4, (32,), 0, 3)

    def loss(p):
        pol, value = net.apply(p, variables, obs)
        if continuous:
            mean, log_std = pol
            logp = (-0.5 * ((act - mean) / jnp.exp(log_std)) ** 2 - log_std).sum(-1)
        else:
            logp = jax.nn.log_softmax(pol)[jnp.arange(32), act]
        return -(logp * adv).mean() + 0.5 * ((value - ret) ** 2).mean()

    @jax.jit
    def step(p, s):
        updates, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, updates), s

    opt_state = tx.init(params)
    for _ in range(steps):
        params, opt_state = step(params, opt_state)
    return Unit(params, variables, opt_state, {}, {})


def _same(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def _differs(a, b):
    return all(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a),
                                                                                 jax.tree.leaves(b), strict=True))


def _check_reset(learner, out, fresh, reset_keys, reset_optimizer=True):
    """Top-level params in ``reset_keys`` equal the fresh sample (and differ from before); all others are
    bit-identical; Adam mu/nu are zero exactly there (non-zero before) when ``reset_optimizer``."""
    adam0, adam1 = learner.opt_state["base"][0], out.opt_state["base"][0]
    for k in learner.params:
        if k in reset_keys:
            _same(out.params[k], fresh[k])
            assert _differs(out.params[k], learner.params[k])
        else:
            _same(out.params[k], learner.params[k])
        for m0, m1 in ((adam0.mu, adam1.mu), (adam0.nu, adam1.nu)):
            assert all(np.all(np.asarray(x) != 0) for x in jax.tree.leaves(m0[k]))  # observable
            if k in reset_keys and reset_optimizer:
                assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(m1[k]))
            else:
                _same(m1[k], m0[k])
    if reset_optimizer:
        _same(adam1.count, adam0.count)
        _same(out.opt_state["clip"], learner.opt_state["clip"])
        _same(out.opt_state["base"][1], learner.opt_state["base"][1])
    else:
        _same(out.opt_state, learner.opt_state)
    _same(out.net_state, learner.net_state)


def test_heads_reset_to_the_fresh_sample_and_their_moments_zeroed():
    iv = rl.make(rl.Options(which="heads", frequency=1))
    learner = _learner(DISCRETE, iv)
    key = jax.random.PRNGKey(7)
    out = iv.after_update(_ctx(DISCRETE, iv), learner, key, 0, _acts(DISCRETE, learner))
    assert set(learner.params) == {"actor_torso", "critic_torso", *HEADS}
    _check_reset(learner, out, _ctx(DISCRETE, iv).fresh_params(key), HEADS)


def test_all_resets_everything_but_log_std():
    iv = rl.make(rl.Options(which="all", frequency=1))
    learner = _learner(CONTINUOUS, iv)
    key = jax.random.PRNGKey(7)
    out = iv.after_update(_ctx(CONTINUOUS, iv), learner, key, 0, _acts(CONTINUOUS, learner))
    fresh = _ctx(CONTINUOUS, iv).fresh_params(key)
    assert np.all(np.asarray(fresh["log_std"]) == 0) and np.all(np.asarray(learner.params["log_std"]) != 0)
    _check_reset(learner, out, fresh, {"actor_torso", "critic_torso", *HEADS})


def test_heads_reset_without_optimizer_reset_on_continuous_net():
    iv = rl.make(rl.Options(which="heads", frequency=1, reset_optimizer=False))
    learner = _learner(CONTINUOUS, iv)
    key = jax.random.PRNGKey(7)
    out = iv.after_update(_ctx(CONTINUOUS, iv), learner, key, 0, _acts(CONTINUOUS, learner))
    _check_reset(learner, out, _ctx(CONTINUOUS, iv).fresh_params(key), HEADS, reset_optimizer=False)


def test_all_without_optimizer_reset_leaves_opt_state_untouched():
    iv = rl.make(rl.Options(which="all", frequency=1, reset_optimizer=False))
    learner = _learner(DISCRETE, iv)
    key = jax.random.PRNGKey(7)
    out = iv.after_update(_ctx(DISCRETE, iv), learner, key, 0, _acts(DISCRETE, learner))
    _check_reset(learner, out, _ctx(DISCRETE, iv).fresh_params(key), {"actor_torso", "critic_torso", *HEADS},
                 reset_optimizer=False)


def test_schedule_fires_only_on_due_updates_under_jit():
    iv = rl.make(rl.Options(which="heads", frequency=4))
    learner = _learner(DISCRETE, iv, steps=1)
    ctx = _ctx(DISCRETE, iv)
    key = jax.random.PRNGKey(5)
    hook = jax.jit(lambda lr, idx: iv.after_update(ctx, lr, key, idx, _acts(DISCRETE, lr)))
    fired = []
    for idx in range(10):
        out = hook(learner, jnp.int32(idx))
        if any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(learner), strict=True)):
            fired.append(idx)
            _check_reset(learner, out, ctx.fresh_params(key), HEADS)  # jit == the expectation
        else:
            _same(out, learner)
    assert fired == [3, 7]  # updates 4 and 8 (1-based)
    assert rl.make(rl.Options()).name == "reset_layers" and rl.Options().frequency == 1000  # reference default


def test_vmap_over_seeds():
    iv = rl.make(rl.Options(which="heads", frequency=2))
    learners = [_learner(DISCRETE, iv, seed=s, steps=1) for s in (0, 1)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *learners)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    ctx = _ctx(DISCRETE, iv)
    fn = jax.jit(jax.vmap(lambda lr, k, idx: iv.after_update(ctx, lr, k, idx, _acts(DISCRETE, lr)),
                          in_axes=(0, 0, None)))
    out = fn(stacked, keys, jnp.int32(1))
    heads = []
    for i in range(2):
        got = jax.tree.map(lambda x, i=i: x[i], out)
        _check_reset(learners[i], got, ctx.fresh_params(keys[i]), HEADS)
        heads.append(got.params["policy_head"]["main"]["kernel"])
    assert _differs(heads[0], heads[1])  # different keys, different fresh samples
    _same(fn(stacked, keys, jnp.int32(2)), stacked)  # not due


@pytest.mark.parametrize("which,net", [("heads", DISCRETE), ("all", CONTINUOUS)])
def test_reset_is_mirrored_into_the_target(which, net):
    """A unit with a target network: after the reset its target equals the new online params on exactly the reset
    layers and is bit-identical to the old target elsewhere (log_std included for ``all``). The target lags
    the online net (the init params, before the Adam steps), so "unchanged elsewhere" is distinguishable from
    "copied everywhere"; with ``mirror_target=False`` the target is untouched."""
    iv = rl.make(rl.Options(which=which, frequency=1))
    learner = _learner(net, iv)
    lagging = net.init(jax.random.PRNGKey(0))["params"]
    reset_keys = HEADS if which == "heads" else {"actor_torso", "critic_torso", *HEADS}
    for k in learner.params:
        assert _differs(lagging[k], learner.params[k]), k  # every leaf of the target differs from the online net
    unit = learner.replace(target=lagging)
    key = jax.random.PRNGKey(7)
    ctx = _ctx(net, iv)
    out = iv.after_update(ctx, unit, key, 0, _acts(net, unit))
    _check_reset(learner, out.replace(target=None), ctx.fresh_params(key), reset_keys)  # online: as without target
    assert set(out.target) == set(lagging)
    for k in lagging:
        _same(out.target[k], out.params[k] if k in reset_keys else lagging[k])
    if which == "all":
        _same(out.target["log_std"], lagging["log_std"])
        assert _differs(out.target["log_std"], out.params["log_std"])

    # under jit and vmap over seeds, too
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), unit)
    keys = jnp.stack([key, jax.random.PRNGKey(8)])
    got = jax.jit(jax.vmap(lambda u, k: iv.after_update(ctx, u, k, jnp.int32(0), _acts(net, u))))(stacked, keys)
    for i in range(2):
        fresh = ctx.fresh_params(keys[i])
        for k in lagging:
            _same(jax.tree.map(lambda x, i=i: x[i], got.target[k]), fresh[k] if k in reset_keys else lagging[k])

    off = rl.make(rl.Options(which=which, frequency=1, mirror_target=False))
    out = off.after_update(_ctx(net, off), unit, key, 0, _acts(net, unit))
    _check_reset(learner, out.replace(target=None), ctx.fresh_params(key), reset_keys)
    _same(out.target, lagging)
