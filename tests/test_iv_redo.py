"""ReDo (reference §3.3, §6.2 item 2) with planted dead units: exactly those are recycled -- incoming weights
equal the fresh sample of ``ctx.fresh_params(key)``, incoming bias 0, outgoing weights 0 in every consumer (both
heads of a shared torso; the NHWC-tiled conv->dense flatten), Adam mu/nu of the touched entries 0 -- and every
other parameter and optimizer entry is bit-identical. CReLU units are recycled only when both halves are
dormant. The reference options keep the bias and the moments. Schedule, vmap over seeds and jit. A unit with a
target network gets exactly the touched entries mirrored into its target (``mirror_target``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from plasticine_jax.algos.state import Unit
from plasticine_jax.interventions import redo
from plasticine_jax.interventions.base import Context, build_optimizer, default_hparams
from plasticine_jax.nets import NetConfig, make_network
from plasticine_jax.nets.structure import get_path

TAU = 0.025


def _hp(iv):
    return {k: jnp.float32(v) for k, v in default_hparams(iv).items()}


def _tx(net, iv, lr=1e-3):
    return build_optimizer(iv, _hp(iv), lr, 0.5, 1e-5, net)


def _ctx(net, iv):
    """The unit's static context, with the optimizer the opt state was built by (for the moment reset)."""
    return Context(net, num_updates=10, steps_per_update=4, env_steps_per_update=64, tx=_tx(net, iv))


def _acts(net, learner, obs):
    """What the learner hands to ``after_update``: the unit's hidden activations on the metric batch."""
    return net.apply_with_activations(learner.params, learner.net_state, obs)[1]


def _learner(net, iv, obs, action_dim, plants=(), dead_rows=None, seed=0, steps=3, lr=1e-3):
    """The fixture: init, centre the kernels (``_centre``: every unit alive), ``steps`` real Adam steps on a
    PPO-like loss (non-zero moments everywhere), then plant dead units: ``plants`` = [(layer path, units,
    bias)] zeroes the units' incoming weights and sets their bias, so their pre-activation is the constant
    bias; finally re-centre the other units' kernels over their live inputs (``dead_rows``)."""
    variables = net.init(jax.random.PRNGKey(seed))
    params = _centre(variables.pop("params"))
    hp = _hp(iv)
    assert set(hp) == {"redo.tau"}
    tx = _tx(net, iv, lr)
    n = obs.shape[0]
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed + 100), 3)
    act = jax.random.randint(k1, (n,), 0, action_dim)
    adv, ret = jax.random.normal(k2, (n,)), jax.random.normal(k3, (n,))

    def loss(p):
        logits, value = net.apply(p, variables, obs)
        logp = jax.nn.log_softmax(logits)
        return -(logp[jnp.arange(n), act] * adv).mean() + 0.5 * ((value - ret) ** 2).mean()

    @jax.jit
    def step(p, s):
        updates, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, updates), s

    opt_state = tx.init(params)
    for _ in range(steps):
        params, opt_state = step(params, opt_state)
    params = jax.tree.map(np.array, params)  # writable copies
    for layer, units, bias in plants:
        get_path(params, (*layer, "kernel"))[..., units] = 0.0
        get_path(params, (*layer, "bias"))[units] = bias
    return Unit(_centre(params, dead_rows or {}), variables, opt_state, {}, hp)


def _centre(params, dead_rows=None):
    """Zero-mean every torso kernel over its live inputs (all but the rows in ``dead_rows``: {kernel path:
    (axis, rows)}). ReLU nets with all-positive inputs (obs / 255, or a previous ReLU) otherwise have
    naturally dormant units; centred, none scores below ~0.15, so the planted units are exactly the dormant
    ones (each test asserts that with an independent NumPy score). Zero (planted) columns stay zero."""
    params = jax.tree.map(np.array, params)
    for torso in [t for t in params if t.endswith("torso")]:
        for layer, d in params[torso].items():
            if "kernel" not in d:
                continue
            k = d["kernel"]
            live = np.ones(k.shape[:-1], bool)
            if (torso, layer, "kernel") in (dead_rows or {}):
                axis, rows = dead_rows[(torso, layer, "kernel")]
                idx = [slice(None)] * live.ndim
                idx[axis] = rows
                live[tuple(idx)] = False
            k[live] -= k[live].mean(axis=0)
    return jax.tree.map(jnp.asarray, params)


