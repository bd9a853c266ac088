"""Continual MinAtar backend: each bound game matches GymnaxVecEnv, action map, task cycling, isolation of the
other games' states, one compile for every task (traced index), and a real switch under vmap over seeds."""

from __future__ import annotations

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.envs.gymnax_env import GymnaxVecEnv
from plasticine_jax.envs.multigame import MultiGameState, MultiGameVecEnv
from plasticine_jax.errors import ConfigError

GAMES = ("Breakout-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar", "Seaquest-MinAtar")
CHANNELS = (4, 4, 7, 6, 10)
N, T = 4, 48


def _expected_map(game: str) -> np.ndarray:
    """Full action a -> position of a in the game's action_set, else position of noop (written independently)."""
    action_set = np.asarray(gymnax.make(game)[0].action_set).tolist()
    return np.asarray([action_set.index(a) if a in action_set else action_set.index(0) for a in range(6)])


@pytest.fixture(scope="module")
def env():
    return MultiGameVecEnv(GAMES, N)


@pytest.fixture(scope="module")
def actions():
    return jax.random.randint(jax.random.key(7), (T, N), 0, 6)  # full actions, unused ones included


@pytest.fixture(scope="module")
def rollouts(env, actions):
    """One jitted rollout with a traced task, run for every task 0..4 and for 5+2 (cycling); counts its traces."""
    traces = {"n": 0}

    @jax.jit
    def rollout(task, key, acts):
        traces["n"] += 1
        bound = env.at(task)
        reset_key, step_key = jax.random.split(key)
        obs0, state0 = bound.reset(reset_key)

        def body(state, xs):
            k, a = xs
            obs, state, reward, term, trunc, info = bound.step(k, state, a)
            return state, (obs, reward, term, trunc, info["final_obs"])

        state, outs = jax.lax.scan(body, state0, (jax.random.split(step_key, T), acts))
        return obs0, state0, state, outs

    key = jax.random.key(0)
    results = {task: rollout(jnp.int32(task), key, actions) for task in [*range(len(GAMES)), len(GAMES) + 2]}
    return results, traces


def _reference_rollout(game: str, game_pos: int, actions):
    """GymnaxVecEnv driven with the keys MultiGameVecEnv uses and the equivalent local actions."""
    ref = GymnaxVecEnv(game, N)
    local = jnp.asarray(_expected_map(game))[actions]

    @jax.jit
    def rollout(key, acts):
        reset_key, step_key = jax.random.split(key)
        obs0, state0 = ref.reset(jax.random.split(reset_key, len(GAMES))[game_pos])

        def body(state, xs):
            k, a = xs
            obs, state, reward, term, trunc, info = ref.step(k, state, a)
            return state, (obs, reward, term, trunc, info["final_obs"])

        _, outs = jax.lax.scan(body, state0, (jax.random.split(step_key, T), acts))
        return obs0, outs

    return rollout(jax.random.key(0), local)


def test_spaces_and_action_maps(env):
    assert env.name == "+".join(GAMES) and env.games == GAMES and env.num_envs == N
    assert env.observation_space.shape == (10, 10, 10) and env.observation_space.dtype == "float32"
    assert env.observation_space.low_array.min() == 0.0 and env.observation_space.high_array.max() == 1.0
    assert env.action_space.n == 6
    assert env.action_maps.shape == (len(GAMES), 6) and env.action_maps.dtype == np.int32
    # Breakout's action set is [noop, left, right]: 'u'=2, 'd'=4, 'f'=5 are no-ops, 'l'=1 -> 1, 'r'=3 -> 2
    np.testing.assert_array_equal(env.action_maps[0], [0, 1, 0, 2, 0, 0])
    # Freeway's is [noop, up, down]: left/right/fire are no-ops
    np.testing.assert_array_equal(env.action_maps[2], [0, 0, 1, 0, 2, 0])
    for g, game in enumerate(GAMES):
        np.testing.assert_array_equal(env.action_maps[g], _expected_map(game))


