"""Evaluation of a trained policy on fresh episodes, inside the graph (vmappable over seeds).

``make_evaluator(learner)`` builds (outside any trace) a pure ``evaluate(state, key)``: it resets ``episodes``
fresh copies of the learner's env, runs each for up to the env's episode limit with the learner's evaluation policy
(``learner.eval_action``: PPO and SAC sample from the policy, TD3 acts deterministically, PQN and C51 are
epsilon-greedy with ``eval_epsilon``) and returns the return of every first episode. It follows rejax's evaluator
(128 fresh episodes per seed, ``max_steps_in_episode`` steps at most), so the two libraries' final returns compare
like for like (``experiments/parity.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from plasticine_jax.algos.state import RunState
from plasticine_jax.envs import make_env
from plasticine_jax.errors import ConfigError


def episode_limit(env: Any) -> int:
    """The env's episode length limit (gymnax ``max_steps_in_episode``), found through its wrappers."""
    e = env
    while e is not None:
        params = getattr(e, "params", None)
        if params is not None and hasattr(params, "max_steps_in_episode"):
            return int(params.max_steps_in_episode)
        e = getattr(e, "env", None)
    raise ConfigError(f"cannot find the episode limit of {type(env).__name__}; pass max_steps= to evaluate()")


def make_episode_returns(env_id: str, episodes: int = 128,
                         max_steps: int | None = None) -> Callable[[Callable, jax.Array], jax.Array]:
    """``returns(policy, key)``: returns of ``episodes`` fresh episodes ([episodes], float32) of
    ``policy(obs, key) -> action`` on ``env_id``; pure, jit- and vmap-able. The env is built here, outside any
    trace. Episodes still running after ``max_steps`` (default: the env's limit) count with their return so far,
    as in rejax."""
    env = make_env(env_id, episodes)
    limit = max_steps or episode_limit(env)

    def returns(policy: Callable, key: jax.Array) -> jax.Array:
        k_reset, k_run = jax.random.split(key)
        obs, env_state = env.reset(k_reset)

        def step(carry, _):
            env_state, obs, ret, alive, key = carry
            key, k_act, k_env = jax.random.split(key, 3)
            obs, env_state, reward, terminated, truncated, _ = env.step(k_env, env_state, policy(obs, k_act))
            ret = ret + reward * alive
            alive = alive * (1.0 - jnp.logical_or(terminated, truncated).astype(jnp.float32))
            return (env_state, obs, ret, alive, key), None

        zeros = jnp.zeros((episodes,), jnp.float32)
        (_, _, ret, _, _), _ = jax.lax.scan(step, (env_state, obs, zeros, zeros + 1.0, k_run), None, limit)
        return ret

    return returns


def make_evaluator(learner: Any, episodes: int = 128,
                   max_steps: int | None = None) -> Callable[[RunState, jax.Array], jax.Array]:
    """``evaluate(state, key)``: returns of ``episodes`` fresh episodes ([episodes], float32) of ``learner``'s
    evaluation policy in ``state`` (``make_episode_returns``); pure, jit- and vmap-able over seeds.
    Observation-normalising learners are refused (their statistics live in the training env's state)."""
    if getattr(learner.cfg, "normalize_obs", False):
        raise ConfigError("evaluation does not support --<algo>.normalize-obs yet (its running statistics live in "
                          "the training env state); use the logged training returns instead")
    returns = make_episode_returns(learner.env_id, episodes, max_steps)

    def evaluate(state: RunState, key: jax.Array) -> jax.Array:
        return returns(lambda obs, k: learner.eval_action(state.units, obs, k), key)

    return evaluate
