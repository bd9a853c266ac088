"""Every intervention x every learner: 2 vmapped seeds, a tiny 3-update run with heavy metrics on every update
and every scheduled intervention firing inside it. The run trains (losses finite) and every plasticity metric
is present and finite for every unit (PPO/PQN/C51: one untagged unit; TD3/SAC: actor and critic). What each
intervention does to the parameters is checked in tests/test_iv_*.py (each one alone on PPO end to end in
tests/test_iv_compose.py); here the point is that each one composes with each learner's units, optimizers and
target networks.

Each learner runs the 13 interventions as 3 compositions that together hold every one of them, not 13 runs of
one each: a compiled program per run is most of the test's time (5-17 s each), and a composition checks
strictly more (the parts also compose with each other). The partition is rotated per learner, so the
learners see different pairs."""

from __future__ import annotations

from dataclasses import replace

import jax
import numpy as np
import pytest

from plasticine_jax.algos import registry
from plasticine_jax.interventions import REGISTRY, resolve
from plasticine_jax.interventions.base import compose
from plasticine_jax.interventions.registry import options_class
from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.nets import NetConfig

UPDATES = 3
NET = NetConfig(torso="mlp", widths=(16, 16), activation="relu", shared=True)


def _tiny(algo: str):
    cm = registry.config_module(algo)
    if algo == "ppo":
        cfg = replace(cm.PRESETS["cartpole"], num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1,
                      net=replace(NET, shared=False, activation="tanh"))
        return cfg, "gymnax:CartPole-v1", ("",)
    if algo == "pqn":
        cfg = replace(cm.PRESETS["cartpole"], num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, net=NET)
        return cfg, "gymnax:CartPole-v1", ("",)
    if algo == "c51":
        cfg = replace(cm.PRESETS["cartpole"], steps_per_update=8, train_frequency=2, learning_starts=0,
                      buffer_size=64, batch_size=8, target_network_frequency=4, metric_batch=16,
                      net=replace(NET, init="torch", head_init="torch"))
        return cfg, "gymnax:CartPole-v1", ("",)
    cfg = replace(cm.PRESETS["pendulum"], steps_per_update=8, learning_starts=4, buffer_size=64, batch_size=8,
                  metric_batch=16, net=replace(NET, shared=False, init="torch", head_init="torch"))
    return cfg, "gymnax:Pendulum-v1", ("actor", "critic")


def _options(names: tuple[str, ...]) -> dict:
    """Schedules short enough to fire within the 3-update run."""
    opts = {"redo": dict(frequency=1), "reset_layers": dict(frequency=2), "plasticity_injection": dict(at=0.5)}
    return {name: options_class(name)(**opts.get(name, {})) for name in names}


GROUPS = 3


def _groups(shift: int) -> list[tuple[str, ...]]:
    """The registry's interventions rotated by ``shift`` and dealt into ``GROUPS`` compositions (every third one).
    Registry neighbours share a group only across the rotation's seam (the list's last and first), so crelu and
    dff (both replace the activation) stay apart for the shifts used; the partition test checks every group."""
    names = list(REGISTRY)
    names = names[shift:] + names[:shift]
    return [tuple(names[j::GROUPS]) for j in range(GROUPS)]


CASES = [(algo, group) for i, algo in enumerate(registry.ALGOS) for group in _groups(i)]


HEAVY = ("dormant_ratio", "active_fraction", "stable_rank", "effective_rank", "feature_norm", "feature_variance")
PER_UNIT = ("weight_magnitude", "weight_difference", "gradient_norm")


def test_the_compositions_hold_every_intervention_once_per_learner():
    for i in range(len(registry.ALGOS)):
        held = [n for g in _groups(i) for n in g]
        assert sorted(held) == sorted(REGISTRY)
        for g in _groups(i):  # a legal composition (compose raises ConfigError otherwise) of exactly the group
            assert sorted(compose(resolve(list(g), _options(g))).names) == sorted(g)


@pytest.mark.parametrize(("algo", "names"), CASES, ids=[f"{a}-{'+'.join(g)}" for a, g in CASES])
def test_interventions_train_with_learner(algo, names):
    cfg, env, tags = _tiny(algo)
    probe = registry.learner_module(algo).make_train(cfg, env, 1_000_000, (), MetricsConfig(every=1))
    steps = UPDATES * probe.env_steps_per_update
    lrn = registry.learner_module(algo).make_train(cfg, env, steps, resolve(list(names), _options(names)),
                                                   MetricsConfig(every=1))
    assert lrn.num_updates == UPDATES
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    _, m = jax.jit(jax.vmap(lrn.train))(keys)
    m = jax.tree.map(np.asarray, m)
    for k, v in m.items():
        if k.startswith("losses/"):
            assert np.isfinite(v[:, -1]).all(), (k, v)
    for tag in tags:
        prefix = "plasticity/" + (f"{tag}/" if tag else "")
        for metric in HEAVY + PER_UNIT:
            key = prefix + metric
            assert key in m, (key, sorted(m))
            assert m[key].shape == (2, UPDATES)
            assert np.isfinite(m[key][:, -1]).all(), (key, m[key])
