"""The learner-agnostic core: 64-bit step counter, interventions closed under composition, network-declared
layout, optimizer-state surgery through optax's tree tools, trainable-only gradient norms and used-only
weight metrics around plasticity injection, schedule warnings and the minibatch metric cadence."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plasticine_jax.algos import learner as L
from plasticine_jax.algos.ppo import make_train
from plasticine_jax.algos.ppo_config import PRESETS
from plasticine_jax.algos.state import StepCounter, Unit
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions import compose, parse_list, resolve
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.interventions.surgery import reset_opt_state
from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.nets import NetConfig, make_network
from plasticine_jax.nets.continuous import make_gaussian_actor, make_twin_critic
from plasticine_jax.nets.qnet import make_q_network
from plasticine_jax.optim.trac import trac


def test_step_counter_carries_past_int32_and_uint32():
    c = StepCounter.zero()
    for _ in range(5):
        c = c.add(1_000_000_000)  # 5e9 > 2^32
    assert int(c.to_int()) == 5_000_000_000
    assert float(c.as_float()) == pytest.approx(5e9, rel=1e-6)
    c = jax.jit(lambda c: c.add(2**32 - 1))(c)
    assert int(c.to_int()) == 5_000_000_000 + 2**32 - 1


def _counter(name: str, order: int, log: list) -> Intervention:
    """A probe intervention whose after_step adds ``order`` to a counter in params (and records the key)."""

    def after_step(ctx, unit, key):
        log.append(name)
        return unit.replace(params={**unit.params, "c": unit.params["c"] * 10 + order})

    return Intervention(name, order=order, after_step=after_step, hparams={"x": float(order)})


def test_compose_is_closed_and_flattens():
    log: list = []
    a, b, c = _counter("a", 1, log), _counter("b", 2, log), _counter("c", 3, log)
    ab = compose([b, a])
    assert isinstance(ab, Intervention) and ab.names == ("a", "b")
    abc = compose([ab, c])
    assert abc.names == ("a", "b", "c") and [p.name for p in abc.parts] == ["a", "b", "c"]
    unit = Unit({"c": jnp.zeros(())}, {}, None, {}, {})
    out = abc.after_step(None, unit, jax.random.PRNGKey(0))
    assert float(out.params["c"]) == 123.0  # each hook once, in canonical order
    assert log == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="given twice"):
        compose([ab, a])
    assert compose([]).names == ()


def test_networks_declare_their_layout():
    ac = make_network(NetConfig(widths=(8, 8), injection=True), (4,), 3, False)
    assert ac.head_names == ("policy_head", "value_head")
    assert ac.is_frozen_copy(("policy_head", "frozen", "kernel")) and not ac.is_frozen_copy(("actor_torso",))
    q = make_q_network(NetConfig(widths=(8,), shared=True), (4,), 2)
    assert q.head_names == ("q_head",)
    critic = make_twin_critic(NetConfig(widths=(8, 8), layer_norm=True), (3,), 1)
    assert critic.head_names == ("q1_head", "q2_head")
    assert [t.tag for t in critic.torsos] == ["", "q2"]
    assert critic.layer_norm_paths() == [("q1_torso", "ln_0"), ("q1_torso", "ln_1"), ("q2_torso", "ln_0"),
                                         ("q2_torso", "ln_1")]
    assert critic.torso_kernel_paths(last_only=True) == [("q1_torso", "dense_1", "kernel"),
                                                          ("q2_torso", "dense_1", "kernel")]
    actor = make_gaussian_actor(NetConfig(widths=(8,)), (3,), 2)
    assert actor.head_names == ("mean_head", "log_std_head")
    # IMPALA: LayerNorms in front of residual-stream activations (no producer) are found too
    impala = make_network(NetConfig(torso="impala_cnn", widths=(16,), channels=(4,), layer_norm=True, shared=True),
                          (16, 16, 3), 5, False)
    assert ("torso", "seq0_res0_ln0") in impala.layer_norm_paths()
    assert ("torso", "seq0_conv", "kernel") in impala.torso_kernel_paths()


def test_reset_opt_state_uses_optimizer_structure_and_keeps_trac_reference():
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    tx = optax.named_chain(("base", trac(optax.adam(1e-2))))
    state = tx.init(params)
    g = {"w": jnp.full((2, 3), 0.5), "b": jnp.full(3, -0.5)}
    for _ in range(3):
        _, state = tx.update(g, state, params)
    mask = {"w": jnp.array([[True, False, False], [False, False, False]]), "b": jnp.zeros(3, bool)}
    new = reset_opt_state(tx, state, mask)
    mu_old = optax.tree_utils.tree_get(state, "mu")
    mu_new = optax.tree_utils.tree_get(new, "mu")
    assert float(mu_new["w"][0, 0]) == 0.0 and float(mu_old["w"][0, 0]) != 0.0
    np.testing.assert_array_equal(mu_new["w"][1], mu_old["w"][1])
    np.testing.assert_array_equal(mu_new["b"], mu_old["b"])
    # TRAC's reference point is param-shaped but is not a moment: it survives the reset
    np.testing.assert_array_equal(optax.tree_utils.tree_get(new, "theta_ref")["w"],
                                  optax.tree_utils.tree_get(state, "theta_ref")["w"])


def _injection_learner(at: float = 0.5):
    from plasticine_jax.interventions.injection import Options

    ivs = resolve(["plasticity_injection"], {"plasticity_injection": Options(at=at)})
    return make_train(PRESETS["cleanrl-cartpole"], "gymnax:CartPole-v1", 4 * 128 * 4, ivs, MetricsConfig(every=0))


def test_injection_gradient_norm_counts_trainable_params_only():
    """After injection the old head (main) and the frozen copy get no gradient: they are out of clipping and of
    plasticity/gradient_norm (the reference counted the frozen head's gradient, +13 % on CartPole)."""
    lrn = _injection_learner()
    state = jax.jit(lambda k: lrn.run_updates(lrn.init(k), 0, 2)[0])(jax.random.PRNGKey(0))
    unit = state.units["agent"]
    assert float(jax.tree.leaves(unit.net_state["injection"])[0]) == 1.0  # injected after update 2 of 4
    grads = jax.tree.map(jnp.ones_like, unit.params)  # every entry 1: the norm counts entries
    _, norm = L.apply_grads(lrn.unit, lrn.iv, unit, grads, jax.random.PRNGKey(1))
    net = lrn.network
    n_live = sum(x.size for p, x in jax.tree_util.tree_flatten_with_path(unit.params)[0]
                 if net.head_part(tuple(k.key for k in p)) not in ("main", "frozen"))
    n_all = sum(x.size for x in jax.tree.leaves(unit.params))
    assert float(norm) == pytest.approx(math.sqrt(n_live), rel=1e-6)
    assert n_live < n_all


def test_weight_metrics_exclude_unused_injection_heads():
    lrn = _injection_learner(at=0.75)
    state = lrn.init(jax.random.PRNGKey(0))
    unit = state.units["agent"]
    m = L.unit_weight_metrics(lrn.unit, unit, unit.params)
    net = lrn.network
    used = [np.asarray(x, np.float64).ravel() for p, x in jax.tree_util.tree_flatten_with_path(unit.params)[0]
            if net.head_part(tuple(k.key for k in p)) not in ("new", "frozen")]
    expect = np.sqrt(np.mean(np.concatenate(used) ** 2))
    assert float(m["plasticity/weight_magnitude"]) == pytest.approx(expect, rel=1e-5)
    everything = np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(unit.params)])
    assert abs(np.sqrt(np.mean(everything ** 2)) - expect) > 1e-3  # the unused heads would change it


