"""Composition and names (``compose``, ``registry``), then end to end: every intervention alone and two 3-way
compositions train PPO on gymnax CartPole-v1 with 2 vmapped seeds, every ``plasticity/*`` metric is finite on
the updates where it is computed, and losses are finite. Scheduled interventions get options that fire
within the 8-update run (redo every 2, rl every 3, pi at the midpoint). Each intervention must also show its
effect against the same run without it (same seeds): L2 ends with smaller weights, TRAC's scale and
statistics moved and its params differ, ..., so an intervention that silently did nothing fails."""

from __future__ import annotations

import functools
from dataclasses import replace

import jax
import numpy as np
import pytest

from plasticine_jax.algos.ppo import make_train
from plasticine_jax.algos.ppo_config import PRESETS
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions import injection, redo, reset_layers
from plasticine_jax.interventions.base import Intervention, compose
from plasticine_jax.interventions.registry import ALIASES, REGISTRY, canonical, parse_list, resolve
from plasticine_jax.metrics.collect import HEAVY_KEYS
from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.optim.kron import kron_state
from plasticine_jax.optim.trac import trac_scale, trac_state

ALIAS_LIST = "snp pi redo rl ln nap l2n rr pr ca dff trac kron".split()
CANONICAL = ["shrink_perturb", "plasticity_injection", "redo", "reset_layers", "layer_norm", "normalize_project",
             "l2", "regenerative", "parseval", "crelu", "dff", "trac", "kron"]

# ------------------------------------------------------------------------------------------ names, compose


def test_canonical_accepts_every_alias_and_name():
    assert [canonical(a) for a in ALIAS_LIST] == CANONICAL
    assert sorted(REGISTRY) == sorted(CANONICAL) and sorted(ALIASES) == sorted(ALIAS_LIST)
    for name in CANONICAL:
        assert canonical(name) == name
        assert canonical(name.upper()) == name
    assert canonical(" Shrink-Perturb ") == "shrink_perturb"
    assert parse_list(",".join(ALIAS_LIST)) == CANONICAL
    assert parse_list("none") == parse_list("vanilla") == parse_list("") == parse_list(None) == []


@pytest.mark.parametrize("bad", ["foo", "l2_norm", "redo2", "vanilla"])
def test_canonical_rejects_unknown(bad):
    with pytest.raises(ConfigError, match=f"unknown intervention '{bad}'"):
        canonical(bad)
    with pytest.raises(ConfigError, match="unknown intervention"):
        parse_list(f"ln,{bad}")


def test_every_intervention_resolves_with_its_own_name():
    for name, iv in zip(CANONICAL, resolve(CANONICAL), strict=True):
        assert iv.name == name


def test_compose_orders_canonically():
    a = compose(resolve(parse_list("redo,ln,snp")))
    b = compose(resolve(parse_list("snp,ln,redo")))
    assert isinstance(a, Intervention)  # one intervention, like optax.chain's one transformation
    assert a.names == b.names == ("layer_norm", "shrink_perturb", "redo")
    assert [p.name for p in a.parts] == list(a.names) and a.name == "layer_norm+shrink_perturb+redo"
    every = compose(resolve([n for n in CANONICAL if n not in ("dff", "kron")])).names
    assert every == compose(resolve(list(reversed(every)))).names
    assert every[0] == "layer_norm"  # architecture first
    orders = [p.order for p in compose(resolve(CANONICAL[::2])).parts]
    assert orders == sorted(orders)


def test_compose_is_closed_and_flattens():
    """A composed intervention composes again (flattened, canonical order), one part included; none is the
    no-op ``vanilla``, which disappears in any composition."""
    ln, rr, snp = resolve(["layer_norm", "regenerative", "shrink_perturb"])
    nested = compose([compose([snp, rr]), ln])
    assert nested.names == compose([ln, rr, snp]).names == ("layer_norm", "regenerative", "shrink_perturb")
    assert nested.parts == (ln, rr, snp)  # flat: the atomic parts themselves
    assert compose([ln]).parts == (ln,) and compose([ln]).names == ("layer_norm",)
    assert compose([compose([ln])]).parts == (ln,)
    vanilla = compose([])
    assert vanilla.name == "vanilla" and vanilla.names == () and vanilla.parts == (vanilla,)
    assert compose([vanilla, ln]).parts == (ln,) and compose([vanilla]).name == "vanilla"
    with pytest.raises(ConfigError, match="given twice"):
        compose([compose([ln, rr]), ln])


