"""Plasticity injection (reference §3.2, §6.2 item 1): the function is unchanged at the injection instant; after
it, real optimizer steps through the full chain (with the ``freeze_updates`` post transform) move only the new
head and the torso (old head and frozen copy exactly fixed); before it new/frozen never move; it fires exactly
once, after update int(num_updates * at) - 1; ``mode=reference`` keeps the old head training and never moves
the new one; the hook works under vmap over seeds and under jit; a unit with a target network gets the same
new/frozen pair in its target (``mirror_target``) and nothing else of the target changes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tree_asserts import all_changed, assert_same, assert_ulps

from plasticine_jax.algos.state import Unit
from plasticine_jax.interventions import injection as pi
from plasticine_jax.interventions.base import Context, build_optimizer
from plasticine_jax.nets import NetConfig, make_network

NUM_UPDATES = 10
HEADS = ("policy_head", "value_head")


def _setup(mode="paper", at=0.5, shared=True):
    iv = pi.make(pi.Options(at=at, mode=mode))
    cfg = iv.transform_net(NetConfig(widths=(8, 8), activation="relu", shared=shared))
    assert cfg.injection
    net = make_network(cfg, (4,), 3, False)
    tx = build_optimizer(iv, {}, 1e-2, 0.5, 1e-5, net)
    ctx = Context(net, num_updates=NUM_UPDATES, steps_per_update=4, env_steps_per_update=64, tx=tx)
    state = tx.init(net.init(jax.random.PRNGKey(0))["params"])
    assert list(state) == ["clip", "base", "post"]  # freeze_updates is last in the chain
    assert isinstance(state["post"], pi.InjectState) and not bool(state["post"].injected)
    return iv, net, ctx, tx


def _learner(net, tx, seed=0):
    variables = net.init(jax.random.PRNGKey(seed))
    params = variables.pop("params")
    return Unit(params, variables, tx.init(params), {}, {})


def _batch(key, n=32):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return (jax.random.normal(k1, (n, 4)), jax.random.randint(k2, (n,), 0, 3), jax.random.normal(k3, (n,)),
            jax.random.normal(k4, (n,)))


def _make_train(net, tx):
    """``n`` real PPO-like optimizer steps (policy-gradient + entropy + value loss) through the full chain."""

    def loss(params, net_state, batch):
        obs, act, adv, ret = batch
        logits, value = net.apply(params, net_state, obs)
        logp = jax.nn.log_softmax(logits)
        entropy = -(jnp.exp(logp) * logp).sum(-1).mean()
        pg = -(logp[jnp.arange(obs.shape[0]), act] * adv).mean()
        return pg - 0.01 * entropy + 0.5 * ((value - ret) ** 2).mean()

    @jax.jit
    def step(learner, key):
        grads = jax.grad(loss)(learner.params, learner.net_state, _batch(key))
        updates, opt_state = tx.update(grads, learner.opt_state, learner.params)
        return learner.replace(params=optax.apply_updates(learner.params, updates), opt_state=opt_state)

    def train(learner, n=4, seed=0):
        for i in range(n):
            learner = step(learner, jax.random.PRNGKey(1000 + 10 * seed + i))
        return learner

    return train


def _adam(learner):
    return learner.opt_state["base"][0]


def _injected(learner):
    """The chain's injected flag, found by field name (as ``inject`` sets it)."""
    flag = optax.tree_utils.tree_get(learner.opt_state, "injected")
    assert bool(flag) == bool(learner.opt_state["post"].injected)  # it lives in the post transform's state
    return bool(flag)


def _acts(net, learner, obs):
    """What the learner hands to ``after_update`` (injection does not read it)."""
    return net.apply_with_activations(learner.params, learner.net_state, obs)[1]


