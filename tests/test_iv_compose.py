"""Composition and names (``compose``, ``registry``), then end to end: every intervention alone and two 3-way
compositions train PPO on gymnax CartPole-v1 with 2 vmapped seeds, every ``plasticity/*`` metric is finite on
the updates where it is computed, and losses are finite. Scheduled interventions get options that fire
within the 8-update run (redo every 2, rl every 3, pi at the midpoint)."""

from __future__ import annotations

from dataclasses import replace

import jax
import numpy as np
import pytest

from plasticine_jax.algos.ppo import make_train
from plasticine_jax.algos.ppo_config import PRESETS
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions import injection, redo, reset_layers
from plasticine_jax.interventions.base import compose
from plasticine_jax.optim.kron import kron_state
from plasticine_jax.interventions.registry import ALIASES, REGISTRY, canonical, parse_list, resolve
from plasticine_jax.optim.trac import trac_scale
from plasticine_jax.metrics.collect import HEAVY_KEYS
from plasticine_jax.metrics.config import MetricsConfig

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
    assert [iv.name for iv in a] == [iv.name for iv in b] == ["layer_norm", "shrink_perturb", "redo"]
    every = [iv.name for iv in compose(resolve([n for n in CANONICAL if n not in ("dff", "kron")]))]
    assert every == [iv.name for iv in compose(resolve(list(reversed(every))))]
    assert every[0] == "layer_norm"  # architecture first
    orders = [iv.order for iv in compose(resolve(CANONICAL[::2]))]
    assert orders == sorted(orders)


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


def _leaf_norms(params, paths):
    out = {}
    for p in paths:
        node = params
        for k in p.split("/"):
            node = node[k]
        out[p] = np.linalg.norm(np.asarray(node).reshape(node.shape[0], -1), axis=1)  # per seed
    return out


@pytest.mark.parametrize("spec", SPECS)
def test_trains_cartpole_with_finite_metrics(spec):
    names = parse_list(spec)
    trainer = make_train(PRESETS["cartpole"], "gymnax:CartPole-v1", 4096, resolve(names, OPTIONS),
                         MetricsConfig(every=EVERY))
    assert trainer.num_updates == NUM_UPDATES
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    carry, out = jax.jit(jax.vmap(trainer.train))(keys)
    out = {k: np.asarray(v) for k, v in out.items()}
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
    for leaf in jax.tree.leaves(carry.learner.params):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert np.all(out["plasticity/gradient_norm"] > 0)
    assert not np.allclose(out["plasticity/weight_difference"][0], out["plasticity/weight_difference"][1])

    # intervention-specific end states
    learner = carry.learner
    if "regenerative" in names or "parseval" in names:
        assert np.all(out["losses/intervention_loss"][:, 1:] > 0)
    else:
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
    if "trac" in names:
        assert np.all(np.isfinite(np.asarray(trac_scale(learner.opt_state))))
    if "kron" in names:
        ks = np.asarray(kron_state(learner.opt_state).key)
        assert not np.array_equal(ks[0], ks[1])
    if "layer_norm" in names or "normalize_project" in names:
        assert "ln_0" in learner.params["actor_torso"]
    if "crelu" in names or "dff" in names:
        assert learner.params["actor_torso"]["dense_1"]["kernel"].shape[1:] == (128, 64)