def _np_dormant(a):
    """Independent ReDo score: E|a_i| over batch (and space) / mean_j E|a_j| <= tau."""
    a = np.abs(np.asarray(a, np.float64)).reshape(-1, a.shape[-1]).mean(0)
    return set(np.flatnonzero(a / (a.mean() + 1e-9) <= TAU).tolist())


class Expect:
    """Expected params and touched-mask, built by explicit NumPy indexing."""

    def __init__(self, learner, fresh):
        self.params = jax.tree.map(np.array, learner.params)
        self.fresh = jax.tree.map(np.asarray, fresh)
        self.touched = jax.tree.map(lambda x: np.zeros(x.shape, bool), self.params)

    def _set(self, path, axis, units, value):
        arr, t = get_path(self.params, path), get_path(self.touched, path)
        idx = [slice(None)] * arr.ndim
        idx[axis] = units
        idx = tuple(idx)
        arr[idx] = get_path(self.fresh, path)[idx] if value is None else value
        t[idx] = True

    def incoming(self, layer, units, zero_bias=True):
        kernel = get_path(self.params, (*layer, "kernel"))
        self._set((*layer, "kernel"), kernel.ndim - 1, units, None)
        if zero_bias:  # otherwise the bias is kept, and so are its moments
            self._set((*layer, "bias"), 0, units, 0.0)

    def outgoing(self, kernel_path, axis, rows):
        self._set(kernel_path, axis, rows, 0.0)

    def opt_state(self, opt_state):
        adam = opt_state["base"][0]
        zero = lambda tree: jax.tree.map(lambda m, x: np.where(m, 0.0, np.asarray(x)), self.touched, tree)
        new = type(opt_state)(opt_state)
        new["base"] = (adam._replace(mu=zero(adam.mu), nu=zero(adam.nu)), *opt_state["base"][1:])
        return new


