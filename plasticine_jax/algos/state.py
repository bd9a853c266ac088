"""The learner-agnostic training carry: named units (params, optimizer state, optional target params) and
the run state around them (env, RNG, 64-bit step counter, task slot, replay buffer).

A learner is a set of named units -- ``agent`` for PPO, ``q`` for PQN/C51, ``actor`` and ``critic`` for
TD3/SAC -- each trained by its own optimizer. Checkpointing a ``RunState`` is enough to resume a run.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

_TWO32 = 2**32


@struct.dataclass
class Unit:
    """One trained network and everything that moves with it. ``hp`` is the run's vmappable float
    hyperparameters (the same dict in every unit, so a hook sees all of it); ``istate`` holds the composed
    intervention's state for this unit; ``target`` the target-network params where the learner has one."""

    params: dict
    net_state: dict  # non-param flax collections (e.g. plasticity-injection gates)
    opt_state: Any
    istate: Any
    hp: dict
    target: Any = None


@struct.dataclass
class StepCounter:
    """A non-negative step count that cannot overflow at 10^9-10^10 steps: two uint32 halves, like Brax's
    UInt64 (jax has no int64 without x64 mode). Exact on the host via ``to_int``."""

    hi: jax.Array
    lo: jax.Array

    @classmethod
    def zero(cls) -> StepCounter:
        return cls(jnp.zeros((), jnp.uint32), jnp.zeros((), jnp.uint32))

    def add(self, n: int | jax.Array) -> StepCounter:
        """Add ``n`` (< 2^32) with carry into the high half."""
        n = jnp.asarray(n, jnp.uint32)
        lo = self.lo + n  # wraps modulo 2^32
        return StepCounter(self.hi + (lo < self.lo).astype(jnp.uint32), lo)

    def as_float(self) -> jax.Array:
        """float32 value for schedules (relative error 2^-24, fine for epsilon/learning-rate schedules)."""
        return self.hi.astype(jnp.float32) * float(_TWO32) + self.lo.astype(jnp.float32)

    def to_int(self) -> Any:
        """Exact value on the host (numpy int64 array, any batch shape)."""
        import numpy as np

        return np.asarray(self.hi, np.int64) * _TWO32 + np.asarray(self.lo, np.int64)


@struct.dataclass
class RunState:
    """The whole training carry of one seed."""

    units: dict[str, Unit]
    env_state: Any
    obs: jax.Array
    key: jax.Array
    steps: StepCounter  # env steps taken by this seed
    update: jax.Array  # int32 number of completed updates (iterations)
    task: jax.Array  # int32 task index of a continual scenario (0 outside one)
    buffer: Any = None  # replay buffer of off-policy learners
    extra: Any = None  # learner-specific carry (e.g. the last action of an env-step learner)
    # divergence guard (``learner.UpdateLoop``): 1 + the update whose loss, gradient norm or params first went
    # non-finite (0 = healthy), and which quantity (``DIVERGENCE_QUANTITIES`` index + 1); the units stay frozen
    # at their last finite values from then on
    diverged: jax.Array = field(default_factory=lambda: jnp.zeros((), jnp.int32))
    diverged_what: jax.Array = field(default_factory=lambda: jnp.zeros((), jnp.int32))
