"""Task-switch options of the scheduled interventions (continual runs), tested on the hooks themselves
(``on_task_switch(ctx, unit, key, task, acts)`` / ``after_update``) on units trained by a few real Adam steps:

* ``--rl.on-task-switch``: the heads become exactly the fresh sample of the hook's key (and differ from before),
  their Adam moments are zeroed, the torsos and their moments are bit-identical, the target gets the reset heads;
  ``--rl.frequency 0`` drops the periodic hook and its schedule.
* ``--redo.on-task-switch``: exactly the units dormant in the activations the hook is handed are recycled
  (NumPy expectation: incoming columns fresh, bias 0, outgoing rows 0, their moments 0), another set of acts
  recycles another set of units; the hook asks for the switch activations; ``--redo.frequency 0`` asks for no
  periodic activations.
* ``--snp.on-task-switch``: params become coef * theta + (1 - coef) * phi (phi the fresh sample), once, in soft
  and in hard mode (``--snp.frequency 0``: no periodic application at all).
* ``--pi.every-task``: injects after update u with u % task_updates == max(int(task_updates * at), 1) - 1, and
  falls back to the run-level index without a task sequence. ``--pi.on-task-switch``: a second injection folds
  the injected function into main exactly (main + (new - frozen), bit for bit), leaves the network's (and the
  target's) outputs unchanged to float tolerance, re-samples new == frozen with fresh moments; after it training
  moves new and the torso but not main or frozen (paper mode); in reference mode the fold adds nothing and main
  keeps training.
* ``compose`` of two switch hooks fires each exactly once (with its own split key); flags and switch
  activations are collected; option errors are one line naming the flag."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tree_asserts import all_changed, assert_same, assert_ulps

from plasticine_jax.algos.state import Unit
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions import injection as pi
from plasticine_jax.interventions import redo
from plasticine_jax.interventions import reset_layers as rl
from plasticine_jax.interventions import shrink_perturb as snp
from plasticine_jax.interventions.base import Context, Intervention, build_optimizer, compose, default_hparams
from plasticine_jax.nets import NetConfig, make_network

HEADS = ("policy_head", "value_head")
TORSOS = ("actor_torso", "critic_torso")
OBS = jax.random.normal(jax.random.PRNGKey(42), (64, 4))
TASK = jnp.int32(1)  # the task that begins (the hooks under test do not read it)
NET = make_network(NetConfig(widths=(8, 8), activation="tanh"), (4,), 3, False)
# rl, redo and snp add nothing to the optimizer chain: one optimizer (and one compiled step) serves them all
TX = build_optimizer(Intervention("vanilla", 0), {}, 1e-2, 0.5, 1e-5, NET)


def _ctx(net=NET, tx=TX, num_updates=12, task_updates=4):
    return Context(net, num_updates=num_updates, steps_per_update=4, env_steps_per_update=64, tx=tx,
                   task_updates=task_updates)


def _make_step(net, tx):
    """One real optimizer step on a PPO-like loss (categorical policy gradient + value regression)."""

    def loss(params, net_state, key):
        k1, k2, k3 = jax.random.split(key, 3)
        act = jax.random.randint(k1, (OBS.shape[0],), 0, 3)
        adv, ret = jax.random.normal(k2, (OBS.shape[0],)), jax.random.normal(k3, (OBS.shape[0],))
        logits, value = net.apply(params, net_state, OBS)
        logp = jax.nn.log_softmax(logits)[jnp.arange(OBS.shape[0]), act]
        return -(logp * adv).mean() + 0.5 * ((value - ret) ** 2).mean()

    @jax.jit
    def step(unit, key):
        grads = jax.grad(loss)(unit.params, unit.net_state, key)
        updates, opt_state = tx.update(grads, unit.opt_state, unit.params)
        return unit.replace(params=optax.apply_updates(unit.params, updates), opt_state=opt_state)

    def train(unit, n=3, seed=0):
        for i in range(n):
            unit = step(unit, jax.random.PRNGKey(1000 + 10 * seed + i))
        return unit

    return train


TRAIN = _make_step(NET, TX)


def _unit(iv, net=NET, tx=TX, train=TRAIN, seed=0, steps=3):
    """Init (+ the intervention's init hook), then ``steps`` real Adam steps: params differ from any init and
    every Adam moment is non-zero."""
    variables = net.init(jax.random.PRNGKey(seed))
    params = variables.pop("params")
    hp = {k: jnp.float32(v) for k, v in default_hparams(iv).items()}
    unit = Unit(params, variables, tx.init(params), {}, hp)
    if iv.init is not None:
        unit = iv.init(_ctx(net, tx), unit, jax.random.PRNGKey(99))
    return train(unit, steps, seed)


def _acts(unit, net=NET):
    return net.apply_with_activations(unit.params, unit.net_state, OBS)[1]


def _zero(tree):
    return all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(tree))


def _nonzero(tree):
    return all(np.all(np.asarray(x) != 0) for x in jax.tree.leaves(tree))


def _adam(unit):
    return unit.opt_state["base"][0]


def _close(got, want, atol=1e-6):
    jax.tree.map(lambda g, w: np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=atol), got,
                 want)


# ------------------------------------------------------------------------------------------ reset layers


def test_reset_layers_on_switch_resets_heads_only():
    iv = rl.make(rl.Options(frequency=0, on_task_switch=True))
    assert iv.after_update is None and iv.schedules == () and iv.task_flags == ("--rl.on-task-switch",)
    assert not iv.switch_activations
    unit = _unit(iv)
    lagging = NET.init(jax.random.PRNGKey(0))["params"]  # a target lagging the online net
    assert all_changed(lagging, unit.params)
    unit = unit.replace(target=lagging)
    ctx, key = _ctx(), jax.random.PRNGKey(7)
    out = iv.on_task_switch(ctx, unit, key, TASK, _acts(unit))
    fresh = ctx.fresh_params(key)
    adam0, adam1 = _adam(unit), _adam(out)
    for h in HEADS:
        assert_same(out.params[h], fresh[h])
        assert all_changed(out.params[h]["main"]["kernel"], unit.params[h]["main"]["kernel"])
        assert _nonzero(adam0.mu[h]) and _zero(adam1.mu[h]) and _zero(adam1.nu[h])
        assert_same(out.target[h], fresh[h])  # mirrored into the target
    for t in TORSOS:
        assert_same(out.params[t], unit.params[t])
        assert_same(adam1.mu[t], adam0.mu[t])
        assert_same(adam1.nu[t], adam0.nu[t])
        assert_same(out.target[t], lagging[t])
    assert_same(adam1.count, adam0.count)
    # under jit with a traced task index: the same reset (to a float bit or two: XLA fuses the init sampler's
    # float math differently under jit)
    assert_ulps(jax.jit(lambda u, t: iv.on_task_switch(ctx, u, key, t, _acts(u)))(unit, TASK), out)

    # the periodic reset stays alongside the switch reset (both fire the same reset)
    both = rl.make(rl.Options(frequency=5, on_task_switch=True))
    assert both.schedules == (("--rl.frequency", 5),) and both.after_update is not None
    assert_same(both.on_task_switch(ctx, unit, key, TASK, _acts(unit)), out)
    assert_same(both.after_update(ctx, unit, key, jnp.int32(4), _acts(unit)), out)
    assert rl.make(rl.Options()).on_task_switch is None and rl.make(rl.Options()).task_flags == ()


# ------------------------------------------------------------------------------------------------- ReDo


def _np_dormant(a, tau=0.025):
    """Independent ReDo score on |a| (tanh): E|a_i| / mean_j E|a_j| <= tau."""
    s = np.abs(np.asarray(a, np.float64)).mean(0)
    return set(np.flatnonzero(s / (s.mean() + 1e-9) <= tau).tolist())


def _planted_acts(acts, dead):
    """The unit's real activations with the ``dead`` {group: units} columns zeroed (dormant)."""
    out = dict(acts)
    for g, units in dead.items():
        out[g] = acts[g].at[:, jnp.asarray(units)].set(0.0)
    return out


def _redo_expect(unit, fresh, dead):
    """NumPy expectation for this MLP (two towers of two tanh layers): incoming kernel columns fresh, bias 0,
    outgoing rows 0 (the next layer, or the tower's head), Adam moments of the touched entries 0."""
    params = jax.tree.map(np.array, unit.params)
    touched = jax.tree.map(lambda x: np.zeros(x.shape, bool), params)
    for g, units in dead.items():
        tower, layer = g.split("/")
        i = int(layer.split("_")[1])
        dense = params[tower][f"dense_{i}"]
        dense["kernel"][:, units] = np.asarray(fresh[tower][f"dense_{i}"]["kernel"])[:, units]
        dense["bias"][units] = 0.0
        touched[tower][f"dense_{i}"]["kernel"][:, units] = True
        touched[tower][f"dense_{i}"]["bias"][units] = True
        nxt = (tower, f"dense_{i + 1}") if i == 0 else ({"actor_torso": "policy_head",
                                                          "critic_torso": "value_head"}[tower], "main")
        params[nxt[0]][nxt[1]]["kernel"][units, :] = 0.0
        touched[nxt[0]][nxt[1]]["kernel"][units, :] = True
    adam = _adam(unit)
    zero = lambda tree: jax.tree.map(lambda m, x: np.where(m, 0.0, np.asarray(x)), touched, tree)
    return params, zero(adam.mu), zero(adam.nu), touched


@pytest.mark.parametrize("dead", [{"actor_torso/act_0": [1, 5], "critic_torso/act_1": [3]},
                                  {"actor_torso/act_1": [0, 6]}])
def test_redo_on_switch_recycles_exactly_the_units_dormant_in_the_given_acts(dead):
    iv = redo.make(redo.Options(frequency=0, on_task_switch=True))
    assert iv.after_update is None and iv.activation_every == () and iv.schedules == ()
    assert iv.switch_activations and iv.task_flags == ("--redo.on-task-switch",)
    assert not bool(iv.activations_due(jnp.int32(0)))  # no period 0 in activation_every
    unit = _unit(iv)
    real = _acts(unit)
    assert all(not _np_dormant(a) for a in real.values())  # tanh, centred inputs: nothing dormant on its own
    acts = _planted_acts(real, dead)
    assert {g: sorted(_np_dormant(a)) for g, a in acts.items() if _np_dormant(a)} == dead
    ctx, key = _ctx(), jax.random.PRNGKey(7)
    out = iv.on_task_switch(ctx, unit, key, TASK, acts)
    params, mu, nu, touched = _redo_expect(unit, ctx.fresh_params(key), dead)
    assert_same(out.params, params)
    assert all(np.all(np.asarray(m)[t] != 0) for m, t in zip(jax.tree.leaves(_adam(unit).nu),
                                                               jax.tree.leaves(touched), strict=True))
    assert_same(_adam(out).mu, mu)
    assert_same(_adam(out).nu, nu)
    assert sum(int(t.sum()) for t in jax.tree.leaves(touched)) > 0  # (a no-op would fail the comparison)
    # the real (undead) activations recycle nothing: the hook reads what it is handed, nothing else
    assert_same(iv.on_task_switch(ctx, unit, key, TASK, real), unit)


def test_redo_periodic_and_switch_together():
    iv = redo.make(redo.Options(frequency=3, on_task_switch=True))
    assert iv.activation_every == (3,) and iv.schedules == (("--redo.frequency", 3),) and iv.switch_activations
    plain = redo.make(redo.Options())
    assert plain.on_task_switch is None and not plain.switch_activations and plain.task_flags == ()
    unit = _unit(iv, steps=1)
    dead = {"critic_torso/act_0": [2]}
    acts = _planted_acts(_acts(unit), dead)
    ctx, key = _ctx(), jax.random.PRNGKey(3)
    want = iv.on_task_switch(ctx, unit, key, TASK, acts)
    assert_same(want.params, _redo_expect(unit, ctx.fresh_params(key), dead)[0])
    assert_same(iv.after_update(ctx, unit, key, jnp.int32(2), acts), want)  # the same recycling on schedule


# -------------------------------------------------------------------------------------- shrink & perturb

COEF = 0.4


@pytest.mark.parametrize("mode,frequency", [("soft", 10), ("hard", 0), ("hard", 5)])
def test_snp_on_switch_is_one_shrink_and_perturb(mode, frequency):
    iv = snp.make(snp.Options(coef=COEF, mode=mode, frequency=frequency, on_task_switch=True))
    assert iv.task_flags == ("--snp.on-task-switch",)
    if mode == "hard" and frequency == 0:
        assert iv.after_update is None and iv.after_step is None and iv.schedules == ()
    unit = _unit(iv)
    ctx, key = _ctx(), jax.random.PRNGKey(7)
    out = iv.on_task_switch(ctx, unit, key, TASK, _acts(unit))
    phi = ctx.fresh_params(key)
    c = np.float32(COEF)
    want = jax.tree.map(lambda t, f: c * np.asarray(t) + (np.float32(1) - c) * np.asarray(f), unit.params, phi)
    _close(out.params, want)
    assert all_changed(out.params, unit.params)
    assert_same(out.opt_state, unit.opt_state)
    assert_same(out.net_state, unit.net_state)
    # once: a second application is not what one switch gives
    twice = jax.tree.map(lambda t, f: c * t + (np.float32(1) - c) * np.asarray(f), want, phi)
    assert not np.allclose(np.asarray(twice["actor_torso"]["dense_0"]["kernel"]),
                           np.asarray(out.params["actor_torso"]["dense_0"]["kernel"]), rtol=1e-3, atol=1e-4)


def test_snp_on_switch_toward_theta0():
    iv = snp.make(snp.Options(coef=COEF, target="init", mode="hard", frequency=0, on_task_switch=True))
    unit = _unit(iv)
    theta0 = NET.init(jax.random.PRNGKey(0))["params"]
    out = iv.on_task_switch(_ctx(), unit, jax.random.PRNGKey(7), TASK, _acts(unit))
    c = np.float32(COEF)
    _close(out.params, jax.tree.map(lambda t, f: c * np.asarray(t) + (np.float32(1) - c) * np.asarray(f),
                                    unit.params, theta0))
    assert snp.make(snp.Options()).on_task_switch is None


# ------------------------------------------------------------------------------------ plasticity injection

PI_CFG = NetConfig(widths=(8, 8), activation="tanh", injection=True)
PI_NET = make_network(PI_CFG, (4,), 3, False)
PI_TX = {m: build_optimizer(pi.make(pi.Options(mode=m)), {}, 1e-2, 0.5, 1e-5, PI_NET) for m in ("paper", "reference")}
PI_TRAIN = {m: _make_step(PI_NET, tx) for m, tx in PI_TX.items()}


def _injected(unit):
    return bool(optax.tree_utils.tree_get(unit.opt_state, "injected"))


@pytest.mark.parametrize("every_task,task_updates,at,fired", [
    (True, 4, 0.5, [1, 5, 9]),
    (True, 4, 0.0, [0, 4, 8]),
    (True, 5, 0.75, [2, 7]),
    (True, 0, 0.5, [5]),  # no task sequence: the run-level index
    (False, 4, 0.5, [5]),  # the default: once, at fraction `at` of the run
])
def test_pi_every_task_schedule(every_task, task_updates, at, fired):
    iv = pi.make(pi.Options(at=at, every_task=every_task))
    assert iv.task_flags == (("--pi.every-task",) if every_task else ())
    assert iv.on_task_switch is None
    ctx = _ctx(PI_NET, PI_TX["paper"], num_updates=12, task_updates=task_updates)
    unit = _unit(iv, PI_NET, PI_TX["paper"], PI_TRAIN["paper"], steps=0)
    hook = jax.jit(lambda u, idx: iv.after_update(ctx, u, jax.random.PRNGKey(1), idx, {}))
    assert [i for i in range(12) if _injected(hook(unit, jnp.int32(i)))] == fired


def _fold(params):
    """main + (new - frozen), computed independently in float32 NumPy, per head."""
    out = jax.tree.map(np.array, params)
    for h in HEADS:
        for leaf in ("kernel", "bias"):
            p = params[h]
            out[h]["main"][leaf] = np.asarray(p["main"][leaf]) + (np.asarray(p["new"][leaf])
                                                                   - np.asarray(p["frozen"][leaf]))
    return out


def test_pi_second_injection_folds_exactly_and_keeps_the_function():
    iv = pi.make(pi.Options(every_task=True, on_task_switch=True))
    assert iv.task_flags == ("--pi.every-task", "--pi.on-task-switch")
    ctx, train = _ctx(PI_NET, PI_TX["paper"]), PI_TRAIN["paper"]
    unit = _unit(iv, PI_NET, PI_TX["paper"], train)
    first = iv.on_task_switch(ctx, unit, jax.random.PRNGKey(1), TASK, _acts(unit, PI_NET))  # first injection
    assert _injected(first)
    for h in HEADS:  # the first injection folds nothing (the gates were closed)
        assert_same(first.params[h]["main"], unit.params[h]["main"])
    lagging = train(first, n=1, seed=1).params  # a target lagging the online net by two steps
    before = train(first, n=3, seed=1).replace(target=lagging)
    for h in HEADS:  # new trained away from frozen, in the target too: the folds have something to fold
        assert all_changed(before.params[h]["new"], before.params[h]["frozen"])
        assert all_changed(lagging[h]["new"], lagging[h]["frozen"])
        assert all_changed(lagging[h]["new"], before.params[h]["new"])
        assert_same(before.params[h]["main"], unit.params[h]["main"])
    key = jax.random.PRNGKey(2)
    after = iv.on_task_switch(ctx, before, key, jnp.int32(2), _acts(before, PI_NET))

    # the fold is the exact sum, on the online net and (from its own heads) on the target
    fold, tfold, fresh = _fold(before.params), _fold(lagging), ctx.fresh_params(key)
    for h in HEADS:
        assert_same(after.params[h]["main"], fold[h]["main"])
        assert_same(after.target[h]["main"], tfold[h]["main"])
        for tree in (after.params, after.target):
            assert_same(tree[h]["new"], fresh[h]["new"])
            assert_same(tree[h]["frozen"], fresh[h]["new"])
        assert float(after.net_state["injection"][h]["gate"]) == 1.0
        adam0, adam1 = _adam(before), _adam(after)
        assert _nonzero(adam0.mu[h]["new"]) and _zero(adam1.mu[h]["new"]) and _zero(adam1.nu[h]["new"])
        assert_same(adam1.mu[h]["main"], adam0.mu[h]["main"])
    for t in TORSOS:
        assert_same(after.params[t], before.params[t])
        assert_same(after.target[t], lagging[t])
    assert _injected(after)

    # the network's (and the target's) outputs are unchanged by the second injection
    for p0, p1 in ((before.params, after.params), (lagging, after.target)):
        out0 = PI_NET.apply(p0, before.net_state, OBS)
        out1 = PI_NET.apply(p1, after.net_state, OBS)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=2e-6),
                     out0, out1)
    assert all_changed(after.params[HEADS[0]]["main"], before.params[HEADS[0]]["main"])  # (a real fold)

    # after it: training moves new and the torso, never main nor frozen
    trained = train(after.replace(target=None), n=3, seed=2)
    for h in HEADS:
        assert_same(trained.params[h]["main"], after.params[h]["main"])
        assert_same(trained.params[h]["frozen"], after.params[h]["frozen"])
        assert all_changed(trained.params[h]["new"], after.params[h]["new"])
    assert all_changed(trained.params["actor_torso"], after.params["actor_torso"])

    # the every-task schedule folds the same way (update 1 of a 4-update task), also under jit (to a float bit)
    sched = jax.jit(lambda u, idx: iv.after_update(ctx, u, key, idx, {}))
    assert_ulps(sched(before, jnp.int32(5)), after)
    assert_same(sched(before, jnp.int32(6)), before)