def _same(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def _check_nonzero_moments(learner, expect):
    """The touched entries had non-zero moments before, so a reset is observable."""
    adam = learner.opt_state["base"][0]
    for t, m in zip(jax.tree.leaves(expect.touched), jax.tree.leaves(adam.nu), strict=True):
        assert np.all(np.asarray(m)[t] != 0)


# ----------------------------------------------------------------------------------------------- MLP

MLP = make_network(NetConfig(widths=(8, 8, 8), activation="relu", shared=True), (4,), 3, False)
MLP_OBS = jax.random.normal(jax.random.PRNGKey(42), (64, 4))
DEAD0, DEAD2 = [1, 5], [2, 6]  # layers 0 and 2 (not adjacent, so no weight is both incoming and outgoing)


def _planted_mlp(iv, seed=0):
    plants = [(("torso", "dense_0"), DEAD0, -1.0), (("torso", "dense_2"), DEAD2, -1.0)]
    learner = _learner(MLP, iv, MLP_OBS, 3, plants, {("torso", "dense_1", "kernel"): (0, DEAD0)}, seed=seed)
    _, acts = MLP.apply_with_activations(learner.params, learner.net_state, MLP_OBS)
    assert [_np_dormant(acts[f"torso/act_{i}"]) for i in range(3)] == [set(DEAD0), set(), set(DEAD2)]
    return learner


def _mlp_expect(learner, fresh, zero_bias=True):
    e = Expect(learner, fresh)
    e.incoming(("torso", "dense_0"), DEAD0, zero_bias)
    e.outgoing(("torso", "dense_1", "kernel"), 0, DEAD0)
    e.incoming(("torso", "dense_2"), DEAD2, zero_bias)
    e.outgoing(("policy_head", "main", "kernel"), 0, DEAD2)  # every consumer: both heads
    e.outgoing(("value_head", "main", "kernel"), 0, DEAD2)
    return e


def test_mlp_recycles_exactly_the_dead_units_shared_torso():
    iv = redo.make(redo.Options(tau=TAU, frequency=1))
    learner = _planted_mlp(iv)
    key = jax.random.PRNGKey(7)
    ctx = _ctx(MLP, iv)
    out = iv.after_update(ctx, learner, key, 0, _acts(MLP, learner, MLP_OBS))
    e = _mlp_expect(learner, ctx.fresh_params(key))
    _check_nonzero_moments(learner, e)
    _same(out.params, e.params)
    _same(out.opt_state, e.opt_state(learner.opt_state))
    assert int(out.opt_state["base"][0].count) == 3  # step count untouched
    # the fresh incoming columns are real (non-zero) samples and the biases went from -1 to 0
    assert np.all(np.asarray(out.params["torso"]["dense_0"]["kernel"])[:, DEAD0] != 0)
    assert np.all(np.asarray(out.params["torso"]["dense_2"]["bias"])[DEAD2] == 0)


def test_reference_options_keep_bias_and_moments():
    iv = redo.make(redo.Options(tau=TAU, frequency=1, zero_bias=False, reset_optimizer=False))
    learner = _planted_mlp(iv)
    key = jax.random.PRNGKey(7)
    ctx = _ctx(MLP, iv)
    out = iv.after_update(ctx, learner, key, 0, _acts(MLP, learner, MLP_OBS))
    e = _mlp_expect(learner, ctx.fresh_params(key), zero_bias=False)
    _same(out.params, e.params)
    assert np.all(np.asarray(out.params["torso"]["dense_2"]["bias"])[DEAD2] == -1.0)
    _same(out.opt_state, learner.opt_state)


def test_schedule_vmap_over_seeds_and_jit():
    iv = redo.make(redo.Options(tau=TAU, frequency=3))
    learner = _planted_mlp(iv)
    ctx = _ctx(MLP, iv)
    key = jax.random.PRNGKey(7)
    hook = jax.jit(lambda lr, idx: iv.after_update(ctx, lr, key, idx, _acts(MLP, lr, MLP_OBS)))
    want = _mlp_expect(learner, ctx.fresh_params(key))
    for idx in range(10):
        out = hook(learner, jnp.int32(idx))
        if idx in (2, 5, 8):
            _same(out.params, want.params)  # jit == the NumPy expectation
            _same(out.opt_state, want.opt_state(learner.opt_state))
        else:
            _same(out, learner)

    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), learner)
    fn = jax.jit(jax.vmap(lambda lr, k, idx: iv.after_update(ctx, lr, k, idx, _acts(MLP, lr, MLP_OBS)),
                          in_axes=(0, 0, None)))
    out = fn(stacked, keys, jnp.int32(2))
    cols = []
    for i in range(2):
        got = jax.tree.map(lambda x, i=i: x[i], out)
        e = _mlp_expect(learner, ctx.fresh_params(keys[i]))
        _same(got.params, e.params)
        _same(got.opt_state, e.opt_state(learner.opt_state))
        cols.append(np.asarray(got.params["torso"]["dense_0"]["kernel"])[:, DEAD0])
    assert not np.array_equal(cols[0], cols[1])  # different keys, different fresh samples
    _same(fn(stacked, keys, jnp.int32(3)), stacked)  # not due: untouched under vmap


def test_separate_towers_only_touch_their_own_head():
    net = make_network(NetConfig(widths=(8, 8), activation="relu", shared=False), (4,), 3, False)
    iv = redo.make(redo.Options(tau=TAU, frequency=1))
    learner = _learner(net, iv, MLP_OBS, 3, [(("critic_torso", "dense_1"), [3], -1.0)])
    _, acts = net.apply_with_activations(learner.params, learner.net_state, MLP_OBS)
    assert {k: _np_dormant(v) for k, v in acts.items()} == {"actor_torso/act_0": set(), "actor_torso/act_1": set(),
                                                           "critic_torso/act_0": set(), "critic_torso/act_1": {3}}
    key = jax.random.PRNGKey(9)
    ctx = _ctx(net, iv)
    out = iv.after_update(ctx, learner, key, 0, acts)
    e = Expect(learner, ctx.fresh_params(key))
    e.incoming(("critic_torso", "dense_1"), [3])
    e.outgoing(("value_head", "main", "kernel"), 0, [3])  # the policy head does not read the critic tower
    _same(out.params, e.params)
    _same(out.opt_state, e.opt_state(learner.opt_state))


