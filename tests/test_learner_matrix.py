"""Every intervention alone x every learner: 2 vmapped seeds, a tiny 3-update run with heavy metrics on every
update and every scheduled intervention firing inside it. The run trains (losses finite) and every
plasticity metric is present and finite for every unit (PPO/PQN/C51: one untagged unit; TD3/SAC: actor and
critic). What each intervention does to the parameters is checked in tests/test_iv_*.py; here the point is
that each one composes with each learner's units, optimizers and target networks."""

from __future__ import annotations

from dataclasses import replace

import jax
import numpy as np
import pytest

from plasticine_jax.algos import registry
from plasticine_jax.interventions import REGISTRY, resolve
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


def _options(name: str) -> dict:
    """Schedules short enough to fire within the 3-update run."""
    mod = __import__(f"plasticine_jax.interventions.{REGISTRY[name][1]}", fromlist=["Options"])
    opts = {"redo": dict(frequency=1), "reset_layers": dict(frequency=2), "plasticity_injection": dict(at=0.5)}
    return {name: mod.Options(**opts.get(name, {}))}


HEAVY = ("dormant_ratio", "active_fraction", "stable_rank", "effective_rank", "feature_norm", "feature_variance")
PER_UNIT = ("weight_magnitude", "weight_difference", "gradient_norm")


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("algo", list(registry.ALGOS))
def test_intervention_trains_with_learner(algo, name):
    cfg, env, tags = _tiny(algo)
    probe = registry.learner_module(algo).make_train(cfg, env, 1_000_000, (), MetricsConfig(every=1))
    steps = UPDATES * probe.env_steps_per_update
    lrn = registry.learner_module(algo).make_train(cfg, env, steps, resolve([name], _options(name)),
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
