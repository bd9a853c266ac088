"""Vanilla PPO's numbers are pinned: a fixed-seed short run (CartPole, Pendulum) recorded before the
learner-agnostic core (tests/data/make_ppo_pin.py, commit "pin a fixed-seed PPO run") must be reproduced to
float tolerance, so refactors of the shared machinery cannot silently change the learner."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from plasticine_jax.algos.ppo import make_train
from plasticine_jax.algos.ppo_config import PRESETS

REF = np.load(Path(__file__).parent / "data" / "ppo_pin.npz")
KEYS = ["losses/policy_loss", "losses/value_loss", "losses/entropy", "plasticity/gradient_norm",
        "plasticity/weight_difference", "charts/episodic_return", "plasticity/dormant_ratio", "plasticity/stable_rank"]


@pytest.mark.parametrize("name, env, preset, steps", [
    ("cartpole", "gymnax:CartPole-v1", "cleanrl-cartpole", 4 * 128 * 12),
    ("pendulum", "gymnax:Pendulum-v1", "continuous", 16 * 256 * 3),
])
def test_vanilla_ppo_matches_pinned_run(name, env, preset, steps):
    carry, m = jax.jit(make_train(PRESETS[preset], env, steps).train)(jax.random.PRNGKey(3))
    leaves = jax.tree.leaves(carry.units["agent"].params)
    np.testing.assert_allclose([np.asarray(x, np.float64).sum() for x in leaves], REF[f"{name}/param_sums"],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([np.abs(np.asarray(x, np.float64)).sum() for x in leaves], REF[f"{name}/param_abs"],
                               rtol=1e-5)
    for k in KEYS:
        np.testing.assert_allclose(np.asarray(m[k]), REF[f"{name}/{k}"], rtol=1e-4, atol=1e-6, err_msg=k)