def test_schedule_warnings_name_the_flag():
    from plasticine_jax.interventions.reset_layers import Options as RL

    ivs = resolve(["reset_layers", "redo"], {"reset_layers": RL(frequency=1000)})
    lrn = make_train(PRESETS["cleanrl-cartpole"], "gymnax:CartPole-v1", 4 * 128 * 7, ivs, MetricsConfig(every=10))
    text = "\n".join(lrn.warnings)
    assert lrn.num_updates == 7
    assert "--rl.frequency 1000" in text and "--redo.frequency 10" in text and "--metrics.every 10" in text
    quiet = make_train(PRESETS["cleanrl-cartpole"], "gymnax:CartPole-v1", 4 * 128 * 20, resolve(parse_list("redo")))
    assert quiet.warnings == ()


def test_minibatch_cadence_computes_feature_metrics_every_update():
    """cadence=minibatch (the reference's PPO cadence): feature metrics on every minibatch before its step,
    averaged per update, so they exist on every update; the dormant ratio keeps its every-N schedule."""
    steps = 4 * 128 * 4
    run = lambda m: jax.jit(make_train(PRESETS["cleanrl-cartpole"], "gymnax:CartPole-v1", steps, (), m).train)(
        jax.random.PRNGKey(0))[1]
    mb = run(MetricsConfig(every=2, cadence="minibatch"))
    up = run(MetricsConfig(every=2, cadence="update"))
    assert np.isfinite(np.asarray(mb["plasticity/stable_rank"])).all()
    assert np.isnan(np.asarray(up["plasticity/stable_rank"])[[0, 2]]).all()
    assert np.isnan(np.asarray(mb["plasticity/dormant_ratio"])[[0, 2]]).all()
    assert np.isfinite(np.asarray(mb["plasticity/dormant_ratio"])[[1, 3]]).all()
    # an average over 16 minibatches differs from the last minibatch's value
    assert float(mb["plasticity/feature_norm"][1]) != float(up["plasticity/feature_norm"][1])
    # and the averaged value matches the mean of per-minibatch values in scale
    assert float(mb["plasticity/feature_norm"][1]) == pytest.approx(float(up["plasticity/feature_norm"][1]), rel=0.2)


