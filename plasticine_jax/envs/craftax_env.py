"""Craftax backend: vmapped no-auto-reset Craftax with *optimistic resets* (Craftax_Baselines style).

craftax's auto-reset envs generate a fresh world on every step (``select`` evaluates both branches),
which is 10-18x slower on CPU. Here the no-auto-reset env is stepped and only ``num_envs // reset_ratio``
fresh worlds are generated per step, then shared out among the envs that finished (reference §1.2).

Design notes
------------
* **terminated vs truncated.** craftax's ``done`` is ``timestep >= max_timesteps`` OR a real end of the
  game (classic: health <= 0 or standing in lava; full game: health <= 0 or the final boss beaten).
  We re-evaluate craftax's own ``is_terminal`` with the time limit removed (``max_timesteps`` set to
  int32 max): that is ``terminated``. ``truncated = done & ~terminated`` (only the time limit), so dying
  on the last step counts as terminated, as it should for bootstrapping.
* **Optimistic resets.** Each step draws ``num_resets = num_envs // min(reset_ratio, num_envs)`` fresh
  states. ``num_resets`` envs are sampled without replacement with probability proportional to
  ``done`` (i.e. uniformly among the done envs, via Gumbel top-k) and each gets a distinct fresh state;
  every other env ``i`` is pointed at fresh state ``i * num_resets // num_envs`` (a duplicate). Only done
  envs actually take their assigned state; the rest keep their stepped state. If fewer than
  ``num_resets`` envs are done, each done env gets its own fresh world; otherwise all ``num_resets``
  worlds are used and the extra done envs start from a copy of one of them (their futures still
  differ, because each env gets its own step key). ``num_envs`` need not be a multiple of the ratio.
* ``info["final_obs"]`` is the observation before the reset; ``info["achievements"]`` [N, A] float32 is
  the achievements unlocked in the episode so far (pre-reset), to be read where the episode ended
  (names in ``CraftaxVecEnv.achievement_names``).
* Extra keyword arguments override fields of craftax's ``EnvParams`` (e.g. ``max_timesteps=1000``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from plasticine_jax.envs.core import TasklessEnv
from plasticine_jax.envs.spaces import Box, Discrete
from plasticine_jax.errors import ConfigError

SUPPORTED_IDS = (
    "Craftax-Classic-Symbolic-v1",
    "Craftax-Symbolic-v1",
    "Craftax-Classic-Pixels-v1",
    "Craftax-Pixels-v1",
)
_NO_TIME_LIMIT = int(np.iinfo(np.int32).max)


def optimistic_reset_indices(key: jax.Array, done: jax.Array, num_resets: int) -> jax.Array:
    """For each of the ``N = done.shape[0]`` envs, the index in ``[0, num_resets)`` of its fresh state.

    ``num_resets`` envs, sampled without replacement with probability proportional to ``done``, get
    distinct fresh states; every other env ``i`` gets ``i * num_resets // N`` (a duplicate). Static shapes,
    jit/vmap-safe. Callers apply the result only where ``done``.
    """
    n = done.shape[0]
    if num_resets > n:
        raise ValueError(f"num_resets={num_resets} > num_envs={n}")
    base = (jnp.arange(n) * num_resets) // n
    # Gumbel top-k = sampling without replacement with p ∝ done; non-done envs only fill leftover slots.
    scores = jax.random.gumbel(key, (n,)) + jnp.where(done, 0.0, -1e9)
    _, chosen = jax.lax.top_k(scores, num_resets)
    return base.at[chosen].set(jnp.arange(num_resets))


def _select(done: jax.Array, new: Any, old: Any) -> Any:
    """Per-env ``where(done, new, old)`` over a batched pytree."""

    def pick(x: jax.Array, y: jax.Array) -> jax.Array:
        mask = done.reshape(done.shape + (1,) * (x.ndim - 1))
        return jnp.where(mask, x, y)

    return jax.tree.map(pick, new, old)


def _strong(x: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_:
        return x.astype(x.dtype)
    return x  # PRNG key arrays


class CraftaxVecEnv(TasklessEnv):
    """``num_envs`` no-auto-reset Craftax envs with optimistic resets (see module docstring)."""

    def __init__(self, env_id: str, num_envs: int, reset_ratio: int = 16, **param_overrides: Any):
        if env_id not in SUPPORTED_IDS:
            raise ConfigError(f"unknown craftax env '{env_id}'; supported: {', '.join(SUPPORTED_IDS)}")
        if num_envs < 1 or reset_ratio < 1:
            raise ConfigError(
                f"craftax needs num_envs >= 1 and reset_ratio >= 1 (got {num_envs}, {reset_ratio})"
            )
        from craftax.craftax_env import make_craftax_env_from_name

        self.env = make_craftax_env_from_name(env_id, auto_reset=False)
        params = self.env.default_params
        unknown = sorted(set(param_overrides) - set(params.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"unknown craftax env option(s) {', '.join(unknown)}; "
                f"known: reset_ratio, {', '.join(params.__dataclass_fields__)}"
            )
        self.params = params.replace(**param_overrides)
        self._params_no_limit = self.params.replace(max_timesteps=_NO_TIME_LIMIT)
        self.name = env_id
        self.num_envs = num_envs
        self.reset_ratio = min(reset_ratio, num_envs)
        self.num_resets = num_envs // self.reset_ratio

        space = self.env.observation_space(self.params)
        shape = tuple(int(s) for s in space.shape)
        size = int(np.prod(shape))
        self.observation_space = Box((float(space.low),) * size, (float(space.high),) * size, shape)
        self.action_space = Discrete(int(self.env.action_space(self.params).n))
        if "Classic" in env_id:
            from craftax.craftax_classic.constants import Achievement
        else:
            from craftax.craftax.constants import Achievement
        self.achievement_names = tuple(a.name.lower() for a in sorted(Achievement, key=lambda a: a.value))

    def _reset_batch(self, key: jax.Array, n: int) -> tuple[jax.Array, Any]:
        keys = jax.random.split(key, n)
        obs, state = jax.vmap(self.env.reset_env, in_axes=(0, None))(keys, self.params)
        # craftax's reset leaves some leaves weakly typed (classic: player_direction) while its step does
        # not; strip weak types so reset and step states have one signature (no retrace, scan-safe).
        state = jax.tree.map(_strong, state)
        return obs.astype(jnp.float32), state

    def reset(self, key: jax.Array, previous: Any = None) -> tuple[jax.Array, Any]:
        return self._reset_batch(key, self.num_envs)

    def step(
        self, key: jax.Array, state: Any, action: jax.Array
    ) -> tuple[jax.Array, Any, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
        key_step, key_reset, key_pick = jax.random.split(key, 3)
        step_keys = jax.random.split(key_step, self.num_envs)
        obs_st, state_st, reward, done, _ = jax.vmap(self.env.step_env, in_axes=(0, 0, 0, None))(
            step_keys, state, action, self.params
        )
        obs_st = obs_st.astype(jnp.float32)
        done = done.astype(bool)
        terminated = jax.vmap(self.env.is_terminal, in_axes=(0, None))(state_st, self._params_no_limit)
        terminated = jnp.logical_and(done, terminated)
        truncated = jnp.logical_and(done, jnp.logical_not(terminated))

        obs_re, state_re = self._reset_batch(key_reset, self.num_resets)
        idx = optimistic_reset_indices(key_pick, done, self.num_resets)
        obs_re = obs_re[idx]
        state_re = jax.tree.map(lambda x: x[idx], state_re)
        obs = _select(done, obs_re, obs_st)
        new_state = _select(done, state_re, state_st)
        info = {"final_obs": obs_st, "achievements": state_st.achievements.astype(jnp.float32)}
        return obs, new_state, reward.astype(jnp.float32), terminated, truncated, info