@pytest.mark.parametrize("g", range(len(GAMES)))
def test_each_game_matches_gymnax(env, rollouts, actions, g):
    results, _ = rollouts
    obs0, _, _, (obs, reward, term, trunc, final_obs) = results[g]
    r_obs0, (r_obs, r_reward, r_term, r_trunc, r_final) = _reference_rollout(GAMES[g], g, actions)
    c = CHANNELS[g]
    assert obs.shape == (T, N, 10, 10, 10) and obs.dtype == jnp.float32 and final_obs.dtype == jnp.float32
    assert reward.dtype == jnp.float32 and term.dtype == jnp.bool_ and trunc.dtype == jnp.bool_
    np.testing.assert_array_equal(obs0[..., :c], r_obs0)
    np.testing.assert_array_equal(obs[..., :c], r_obs)
    np.testing.assert_array_equal(final_obs[..., :c], r_final)
    assert not np.any(obs0[..., c:]) and not np.any(obs[..., c:]) and not np.any(final_obs[..., c:])
    np.testing.assert_array_equal(reward, r_reward)
    np.testing.assert_array_equal(term, r_term)
    np.testing.assert_array_equal(trunc, r_trunc)
    assert np.any(np.asarray(obs) != np.asarray(obs[:1]))  # the game actually moves


def test_rollouts_exercise_auto_reset(rollouts):
    results, _ = rollouts
    # Breakout with random actions loses its ball within T steps: the terminated/auto-reset path is compared too
    assert np.any(np.asarray(results[0][3][2]))


def test_one_compile_for_every_task(rollouts):
    results, traces = rollouts
    assert traces["n"] == 1
    first_obs = [np.asarray(results[g][3][0][0]) for g in range(len(GAMES))]
    for g in range(1, len(GAMES)):  # the traced task really switches the game
        assert not np.array_equal(first_obs[0], first_obs[g])


def test_task_cycles(env, rollouts):
    results, _ = rollouts
    assert env.at(len(GAMES) + 2).game_index == 2 and env.at(2 * len(GAMES)).game_index == 0
    assert env.game_index is None  # at() returns a copy
    for a, b in zip(jax.tree.leaves(results[len(GAMES) + 2]), jax.tree.leaves(results[2]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(results[len(GAMES) + 2][3][0], results[1][3][0])
    # Python-int task (eager): at(7) of a two-game sequence is game 1
    two = MultiGameVecEnv(("Breakout-MinAtar", "Asterix-MinAtar"), N)
    key = jax.random.key(3)
    obs7, _ = two.at(7).reset(key)
    np.testing.assert_array_equal(obs7, two.at(1).reset(key)[0])
    assert not np.array_equal(obs7, two.reset(key)[0])


def test_stepping_one_game_leaves_the_others_untouched(rollouts):
    results, _ = rollouts
    _, state0, state, _ = results[1]
    assert isinstance(state, MultiGameState) and len(state.states) == len(GAMES)
    for g in range(len(GAMES)):
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state0.states[g]),
                                                         jax.tree.leaves(state.states[g]), strict=True))
        assert same == (g != 1), GAMES[g]


def _has_switch(jaxpr, n_branches: int) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "cond" and len(eqn.params["branches"]) == n_branches:
            return True
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(sub, "eqns") and _has_switch(sub, n_branches):
                    return True
    return False


def test_vmap_over_seeds_with_unbatched_task_keeps_the_switch(env):
    seeds = 3
    keys = jax.random.split(jax.random.key(0), seeds)
    states = jax.eval_shape(jax.vmap(lambda k: env.reset(k)[1]), keys)
    acts = jnp.zeros((seeds, N), jnp.int32)
    step = lambda k, s, a, task: env.at(task).step(k, s, a)
    unbatched = jax.make_jaxpr(jax.vmap(step, in_axes=(0, 0, 0, None)))(keys, states, acts, jnp.int32(1))
    assert _has_switch(unbatched.jaxpr, len(GAMES))
    # a batched task would turn the switch into selects over every game (what the unbatched index avoids)
    batched = jax.make_jaxpr(jax.vmap(step))(keys, states, acts, jnp.ones((seeds,), jnp.int32))
    assert not _has_switch(batched.jaxpr, len(GAMES))


@pytest.mark.parametrize("bad", ["Pong-MinAtar", "CartPole-v1", "gymnax:Breakout-MinAtar"])
def test_bad_game_id(bad):
    with pytest.raises(ConfigError) as err:
        MultiGameVecEnv(("Breakout-MinAtar", bad), 2)
    msg = str(err.value)
    assert bad in msg and "Asterix-MinAtar" in msg and "\n" not in msg
    with pytest.raises(ConfigError):
        MultiGameVecEnv((), 2)
