"""Key splits that XLA:CPU computes once, for learners whose step derives keys in chains (TD3, SAC) and for every
learner's init and the gymnax envs' reset, whose keys feed many kernels.

XLA fuses cheap elementwise producers into every consumer kernel, duplicating them, and a threefry hash is made
of nothing but cheap integer ops. So the keys of a split that feed several kernels are re-hashed inside each of
them, and a chain of splits (step key -> train key -> critic key -> target key) multiplies the copies: in SAC's
single-run program, half of its 37k optimized HLO instructions were threefry rounds and XLA's compile took 1.5x
as long as with each hash computed once. ``split`` returns ``jax.random.split``'s keys bit for bit, passed through
an integer remainder by a zero XLA cannot see is zero (``x % 0 == x`` in XLA): an op XLA counts as expensive
and never duplicates, so each hash runs once and its keys are read from memory. That costs a kernel per split at
run time (TD3 and SAC single runs: 5-8 % of steps/s, README Performance), so learners whose steps draw once per
key (PPO, PQN and C51 rollouts) keep ``jax.random.split`` there. Init runs once, so there it is free: PPO's,
PQN's and C51's init programs have 35-40 % fewer instructions (``experiments/init_compile_ab.py``).
"""

from __future__ import annotations

import jax
import numpy as np
from jax import lax


def computed_once(x: jax.Array) -> jax.Array:
    """``x`` unchanged (uint32, e.g. raw keys, or typed keys from ``jax.random.key``, whose key data it passes
    through and wraps back with the key's own impl), as a value XLA computes in one kernel instead of in each
    consumer."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(computed_once(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    if x.dtype != np.uint32:
        raise TypeError(f"computed_once takes uint32 arrays (raw PRNG keys) or typed keys, not {x.dtype}")
    zero = lax.shift_right_logical(lax.shift_right_logical(x, np.uint32(16)), np.uint32(16))  # 0, unseen by XLA
    return lax.rem(x, zero)


def split(key: jax.Array, num: int = 2) -> jax.Array:
    """``jax.random.split(key, num)``, computed once (see the module docstring), raw or typed as ``key`` is."""
    return computed_once(jax.random.split(key, num))
