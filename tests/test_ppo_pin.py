"""Vanilla PPO's numbers are pinned: a fixed-seed short run (CartPole, Pendulum; tests/data/make_ppo_pin.py) must
be reproduced to float tolerance, so refactors of the shared machinery cannot silently change the learner. First
recorded before the learner-agnostic core (commit "pin a fixed-seed PPO run", reproduced bit for bit by it);
re-recorded once, on purpose, when the minibatch shuffle moved to the packed sort (algos/shuffle.py: same
distribution, another random stream).

Tolerances are per case. The pins were recorded on one machine; another CPU (other vector widths, FMA and
summation order) reproduces the first update exactly and then drifts: CartPole (192 gradient steps) stays within
1e-5, but Pendulum's 960 gradient steps drift to 0.4 % of a leaf's L1 mass (the 1-entry log_std) and 8e-4 of the
policy-loss scale (measured 2026-11-30 on an AMD EPYC against the earlier machine's pin). The short per-learner
pins in tests/test_learning_pins.py are the tight regression check."""

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


@pytest.mark.parametrize("name, env, preset, steps, param_tol, curve_tol", [
    ("cartpole", "gymnax:CartPole-v1", "cleanrl-cartpole", 4 * 128 * 12, 1e-5, 1e-4),
    ("pendulum", "gymnax:Pendulum-v1", "continuous", 16 * 256 * 3, 1e-2, 3e-3),
])
def test_vanilla_ppo_matches_pinned_run(name, env, preset, steps, param_tol, curve_tol):
    """Param sums within ``param_tol`` of each leaf's L1 mass; curves within ``curve_tol`` of their scale."""
    carry, m = jax.jit(make_train(PRESETS[preset], env, steps).train)(jax.random.PRNGKey(3))
    leaves = jax.tree.leaves(carry.units["agent"].params)
    mass = REF[f"{name}/param_abs"]
    sums = np.array([np.asarray(x, np.float64).sum() for x in leaves])
    drift = np.abs(sums - REF[f"{name}/param_sums"]) / mass
    assert drift.max() <= param_tol, f"param sums drift by {drift.max():.2e} of a leaf's L1 mass (> {param_tol})"
    np.testing.assert_allclose([np.abs(np.asarray(x, np.float64)).sum() for x in leaves], mass, rtol=param_tol)
    for k in KEYS:
        ref = REF[f"{name}/{k}"]
        scale = np.nanmax(np.abs(ref)) if np.isfinite(ref).any() else 1.0
        np.testing.assert_allclose(np.asarray(m[k]), ref, rtol=curve_tol, atol=curve_tol * scale, err_msg=k)