def test_paper_mode_full_lifecycle():
    iv, net, ctx, tx = _setup()
    train = _make_train(net, tx)
    learner0 = _learner(net, tx)
    obs = jax.random.normal(jax.random.PRNGKey(5), (16, 4))

    # before injection: main and the torso train, new and frozen never move, gates closed
    before = train(learner0)
    for h in HEADS:
        assert all_changed(before.params[h]["main"], learner0.params[h]["main"])
        assert_same(before.params[h]["new"], learner0.params[h]["new"])
        assert_same(before.params[h]["frozen"], learner0.params[h]["frozen"])
        assert float(before.net_state["injection"][h]["gate"]) == 0.0
    assert all_changed(before.params["torso"], learner0.params["torso"])
    assert not _injected(before)

    # the schedule: only update index int(N * at) - 1 = 4 injects
    when = int(NUM_UPDATES * 0.5) - 1
    key = jax.random.PRNGKey(11)
    hook = jax.jit(lambda lr, idx: iv.after_update(ctx, lr, key, idx, _acts(net, lr, obs)))
    for idx in range(NUM_UPDATES):
        if idx != when:
            assert_same(hook(before, jnp.int32(idx)), before)
    after = hook(before, jnp.int32(when))
    # jit == eager, to the last float bit or two: under jit XLA fuses the init sampler's float math differently
    assert_ulps(after, iv.after_update(ctx, before, key, when, _acts(net, before, obs)))

    # at the instant: the function is unchanged
    pol0, val0 = net.apply(before.params, before.net_state, obs)
    pol1, val1 = net.apply(after.params, after.net_state, obs)
    np.testing.assert_allclose(np.asarray(pol1), np.asarray(pol0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(val1), np.asarray(val0), rtol=0, atol=1e-6)
    assert not np.allclose(np.asarray(pol0), 0.0)  # (a real comparison)

    # new == frozen == one fresh sample of the new head; gates open; main and torso untouched
    fresh = ctx.fresh_params(key)
    adam0, adam1 = _adam(before), _adam(after)
    for h in HEADS:
        assert_ulps(after.params[h]["new"], fresh[h]["new"])  # (after: under jit, fresh: eager)
        assert_same(after.params[h]["frozen"], after.params[h]["new"])
        assert all_changed(after.params[h]["new"], before.params[h]["new"])
        assert_same(after.params[h]["main"], before.params[h]["main"])
        assert float(after.net_state["injection"][h]["gate"]) == 1.0
        for part in ("new", "frozen"):  # fresh optimizer state for the injected heads
            for t in (adam1.mu, adam1.nu):
                assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(t[h][part]))
        assert_same(adam1.mu[h]["main"], adam0.mu[h]["main"])
        assert_same(adam1.nu[h]["main"], adam0.nu[h]["main"])
    assert all_changed(adam0.mu[HEADS[0]]["main"], jax.tree.map(jnp.zeros_like, adam0.mu[HEADS[0]]["main"]))
    assert_same(after.params["torso"], before.params["torso"])
    assert_same(adam1.mu["torso"], adam0.mu["torso"])
    assert_same(adam1.count, adam0.count)
    assert _injected(after)

    # after: only new and the torso train; main (old head) and frozen are exactly fixed
    trained = train(after, seed=1)
    for h in HEADS:
        assert_same(trained.params[h]["main"], after.params[h]["main"])
        assert_same(trained.params[h]["frozen"], after.params[h]["frozen"])
        assert all_changed(trained.params[h]["new"], after.params[h]["new"])
    assert all_changed(trained.params["torso"], after.params["torso"])

    # exactly once: no later update re-injects
    for idx in range(when + 1, NUM_UPDATES):
        assert_same(hook(trained, jnp.int32(idx)), trained)


@pytest.mark.parametrize("at,when", [(0.3, 2), (0.95, 8), (0.0, 0)])
def test_injection_index_follows_at(at, when):
    iv, net, ctx, tx = _setup(at=at)
    learner = _learner(net, tx)
    obs = jnp.ones((4, 4))
    hook = jax.jit(lambda lr, idx: iv.after_update(ctx, lr, jax.random.PRNGKey(1), idx, _acts(net, lr, obs)))
    fired = [i for i in range(NUM_UPDATES) if _injected(hook(learner, jnp.int32(i)))]
    assert fired == [when]


def test_reference_mode_keeps_old_head_training_and_never_moves_new():
    iv, net, ctx, tx = _setup(mode="reference", shared=False)
    train = _make_train(net, tx)
    learner = _learner(net, tx)
    obs = jax.random.normal(jax.random.PRNGKey(5), (16, 4))
    before = train(learner, n=2)
    after = iv.after_update(ctx, before, jax.random.PRNGKey(2), int(NUM_UPDATES * 0.5) - 1, _acts(net, before, obs))
    pol0, _ = net.apply(before.params, before.net_state, obs)
    pol1, _ = net.apply(after.params, after.net_state, obs)
    np.testing.assert_allclose(np.asarray(pol1), np.asarray(pol0), rtol=0, atol=1e-6)
    trained = train(after, seed=1)
    for h in HEADS:
        assert float(after.net_state["injection"][h]["gate"]) == 1.0
        assert all_changed(trained.params[h]["main"], after.params[h]["main"])
        assert_same(trained.params[h]["new"], after.params[h]["new"])
        assert_same(trained.params[h]["frozen"], after.params[h]["frozen"])
    assert all_changed(trained.params["actor_torso"], after.params["actor_torso"])
    # the reference's function is the vanilla one: new - frozen == 0 exactly forever
    pol2, val2 = net.apply(trained.params, trained.net_state, obs)
    closed = {"injection": jax.tree.map(jnp.zeros_like, trained.net_state["injection"])}
    pol3, val3 = net.apply(trained.params, closed, obs)
    np.testing.assert_array_equal(np.asarray(pol2), np.asarray(pol3))
    np.testing.assert_array_equal(np.asarray(val2), np.asarray(val3))