def test_compose_rejects_duplicates():
    with pytest.raises(ConfigError, match="ln|layer_norm") as e:
        compose(resolve(parse_list("ln,rr,ln")))
    assert "given twice" in str(e.value) and "layer_norm" in str(e.value)
    with pytest.raises(ConfigError, match="layer_norm.*given twice"):  # alias and canonical name of one
        compose(resolve(parse_list("ln,layer_norm")))


def test_compose_rejects_two_activations():
    with pytest.raises(ConfigError, match="crelu and dff both replace the hidden activation"):
        compose(resolve(parse_list("ca,dff")))


def test_compose_rejects_two_base_optimizers():
    from plasticine_jax.interventions import kron

    other = replace(kron.make(kron.Options()), name="kron2")  # a second (hypothetical) base optimizer
    with pytest.raises(ConfigError, match="kron and kron2 both replace the optimizer"):
        compose([*resolve(["kron"]), other])
    compose(resolve(parse_list("trac,kron")))  # a wrapper and a base optimizer are fine together


# ------------------------------------------------------------------------------------------ end to end

OPTIONS = {
    "redo": redo.Options(frequency=2, tau=0.5),  # a high threshold, so units are really recycled
    "reset_layers": reset_layers.Options(frequency=3),
    "plasticity_injection": injection.Options(at=0.5),
}
SPECS = ALIAS_LIST + ["redo,ln,snp", "pr,rr,trac"]
NUM_UPDATES, EVERY = 8, 2
OPT_STEPS = NUM_UPDATES * PRESETS["cleanrl-cartpole"].update_epochs * PRESETS["cleanrl-cartpole"].num_minibatches


def _leaf_norms(params, paths):
    out = {}
    for p in paths:
        node = params
        for k in p.split("/"):
            node = node[k]
        out[p] = np.linalg.norm(np.asarray(node).reshape(node.shape[0], -1), axis=1)  # per seed
    return out


def _global_norm(params):
    """Per-seed L2 norm of every parameter."""
    return np.sqrt(sum(np.sum(np.asarray(x, np.float64).reshape(x.shape[0], -1) ** 2, axis=1)
                       for x in jax.tree.leaves(params)))


@functools.cache
def _train(spec):
    """(agent unit, metrics) after the 8-update run of ``spec`` with 2 vmapped seeds (cached: the effect checks
    compare a run with the same run without the intervention)."""
    trainer = make_train(PRESETS["cleanrl-cartpole"], "gymnax:CartPole-v1", 4096, resolve(parse_list(spec), OPTIONS),
                         MetricsConfig(every=EVERY))
    assert trainer.num_updates == NUM_UPDATES
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    carry, out = jax.jit(jax.vmap(trainer.train))(keys)
    return carry.units["agent"], {k: np.asarray(v) for k, v in out.items()}


def _without(names, name):
    return ",".join(n for n in names if n != name)


