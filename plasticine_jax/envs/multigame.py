"""Continual MinAtar: several gymnax MinAtar games behind one batched env, the active game chosen by the task.

A continual-learning sequence (e.g. SpaceInvaders -> Asterix -> Breakout -> ...) must keep one network, so every
game is presented through one common interface:

* observations are the game's ``(10, 10, C)`` grid zero-padded on the channel axis to ``C_max`` (the largest
  channel count among the games), as float32 in [0, 1];
* actions are the full MinAtar set ``Discrete(6)`` = [noop, left, up, right, down, fire]. ``action_maps[g, a]``
  is game ``g``'s local action index for full action ``a``; an action the game does not have maps to its noop,
  so **unused actions are a no-op**.

The state holds a batched state for *every* game (``reset`` resets them all, one key per game), and ``step``
picks the bound game with ``jax.lax.switch``: branch ``g`` steps only game ``g``'s ``num_envs`` copies (vmapped
exactly like ``GymnaxVecEnv``, gymnax's own auto-reset) and passes the other games' states through untouched.
``at(task)`` binds game ``task % len(games)``; ``task`` may be a traced int32 scalar, so one compile covers the
whole sequence. Pass the *unbatched* task (derived from the update counter) when vmapping over seeds: the switch
then stays a real branch (only the active game is computed) instead of becoming a select over all games.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from plasticine_jax.envs.core import cycle_index
from plasticine_jax.envs.gymnax_env import GymnaxVecEnv
from plasticine_jax.envs.spaces import Box, Discrete
from plasticine_jax.errors import ConfigError

FULL_ACTIONS = ("noop", "left", "up", "right", "down", "fire")
NOOP = 0


@struct.dataclass
class MultiGameState:
    """One batched gymnax state per game (leading axis ``num_envs``), in the order of ``games``."""

    states: tuple


def minatar_ids() -> list[str]:
    """The gymnax MinAtar env ids (e.g. ``Breakout-MinAtar``)."""
    from plasticine_jax.envs.gymnax_env import import_gymnax

    return [e for e in import_gymnax().registered_envs if e.endswith("-MinAtar")]


class MultiGameVecEnv:
    """``num_envs`` copies of each of ``games``; ``at(task)`` selects which one ``reset``/``step`` expose."""

    def __init__(self, games: tuple[str, ...], num_envs: int):
        games = tuple(games)
        known = minatar_ids()
        if not games:
            raise ConfigError(f"multigame needs at least one game; MinAtar ids: {', '.join(known)}")
        for game in games:
            if game not in known:
                raise ConfigError(f"unknown MinAtar game '{game}'; MinAtar ids: {', '.join(known)}")
        envs: dict[str, GymnaxVecEnv] = {}
        for game in games:  # a repeated game shares its (stateless) env object
            if game not in envs:
                envs[game] = GymnaxVecEnv(game, num_envs)
        self.games = games
        self.num_envs = num_envs
        self.name = "+".join(games)
        self.envs = tuple(envs[g] for g in games)
        self.channels = tuple(int(e.observation_space.shape[-1]) for e in self.envs)
        shape = (*self.envs[0].observation_space.shape[:-1], max(self.channels))
        for e in self.envs:
            if tuple(e.observation_space.shape[:-1]) != shape[:-1]:
                raise ConfigError(f"MinAtar game {e.name} has grid {e.observation_space.shape[:-1]}, not {shape[:-1]}")
        size = int(np.prod(shape))
        self.observation_space = Box((0.0,) * size, (1.0,) * size, shape)
        self.action_space = Discrete(len(FULL_ACTIONS))
        self.action_maps = np.stack([_action_map(e) for e in self.envs]).astype(np.int32)
        self.game_index: int | jax.Array | None = None  # None: unbound, behaves as game 0

    def at(self, task: int | jax.Array) -> MultiGameVecEnv:
        """A shallow copy bound to game ``task % len(games)`` (``task``: Python int or int32 scalar, may be traced)."""
        out = copy.copy(self)
        out.game_index = cycle_index(task, len(self.games))
        return out

    def _index(self) -> jax.Array:
        return jnp.asarray(0 if self.game_index is None else self.game_index, jnp.int32)

    def _pad(self, obs: jax.Array) -> jax.Array:
        missing = self.observation_space.shape[-1] - obs.shape[-1]
        return jnp.pad(obs.astype(jnp.float32), [(0, 0)] * (obs.ndim - 1) + [(0, missing)])

    def reset(self, key: jax.Array, previous: Any = None) -> tuple[jax.Array, MultiGameState]:
        """Reset every game (one split key per game); the bound game's padded obs. ``previous`` is ignored."""
        keys = jax.random.split(key, len(self.games))
        obs, states = zip(*(env.reset(k) for env, k in zip(self.envs, keys, strict=True)), strict=True)
        all_obs = jnp.stack([self._pad(o) for o in obs])
        return all_obs[self._index()], MultiGameState(states=tuple(states))

    def step(self, key: jax.Array, state: MultiGameState, action: jax.Array):
        """Step only the bound game's envs (``lax.switch``); full actions map through ``action_maps``."""
        action = jnp.asarray(action, jnp.int32)

        def branch(g: int):
            def run(key: jax.Array, states: tuple, action: jax.Array):
                local = jnp.asarray(self.action_maps[g])[action]
                obs, new, reward, terminated, truncated, info = self.envs[g].step(key, states[g], local)
                states = states[:g] + (new,) + states[g + 1:]
                info = {"final_obs": self._pad(info["final_obs"])}
                return self._pad(obs), states, reward, terminated, truncated, info

            return run

        branches = [branch(g) for g in range(len(self.games))]
        obs, states, reward, terminated, truncated, info = jax.lax.switch(
            self._index(), branches, key, state.states, action
        )
        return obs, MultiGameState(states=states), reward, terminated, truncated, info


def _action_map(env: GymnaxVecEnv) -> np.ndarray:
    """Full MinAtar action -> the game's local index of it, or of noop where the game lacks it."""
    local = [int(a) for a in np.asarray(env.env.action_set)]
    noop = local.index(NOOP)
    return np.asarray([local.index(a) if a in local else noop for a in range(len(FULL_ACTIONS))], np.int32)