def test_vmap_over_seeds_and_jit():
    iv, net, ctx, tx = _setup()
    learners = [_learner(net, tx, seed=s) for s in (0, 1)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *learners)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    obs = jnp.ones((2, 4, 4))
    when = int(NUM_UPDATES * 0.5) - 1
    fn = jax.jit(jax.vmap(lambda lr, k, o, idx: iv.after_update(ctx, lr, k, idx, _acts(net, lr, o)),
                          in_axes=(0, 0, 0, None)))
    out = fn(stacked, keys, obs, jnp.int32(when))
    news = []
    for i in range(2):
        got = jax.tree.map(lambda x, i=i: x[i], out)
        want = iv.after_update(ctx, learners[i], keys[i], when, _acts(net, learners[i], obs[i]))
        jax.tree.map(lambda g, w: np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-7),
                     got, want)
        fresh = ctx.fresh_params(keys[i])
        assert_same(got.params["policy_head"]["new"], fresh["policy_head"]["new"])
        assert_same(got.params["policy_head"]["frozen"], fresh["policy_head"]["new"])
        assert _injected(got)
        news.append(got.params["policy_head"]["new"])
    assert all_changed(news[0], news[1])  # different keys, different injected heads
    idle = fn(stacked, keys, obs, jnp.int32(when + 1))  # not due: nothing changes under vmap either
    assert_same(idle, stacked)


def test_other_interventions_never_move_the_frozen_copy():
    """Composed with shrink & perturb (every step) and head resets, the frozen copy stays exactly fixed."""
    from plasticine_jax.interventions import reset_layers as rl
    from plasticine_jax.interventions import shrink_perturb as snp

    iv, net, ctx, tx = _setup()
    learner = pi.inject(ctx, _learner(net, tx), jax.random.PRNGKey(7))
    frozen = {h: learner.params[h]["frozen"] for h in HEADS}
    s = snp.make(snp.Options(coef=0.5))
    after = s.after_step(ctx, learner.replace(hp={"shrink_perturb.coef": jnp.float32(0.5)}), jax.random.PRNGKey(1))
    r = rl.make(rl.Options(which="heads", frequency=1))
    after = r.after_update(ctx, after, jax.random.PRNGKey(2), jnp.int32(0), _acts(net, after, jnp.zeros((4, 4))))
    for h in HEADS:
        assert_same(after.params[h]["frozen"], frozen[h])
        assert all_changed(after.params[h]["new"], learner.params[h]["new"])
        assert all_changed(after.params[h]["main"]["kernel"], learner.params[h]["main"]["kernel"])  # bias: 0 -> 0


def test_injection_is_mirrored_into_the_target():
    """A unit with a target network gets the same new == frozen pair in its target (so the target keeps
    computing the target function it computed before, plus a zero), and nothing else of the target changes:
    main heads and the torso keep the target's own (lagging) values. The injection has no option to skip the
    target (``injection.Options`` has no ``mirror_target``)."""
    iv, net, ctx, tx = _setup()
    train = _make_train(net, tx)
    learner0 = _learner(net, tx)
    before = train(learner0)
    lagging = learner0.params  # the target lags the online net: the params before the 4 steps
    for h in HEADS:
        assert all_changed(before.params[h]["main"], lagging[h]["main"])
    assert all_changed(before.params["torso"], lagging["torso"])
    unit = before.replace(target=lagging)
    key = jax.random.PRNGKey(11)
    when = int(NUM_UPDATES * 0.5) - 1
    obs = jax.random.normal(jax.random.PRNGKey(5), (16, 4))
    after = iv.after_update(ctx, unit, key, when, _acts(net, unit, obs))
    assert_same(after.replace(target=None), iv.after_update(ctx, before, key, when, _acts(net, before, obs)))  # online
    fresh = ctx.fresh_params(key)
    for h in HEADS:
        assert_same(after.target[h]["new"], fresh[h]["new"])
        assert_same(after.target[h]["frozen"], fresh[h]["new"])
        assert_same(after.target[h]["new"], after.params[h]["new"])
        assert all_changed(after.target[h]["new"], lagging[h]["new"])
        assert_same(after.target[h]["main"], lagging[h]["main"])
    assert_same(after.target["torso"], lagging["torso"])
    # the target's function is unchanged at the instant (gates open, new - frozen = 0)
    v0 = net.apply(lagging, before.net_state, obs)
    v1 = net.apply(after.target, after.net_state, obs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6), v0, v1)

    # under jit and vmap over seeds
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), unit)
    keys = jnp.stack([key, jax.random.PRNGKey(12)])
    got = jax.jit(jax.vmap(lambda u, k: iv.after_update(ctx, u, k, jnp.int32(when), _acts(net, u, obs))))(
        stacked, keys)
    for i in range(2):
        t = jax.tree.map(lambda x, i=i: x[i], got.target)
        fresh = ctx.fresh_params(keys[i])
        for h in HEADS:
            assert_same(t[h]["new"], fresh[h]["new"])
            assert_same(t[h]["frozen"], fresh[h]["new"])
            assert_same(t[h]["main"], lagging[h]["main"])
        assert_same(t["torso"], lagging["torso"])
    # not due: the target is untouched too
    assert_same(jax.jit(lambda u: iv.after_update(ctx, u, key, jnp.int32(when + 1), _acts(net, u, obs)))(unit), unit)