# --------------------------------------------------------------------------------------------- CReLU


def test_crelu_unit_recycled_only_when_both_halves_dormant():
    """CReLU unit i feeds outputs i (relu(x)) and i + width (relu(-x)). Planted in layer 0 (width 8):
    unit 2 with pre-activation 0 (both halves dead -> recycled: dense_1 rows 2 and 10 zeroed); unit 5 with
    pre-activation -1 (relu half dead, relu(-x) = 1 alive -> kept); unit 6 with +1 (negative half dead -> kept)."""
    net = make_network(NetConfig(widths=(8, 8), activation="crelu", shared=True), (4,), 3, False)
    iv = redo.make(redo.Options(tau=TAU, frequency=1))
    plants = [(("torso", "dense_0"), [2], 0.0), (("torso", "dense_0"), [5], -1.0), (("torso", "dense_0"), [6], 1.0)]
    learner = _learner(net, iv, MLP_OBS, 3, plants, {("torso", "dense_1", "kernel"): (0, [2, 5, 8 + 2, 8 + 6])})
    _, acts = net.apply_with_activations(learner.params, learner.net_state, MLP_OBS)
    assert _np_dormant(acts["torso/act_0"]) == {2, 5, 8 + 2, 8 + 6}  # output-level dormancy (16 outputs)
    half = _np_dormant(acts["torso/act_1"])  # layer 1 may have half-dormant units, but no fully dormant one
    assert not {i for i in range(8) if i in half and i + 8 in half}
    key = jax.random.PRNGKey(7)
    ctx = _ctx(net, iv)
    out = iv.after_update(ctx, learner, key, 0, acts)
    e = Expect(learner, ctx.fresh_params(key))
    e.incoming(("torso", "dense_0"), [2])
    e.outgoing(("torso", "dense_1", "kernel"), 0, [2, 8 + 2])
    _same(out.params, e.params)
    _same(out.opt_state, e.opt_state(learner.opt_state))
    np.testing.assert_array_equal(np.asarray(out.params["torso"]["dense_0"]["bias"])[[5, 6]], [-1.0, 1.0])


# ------------------------------------------------------------------------------------ conv -> dense


def test_nature_cnn_conv_channels_and_nhwc_flatten():
    """Obs 44x44x1: conv outputs 10x10x32, 4x4x64, 2x2x64, so the flatten has 4 positions x 64 channels and
    a dead channel c of the last conv owns dense_0 rows p*64 + c (NHWC). A dead channel of conv_0 is zeroed
    on conv_1's input-channel axis."""
    net = make_network(NetConfig(torso="nature_cnn", widths=(16,), activation="relu", shared=True), (44, 44, 1),
                       3, False)
    obs = jax.random.uniform(jax.random.PRNGKey(4), (16, 44, 44, 1), minval=0.0, maxval=255.0)
    iv = redo.make(redo.Options(tau=TAU, frequency=1))
    c0, c2 = 3, 5
    rows = np.flatnonzero(np.arange(4 * 64) % 64 == c2)  # independent NHWC positions p*C + c of channel c2
    np.testing.assert_array_equal(rows, [5, 69, 133, 197])
    learner = _learner(net, iv, obs, 3, [(("torso", "conv_0"), [c0], -1.0), (("torso", "conv_2"), [c2], -1.0)],
                       {("torso", "conv_1", "kernel"): (2, [c0]), ("torso", "dense_0", "kernel"): (0, rows)}, steps=2)
    _, acts = net.apply_with_activations(learner.params, learner.net_state, obs)
    assert [acts[f"torso/act_{i}"].shape[1:] for i in range(4)] == [(10, 10, 32), (4, 4, 64), (2, 2, 64), (16,)]
    assert [_np_dormant(acts[f"torso/act_{i}"]) for i in range(4)] == [{c0}, set(), {c2}, set()]
    key = jax.random.PRNGKey(7)
    ctx = _ctx(net, iv)
    out = iv.after_update(ctx, learner, key, 0, acts)

    e = Expect(learner, ctx.fresh_params(key))
    e.incoming(("torso", "conv_0"), [c0])
    e.outgoing(("torso", "conv_1", "kernel"), 2, [c0])
    e.incoming(("torso", "conv_2"), [c2])
    e.outgoing(("torso", "dense_0", "kernel"), 0, rows)
    _check_nonzero_moments(learner, e)
    _same(out.params, e.params)
    _same(out.opt_state, e.opt_state(learner.opt_state))
    dense = np.asarray(out.params["torso"]["dense_0"]["kernel"])
    assert np.all(dense[rows] == 0) and np.all(np.delete(dense, rows, axis=0) != 0)