def test_step_or_skip_takes_or_skips_and_traces_the_step_once():
    """The taken branch is the step (with values it closes over), the skipped one the operand and zero aux,
    vmapped too; a nested step_or_skip traces each Python step exactly once (not once for shapes and again
    for the branch, which doubles per nesting level)."""
    calls = {"outer": 0, "inner": 0}

    def inner(x, scale):
        calls["inner"] += 1
        return x * scale, {"inner": jnp.sum(x)}

    def outer(x, scale, inner_due):
        calls["outer"] += 1
        y, aux = L.step_or_skip(inner_due, lambda v: inner(v, scale), x + 1.0)
        return y, {**aux, "outer": jnp.float32(7.0)}

    def run(x, scale, due, inner_due):
        return L.step_or_skip(due, lambda v: outer(v, scale, inner_due), x)

    f = jax.jit(run)
    x = jnp.arange(3.0)
    y, aux = f(x, 2.0, True, True)
    assert calls == {"outer": 1, "inner": 1}
    np.testing.assert_allclose(y, (np.arange(3.0) + 1.0) * 2.0)
    assert float(aux["inner"]) == 6.0 and float(aux["outer"]) == 7.0
    y, aux = f(x, 2.0, True, False)  # inner skipped: operand passes through, its aux is zero
    np.testing.assert_allclose(y, np.arange(3.0) + 1.0)
    assert float(aux["inner"]) == 0.0 and float(aux["outer"]) == 7.0
    y, aux = f(x, 2.0, False, True)  # outer skipped
    np.testing.assert_allclose(y, np.arange(3.0))
    assert float(aux["inner"]) == 0.0 and float(aux["outer"]) == 0.0
    assert calls == {"outer": 1, "inner": 1}  # same shapes: no retrace
    yv, auxv = jax.vmap(run, (0, 0, None, None))(jnp.stack([x, x]), jnp.array([2.0, 3.0]), True, True)
    np.testing.assert_allclose(yv, [(np.arange(3.0) + 1.0) * 2.0, (np.arange(3.0) + 1.0) * 3.0])
    np.testing.assert_allclose(auxv["inner"], [6.0, 6.0])


def test_unit_activations_when_due_zeros_otherwise_one_forward_trace():
    """The shared activations are the network's own when due and zeros otherwise, vmapped over seeds; the
    forward pass is traced once (not once for the zeros' shapes and again for the branch)."""
    from types import SimpleNamespace

    net = make_network(NetConfig(widths=(8, 8)), (4,), 2, False)
    traces = []

    def counted(params, net_state, *xs):
        traces.append(1)
        return net.apply_with_activations(params, net_state, *xs)

    spec = SimpleNamespace(network=SimpleNamespace(apply_with_activations=counted))
    params = net.init(jax.random.PRNGKey(0))["params"]
    unit = Unit(params, {}, None, None, {})
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    f = jax.jit(lambda u, o, due: L.unit_activations(spec, u, (o,), due))
    on = f(unit, obs, True)
    assert len(traces) == 1
    want = net.apply_with_activations(params, {}, obs)[1]
    assert set(on) == set(want) and len(on) == 4  # two towers x two hidden layers
    for k in want:
        np.testing.assert_allclose(np.asarray(on[k]), np.asarray(want[k]), rtol=1e-6, atol=1e-7)
        assert float(jnp.abs(want[k]).sum()) > 0
    off = f(unit, obs, False)
    assert all(float(jnp.abs(v).sum()) == 0.0 and v.shape == want[k].shape for k, v in off.items())
    seeds = jax.vmap(lambda k: net.init(k)["params"])(jax.random.split(jax.random.PRNGKey(2), 2))
    vm = jax.vmap(lambda p, due: L.unit_activations(spec, Unit(p, {}, None, None, {}), (obs,), due))(
        seeds, jnp.array([True, False]))
    k0 = sorted(want)[0]
    np.testing.assert_allclose(np.asarray(vm[k0][0]), np.asarray(
        net.apply_with_activations(jax.tree.map(lambda x: x[0], seeds), {}, obs)[1][k0]), rtol=1e-6, atol=1e-7)
    assert float(jnp.abs(vm[k0][1]).sum()) == 0.0
