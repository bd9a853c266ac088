"""Regenerates tests/data/ppo_pin.npz (the pinned vanilla PPO run of tests/test_ppo_pin.py). Run it only when a
change of PPO's numbers is intended, and say why in the commit."""

import jax
import numpy as np

from plasticine_jax.algos.ppo import make_train
from plasticine_jax.algos.ppo_config import PRESETS

RUNS = [("cartpole", "gymnax:CartPole-v1", "cleanrl-cartpole", 4 * 128 * 12),
        ("pendulum", "gymnax:Pendulum-v1", "continuous", 16 * 256 * 3)]
KEYS = ["losses/policy_loss", "losses/value_loss", "losses/entropy", "plasticity/gradient_norm",
        "plasticity/weight_difference", "charts/episodic_return", "plasticity/dormant_ratio", "plasticity/stable_rank"]
out = {}
for name, env, preset, steps in RUNS:
    carry, m = jax.jit(make_train(PRESETS[preset], env, steps).train)(jax.random.PRNGKey(3))
    leaves = jax.tree.leaves(carry.units["agent"].params)
    out[f"{name}/param_sums"] = np.array([np.asarray(x, np.float64).sum() for x in leaves])
    out[f"{name}/param_abs"] = np.array([np.abs(np.asarray(x, np.float64)).sum() for x in leaves])
    for k in KEYS:
        out[f"{name}/{k}"] = np.asarray(m[k])
np.savez("tests/data/ppo_pin.npz", **out)