# ----------------------------------------------------------------------------------------- target network


def test_touched_entries_are_mirrored_into_the_target():
    """A unit with a target network (TD3/SAC/C51): after recycling, the target equals the new online params on
    exactly the touched entries (incoming kernels and biases, outgoing rows of every consumer) and is
    bit-identical to the old target everywhere else. The target lags the online net (it is the init params,
    before the Adam steps), so "unchanged elsewhere" is distinguishable from "copied everywhere"."""
    iv = redo.make(redo.Options(tau=TAU, frequency=1))
    learner = _planted_mlp(iv)
    lagging = MLP.init(jax.random.PRNGKey(0))["params"]
    for a, b in zip(jax.tree.leaves(lagging), jax.tree.leaves(learner.params), strict=True):
        assert np.all(np.asarray(a) != np.asarray(b))  # the target differs from the online net everywhere
    unit = learner.replace(target=lagging)
    key = jax.random.PRNGKey(7)
    ctx = _ctx(MLP, iv)
    out = iv.after_update(ctx, unit, key, 0, _acts(MLP, unit, MLP_OBS))
    e = _mlp_expect(learner, ctx.fresh_params(key))
    _same(out.params, e.params)  # the online recycling is the same with a target
    _same(out.opt_state, e.opt_state(learner.opt_state))
    want = jax.tree.map(lambda m, p, t: np.where(m, p, np.asarray(t)), e.touched, e.params, lagging)
    _same(out.target, want)
    assert sum(int(m.sum()) for m in jax.tree.leaves(e.touched)) > 0  # (a real comparison)

    # the exact-copy target of the brief: target == online params everywhere after the hook
    out = iv.after_update(ctx, learner.replace(target=learner.params), key, 0, _acts(MLP, learner, MLP_OBS))
    _same(out.target, out.params)

    # under jit and vmap over seeds, too
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), unit)
    keys = jnp.stack([key, jax.random.PRNGKey(8)])
    fn = jax.jit(jax.vmap(lambda u, k: iv.after_update(ctx, u, k, jnp.int32(0), _acts(MLP, u, MLP_OBS))))
    got = fn(stacked, keys)
    for i in range(2):
        e = _mlp_expect(learner, ctx.fresh_params(keys[i]))
        want = jax.tree.map(lambda m, p, t: np.where(m, p, np.asarray(t)), e.touched, e.params, lagging)
        _same(jax.tree.map(lambda x, i=i: x[i], got.target), want)

    # mirror_target=False: the target is left exactly as it was
    iv_off = redo.make(redo.Options(tau=TAU, frequency=1, mirror_target=False))
    out = iv_off.after_update(_ctx(MLP, iv_off), unit, key, 0, _acts(MLP, unit, MLP_OBS))
    _same(out.params, _mlp_expect(learner, ctx.fresh_params(key)).params)
    _same(out.target, lagging)