def test_pi_reference_mode_second_injection_adds_nothing_and_main_keeps_training():
    iv = pi.make(pi.Options(mode="reference", on_task_switch=True))
    ctx, train = _ctx(PI_NET, PI_TX["reference"]), PI_TRAIN["reference"]
    unit = _unit(iv, PI_NET, PI_TX["reference"], train)
    first = train(iv.on_task_switch(ctx, unit, jax.random.PRNGKey(1), TASK, {}), n=3, seed=1)
    assert all_changed(first.params[HEADS[0]]["main"], unit.params[HEADS[0]]["main"])  # main trains on
    after = iv.on_task_switch(ctx, first, jax.random.PRNGKey(2), jnp.int32(2), {})
    for h in HEADS:
        assert_same(after.params[h]["main"], first.params[h]["main"])  # new == frozen: main + 0
        assert_same(after.params[h]["new"], after.params[h]["frozen"])
    trained = train(after, n=2, seed=2)
    assert all_changed(trained.params[HEADS[0]]["main"], after.params[HEADS[0]]["main"])
    assert_same(trained.params[HEADS[0]]["new"], after.params[HEADS[0]]["new"])


def test_pi_under_vmap_over_seeds():
    """Seeds whose injection state differs (one injected, one not) each get their own branch under vmap."""
    iv = pi.make(pi.Options(on_task_switch=True))
    ctx, train = _ctx(PI_NET, PI_TX["paper"]), PI_TRAIN["paper"]
    fresh_unit = _unit(iv, PI_NET, PI_TX["paper"], train, steps=1)
    injected = train(pi.inject(ctx, fresh_unit, jax.random.PRNGKey(5)), n=2, seed=3)
    units = [fresh_unit, injected]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *units)
    keys = jax.random.split(jax.random.PRNGKey(6), 2)
    got = jax.jit(jax.vmap(lambda u, k: iv.on_task_switch(ctx, u, k, TASK, {})))(stacked, keys)
    for i, u in enumerate(units):
        _close(jax.tree.map(lambda x, i=i: x[i], got), iv.on_task_switch(ctx, u, keys[i], TASK, {}))
    assert_same(jax.tree.map(lambda x: x[0], got).params[HEADS[0]]["main"], fresh_unit.params[HEADS[0]]["main"])
    assert_same(jax.tree.map(lambda x: x[1], got).params[HEADS[0]]["main"], _fold(injected.params)[HEADS[0]]["main"])