@pytest.mark.parametrize("spec", SPECS)
def test_trains_cartpole_with_finite_metrics(spec):
    names = parse_list(spec)
    learner, out = _train(spec)
    due = (np.arange(NUM_UPDATES) + 1) % EVERY == 0
    heavy = {f"plasticity/{k}" for k in HEAVY_KEYS} | {f"plasticity/critic/{k}" for k in HEAVY_KEYS}
    plast = [k for k in out if k.startswith("plasticity/")]
    assert heavy <= set(plast) and "plasticity/gradient_norm" in plast
    for k in plast:
        assert out[k].shape == (2, NUM_UPDATES), k
        if k in heavy:
            assert np.all(np.isfinite(out[k][:, due])), (k, out[k])
            assert np.all(np.isnan(out[k][:, ~due])), (k, out[k])  # by design: not computed there
        else:
            assert np.all(np.isfinite(out[k])), (k, out[k])
    for k in (k for k in out if k.startswith("losses/")):
        assert np.all(np.isfinite(out[k])), (k, out[k])
    for leaf in jax.tree.leaves(learner.params):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert np.all(out["plasticity/gradient_norm"] > 0)
    assert not np.allclose(out["plasticity/weight_difference"][0], out["plasticity/weight_difference"][1])

    # intervention-specific end states
    if "regenerative" in names or "parseval" in names:
        assert np.all(out["losses/intervention_loss"][:, 1:] > 0)
    elif "losses/intervention_loss" in out:  # (that it is always logged: test_intervention_loss_always_logged)
        assert np.all(out["losses/intervention_loss"] == 0)
    if "normalize_project" in names:  # projected after the last step: kernels at their initial norms
        norms = learner.istate["normalize_project"]["kernels"]
        got = _leaf_norms(learner.params, list(norms))
        for p, n in norms.items():
            np.testing.assert_allclose(got[p], np.asarray(n), rtol=1e-5, err_msg=p)
    if "plasticity_injection" in names:  # injected once, at the midpoint
        for g in jax.tree.leaves(learner.net_state["injection"]):
            np.testing.assert_array_equal(np.asarray(g), np.ones(2))
    wd = out["plasticity/weight_difference"]  # measured after after_update: resets show up as spikes
    if "redo" in names:  # first recycling after update 2
        assert np.all(wd[:, 1] > 10 * wd[:, 0]), wd
    if "reset_layers" in names:  # heads re-sampled after updates 3 and 6
        assert np.all(wd[:, [2, 5]].min(axis=1) > 5 * np.delete(wd, [2, 5], axis=1).max(axis=1)), wd
    if "l2" in names:  # coupled weight decay: smaller weights than the same run without it
        base, _ = _train(_without(names, "l2"))
        with_l2, without = _global_norm(learner.params), _global_norm(base.params)
        assert np.all(with_l2 < without), (with_l2, without)
    if "trac" in names:  # TRAC stepped on every optimizer step and moved away from its initial state
        ts = trac_state(learner.opt_state)
        scale = np.asarray(trac_scale(learner.opt_state))
        assert np.all(np.isfinite(scale)) and np.all(scale != 0.0), scale  # S = 0 before the first step
        np.testing.assert_array_equal(np.asarray(ts.count), [OPT_STEPS] * 2)
        assert np.all(np.asarray(ts.variance) > 0)  # h_t = <x_t, g_t> was non-zero at some step
        assert np.all(np.asarray(ts.sigma) != np.float32(1e-8))
        base, _ = _train(_without(names, "trac"))  # ... and the run differs from the one without TRAC
        for i in range(2):
            assert any(not np.allclose(np.asarray(a)[i], np.asarray(b)[i], rtol=1e-3, atol=1e-5)
                       for a, b in zip(jax.tree.leaves(learner.params), jax.tree.leaves(base.params), strict=True))
    if "kron" in names:
        ks = kron_state(learner.opt_state)
        assert not np.array_equal(np.asarray(ks.key)[0], np.asarray(ks.key)[1])
        np.testing.assert_array_equal(np.asarray(ks.count), [OPT_STEPS] * 2)
    if "layer_norm" in names or "normalize_project" in names:
        assert "ln_0" in learner.params["actor_torso"]
    if "crelu" in names or "dff" in names:
        assert learner.params["actor_torso"]["dense_1"]["kernel"].shape[1:] == (128, 64)


def test_intervention_loss_always_logged():
    """``losses/intervention_loss`` is one of PPO's logged losses (README, Metrics) in every run -- 0 when no
    intervention adds a loss term (vanilla; ln+snp+redo) -- so runs with and without a loss-adding intervention
    share their metrics (as before the learner-agnostic core)."""
    for spec in ("", "redo,ln,snp"):
        _, out = _train(spec)
        assert "losses/intervention_loss" in out, (spec, sorted(k for k in out if k.startswith("losses/")))
        assert np.all(out["losses/intervention_loss"] == 0), spec