# --------------------------------------------------------------------------------------- compose, errors


def test_compose_fires_each_switch_hook_once():
    s = snp.make(snp.Options(coef=COEF, mode="hard", frequency=0, on_task_switch=True))
    r = rl.make(rl.Options(frequency=0, on_task_switch=True))
    iv = compose([r, s])
    assert [p.name for p in iv.parts] == ["shrink_perturb", "reset_layers"]
    assert iv.task_flags == ("--snp.on-task-switch", "--rl.on-task-switch") and not iv.switch_activations
    assert iv.after_update is None and iv.schedules == ()
    unit = _unit(iv)
    ctx, key = _ctx(), jax.random.PRNGKey(7)
    out = iv.on_task_switch(ctx, unit, key, TASK, _acts(unit))
    k_snp, k_rl = jax.random.split(key, 2)
    phi, fresh = ctx.fresh_params(k_snp), ctx.fresh_params(k_rl)
    c = np.float32(COEF)
    for t in TORSOS:  # shrunk and perturbed once (by snp), not reset
        _close(out.params[t], jax.tree.map(lambda x, f: c * np.asarray(x) + (np.float32(1) - c) * np.asarray(f),
                                           unit.params[t], phi[t]))
    for h in HEADS:  # reset (by rl, after snp)
        assert_same(out.params[h], fresh[h])

    both = compose([redo.make(redo.Options(frequency=0, on_task_switch=True)),
                    pi.make(pi.Options(every_task=True))])
    assert both.switch_activations and both.task_flags == ("--redo.on-task-switch", "--pi.every-task")


@pytest.mark.parametrize("mod,opts,flag", [
    (rl, rl.Options(frequency=-1), "--rl.frequency"),
    (rl, rl.Options(frequency=0), "--rl.on-task-switch"),
    (redo, redo.Options(frequency=-2), "--redo.frequency"),
    (redo, redo.Options(frequency=0), "--redo.on-task-switch"),
    (snp, snp.Options(mode="hard", frequency=-1), "--snp.frequency"),
    (snp, snp.Options(mode="hard", frequency=0), "--snp.on-task-switch"),
    (pi, pi.Options(at=1.0, every_task=True), "--pi.at"),
])
def test_option_errors_are_one_line_naming_the_flag(mod, opts, flag):
    with pytest.raises(ConfigError) as e:
        mod.make(opts)
    assert flag in str(e.value) and "\n" not in str(e.value)


def test_frequency_zero_is_valid_with_the_switch():
    for iv in (rl.make(rl.Options(frequency=0, on_task_switch=True)),
               redo.make(redo.Options(frequency=0, on_task_switch=True)),
               snp.make(snp.Options(mode="hard", frequency=0, on_task_switch=True))):
        assert iv.on_task_switch is not None and iv.after_update is None and iv.schedules == ()
    assert snp.make(snp.Options(mode="soft", frequency=0)).after_step is not None  # soft ignores frequency
