"""MuJoCo Playground backend: Playground's MJX environments compiled into the training graph.

``PlaygroundVecEnv('CartpoleSwingup', num_envs)`` is ``num_envs`` copies of a MuJoCo Playground ``MjxEnv``
(``playground:<name>`` ids, e.g. ``playground:CartpoleSwingup``, ``playground:CheetahRun``; the names are
``mujoco_playground.registry.ALL_ENVS``), vmapped, behind the ``VecEnv`` contract (``envs.core``). Reset and step
are pure JAX, so the env runs inside ``jit(lax.scan)`` and under ``vmap`` over seeds like gymnax or Brax.

* **Physics**: ``impl="jax"`` (MJX's XLA implementation) by default. Playground's own default is ``impl="warp"``
  (MuJoCo Warp), which on CPU runs Warp's CPU kernels 10-20x slower (envs.md §2) and needs ``warp-lang`` (392 MB;
  pip installs it with playground and ``import mujoco.mjx`` loads it when present, +2 s, but ``impl="jax"`` never
  calls it: pyproject.toml); ``impl="warp"`` or any other config field can still be set (``impl=``,
  ``config_overrides=``).
* **Observations** ``Box(-inf, inf)`` float32, flat ``(size,)``. An array observation is flattened. A dict
  observation (locomotion and some manipulation envs) is its ``"state"`` entry when it has one: Playground's own
  PPO feeds the policy ``"state"`` and gives ``"privileged_state"`` (simulator-only quantities) to an asymmetric
  critic only, so concatenating every key would hand the policy information it must not see. A dict without
  ``"state"`` is every entry flattened and concatenated in sorted key order (JAX's pytree order for dicts).
* **Actions** ``Box(-1, 1)^action_size``, passed to the env unchanged (Playground envs map [-1, 1] onto their
  actuators themselves; MuJoCo clamps ``ctrl`` to the actuator's ``ctrlrange``). Rewards float32.
* **Episodes**: ``terminated`` is the env's own ``done`` (dm_control suite tasks set it only when the physics
  goes NaN; locomotion envs when the robot falls). Playground envs never stop on time themselves (its training
  wrapper, brax's ``EpisodeWrapper``, does), so the state carries a step counter and ``truncated`` is
  ``episode_length`` env steps reached without termination (``episode_length`` defaults to the env config's,
  1000 for the dm_control suite). With ``action_repeat`` k > 1 (default: the env config's, 1 except a few
  manipulation tasks) every agent step is k env steps with the same action and the summed reward, counted as k
  steps towards ``episode_length``, as in brax's ``EpisodeWrapper``.
* **Auto-reset** inside ``step``: a finished env restarts from a *fresh* ``env.reset`` with its own key (env ``i``
  of a step with key ``k`` resets with ``jax.random.split(k, num_envs)[i]``; ``reset(key)`` uses the same
  split), and ``info["final_obs"]`` is the observation before that reset. Playground's ``BraxAutoResetWrapper``
  instead replays the first initial state unless ``full_reset=True``; we follow ``brax_env`` and draw a new one.

**Env families**: the dm_control suite tasks (``CartpoleSwingup``, ``CheetahRun``, ``WalkerWalk`` ...) ship with
the package. The locomotion and manipulation envs load robot models from ``mujoco_menagerie``, which Playground
``git clone``s into its own package folder on first load; without network that fails, and the backend says so in
one line (with the folder and commit to put there by hand). Vision variants (``vision=True`` configs) need
Madrona/Warp rendering and are not supported.

No tasks (``at`` is the identity): Playground has no per-env parameter table to switch. The carried state is
Playground's ``State`` with its zero-size arrays (MJX Data has several) as None, so orbax checkpoints and checksums
of the training carry work (``PlaygroundVecEnv.expand`` rebuilds them).

Measured with this class on 2 CPU cores shared with other jobs (load average 4-6, so compile times are about
twice an idle machine's), ``impl="jax"``, 64 envs, ``jit`` of reset + a 1000-step random-action ``lax.scan``
returning reward, obs and done sums (so one truncation and reset per env), best of two runs after a warm-up
(compile / env steps/s): CartpoleSwingup 13-16 s / 0.71M (2 seeds under ``vmap``: 0.54-0.76M); CheetahRun 61 s /
17.7k. The gated reset (``fresh_where_done``) is what makes these: computing the fresh reset on every step, as
``brax_env`` does, gave CartpoleSwingup 0.36-0.52M and CheetahRun 169 steps/s (its reset runs 200 physics steps).
"""

from __future__ import annotations

import difflib
import subprocess
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.custom_batching import custom_vmap

from plasticine_jax.envs.core import TasklessEnv, select_state
from plasticine_jax.envs.spaces import Box
from plasticine_jax.errors import ConfigError

INSTALL = 'pip install -e ".[playground]"'


def _registry() -> Any:
    """``mujoco_playground.registry``, or a one-line ConfigError naming the install."""
    try:
        from mujoco_playground import registry
    except ImportError as e:
        raise ConfigError(f"the playground backend needs MuJoCo Playground: {INSTALL} ({e})") from None
    return registry


def env_names() -> tuple[str, ...]:
    """Every env name Playground registers (dm_control suite, locomotion, manipulation), in its registry order."""
    return tuple(_registry().ALL_ENVS)


def check_env_name(name: str) -> None:
    """A one-line ``ConfigError`` listing close matches for an unknown ``name`` (or naming the install when
    Playground is missing)."""
    names = env_names()
    if name in names:
        return
    lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.6)
    close += [low for low in lower if name.lower() in low and low not in close]
    hint = f" (did you mean {', '.join('playground:' + lower[c] for c in close[:4])}?)" if close else ""
    suite = _registry().dm_control_suite.ALL_ENVS
    raise ConfigError(f"unknown playground env '{name}'{hint}; {len(names)} envs in "
                      f"mujoco_playground.registry.ALL_ENVS, the dm_control suite ones: "
                      f"{', '.join('playground:' + n for n in suite)}")


def needs_menagerie(name: str) -> bool:
    """Whether ``name`` loads its model from mujoco_menagerie (the locomotion and manipulation envs)."""
    from mujoco_playground import locomotion, manipulation

    return name in locomotion.ALL_ENVS or name in manipulation.ALL_ENVS


def _ensure_menagerie(name: str) -> None:
    """Let Playground clone mujoco_menagerie if it is missing; a one-line ConfigError if that fails (no network,
    no git)."""
    from mujoco_playground._src import mjx_env

    try:
        mjx_env.ensure_menagerie_exists()
    except (subprocess.CalledProcessError, OSError) as e:
        raise ConfigError(f"playground env '{name}' needs mujoco_menagerie, which MuJoCo Playground git-clones into "
                          f"{mjx_env.MENAGERIE_PATH} on first load, and the clone failed ({e}); clone "
                          f"https://github.com/deepmind/mujoco_menagerie there at commit "
                          f"{mjx_env.MENAGERIE_COMMIT_SHA} on a machine with network") from None


def flat_obs(obs: Any) -> jax.Array:
    """One env's observation as a flat float32 vector: an array flattened; a dict's ``"state"`` entry, or every
    entry concatenated in sorted key order when it has none (see module docstring)."""
    if isinstance(obs, Mapping):
        if "state" in obs:
            obs = obs["state"]
        else:
            obs = jnp.concatenate([jnp.ravel(obs[k]) for k in sorted(obs)])
    return jnp.ravel(obs).astype(jnp.float32)


def compact(tree: Any) -> Any:
    """``tree`` with its zero-size arrays replaced by None (see ``PlaygroundVecEnv.expand``)."""
    return jax.tree.map(lambda x: None if np.size(x) == 0 else x, tree)  # np.size: some leaves are Python floats


@struct.dataclass
class PlaygroundVecState:
    """The batched Playground state (``mujoco_playground.State``, leading axis ``num_envs``) and each env's step
    count."""

    env_state: Any  # zero-size fields (MJX Data has several) are None: see PlaygroundVecEnv.expand
    steps: jax.Array  # int32 [num_envs]: env steps taken in the current episode


class PlaygroundVecEnv(TasklessEnv):
    """``num_envs`` copies of a MuJoCo Playground env (see module docstring)."""

    def __init__(self, name: str, num_envs: int, impl: str = "jax", episode_length: int | None = None,
                 action_repeat: int | None = None, config_overrides: dict[str, Any] | None = None):
        check_env_name(name)
        registry = _registry()
        if needs_menagerie(name):
            _ensure_menagerie(name)
        overrides = {"impl": impl, **(config_overrides or {})}
        config = registry.get_default_config(name)
        unknown = [k for k in overrides if k.split(".")[0] not in config]
        if unknown:
            raise ConfigError(f"playground env '{name}' has no config field '{unknown[0]}'; its fields: "
                              f"{', '.join(config.keys())}")
        self.env = registry.load(name, config_overrides=overrides)
        self.name = name
        self.num_envs = int(num_envs)
        cfg = self.env._config  # the env's locked config with the overrides applied (no public accessor)
        self.episode_length = int(cfg.episode_length if episode_length is None else episode_length)
        self.action_repeat = int(cfg.get("action_repeat", 1) if action_repeat is None else action_repeat)
        if self.episode_length < 1 or self.action_repeat < 1:
            raise ConfigError(f"playground episode_length and action_repeat must be >= 1 (got "
                              f"{self.episode_length}, {self.action_repeat})")
        obs = jax.eval_shape(lambda k: flat_obs(self.env.reset(k).obs), jax.random.PRNGKey(0))
        size = int(obs.shape[0])
        self.observation_space = Box((-np.inf,) * size, (np.inf,) * size, (size,))
        act = int(self.env.action_size)
        self.action_space = Box((-1.0,) * act, (1.0,) * act, (act,))
        self._template = jax.eval_shape(self.env.reset, jax.random.PRNGKey(0))  # one env's state: shapes, dtypes
        self._fresh = fresh_where_done(jax.vmap(lambda k: compact(self.env.reset(k))))

    def reset(self, key: jax.Array, previous: Any = None) -> tuple[jax.Array, PlaygroundVecState]:
        """Fresh episodes for every env (``previous`` is ignored: no tasks, no running statistics)."""
        state = jax.vmap(self.env.reset)(jax.random.split(key, self.num_envs))
        obs = jax.vmap(flat_obs)(state.obs)
        return obs, PlaygroundVecState(compact(state), jnp.zeros((self.num_envs,), jnp.int32))

    def expand(self, env_state: Any) -> Any:
        """One env's carried state (``PlaygroundVecState.env_state`` under ``vmap``) as the full Playground
        ``State``, its zero-size fields rebuilt.

        The carry holds those fields as None because they have no values but break pytree consumers that handle
        arrays one by one (orbax refuses to save zero-size arrays, and a checksum that views an array's bytes
        cannot view an empty one): with ``impl="jax"`` MJX Data has empty ``act``, ``mocap_pos``, ``userdata``
        ... for models without those elements."""
        treedef = jax.tree.structure(self._template)
        leaves = treedef.flatten_up_to(env_state)
        return treedef.unflatten([jnp.zeros(t.shape, t.dtype) if x is None else x
                                  for x, t in zip(leaves, jax.tree.leaves(self._template), strict=True)])

    def step(self, key: jax.Array, state: PlaygroundVecState, action: jax.Array
             ) -> tuple[jax.Array, PlaygroundVecState, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
        """Step every env; finished ones restart from a fresh reset (``info["final_obs"]``: the obs before it)."""
        nxt, steps, final_obs, reward, terminated, truncated = jax.vmap(self._advance)(
            state.env_state, state.steps, action)
        done = jnp.logical_or(terminated, truncated)
        fresh = self._fresh(done, jax.random.split(key, self.num_envs))
        new = jax.vmap(lambda d, f, n: select_state(d, f, n, _FIELDS))(done, fresh, nxt)
        obs = jax.vmap(flat_obs)(new.obs)
        info = {"final_obs": final_obs}
        return obs, PlaygroundVecState(new, jnp.where(done, 0, steps)), reward, terminated, truncated, info

    def _advance(self, state: Any, steps: jax.Array, action: jax.Array):
        """One env: ``action_repeat`` env steps, then classify the end (terminated vs truncated)."""
        state = self.expand(state)
        if self.action_repeat == 1:
            nxt = self.env.step(state, action)
            reward = nxt.reward
        else:
            def repeat(s: Any, _: Any) -> tuple[Any, jax.Array]:
                s = self.env.step(s, action)
                return s, s.reward

            nxt, rewards = jax.lax.scan(repeat, state, None, length=self.action_repeat)
            reward = rewards.sum()
        steps = steps + self.action_repeat
        terminated = nxt.done > 0.5
        truncated = jnp.logical_and(steps >= self.episode_length, jnp.logical_not(terminated))
        return compact(nxt), steps, flat_obs(nxt.obs), jnp.asarray(reward, jnp.float32), terminated, truncated


def fresh_where_done(reset_batch: Any) -> Any:
    """``fresh(done, keys)``: ``reset_batch(keys)`` (fresh states for a [n] batch of keys) when any of ``done`` [n]
    is true, zeros of the same structure otherwise, skipping the reset's computation.

    The reset is only needed on the rare steps where an episode ends, and some resets are expensive (CheetahRun's
    runs 200 physics steps to let the body settle: computed on every step it cuts 13k env steps/s to 0.17k). A
    ``lax.cond`` on ``done.any()`` skips it, but under ``vmap`` over seeds its predicate is batched and JAX turns the
    cond into a select that computes both branches. So the function has its own vmap rule (``custom_vmap``): the
    batched call flattens the seed and env axes into one batch and calls itself again, so the cond's predicate is
    ``any`` over *every* env of every seed and stays unbatched through any number of nested ``vmap``s. The reset
    then runs once for the whole batch on steps where some env ended; with time-limit truncation, which ends every
    env on the same step, that is once per episode. Values are unchanged: every env still resets with its own key.
    """

    shapes: dict[tuple, Any] = {}  # the reset's output shapes per key batch shape (saves re-tracing the reset)

    def zeros(keys: jax.Array) -> Any:
        sig = (keys.shape, keys.dtype)
        if sig not in shapes:
            shapes[sig] = jax.eval_shape(reset_batch, keys)
        return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes[sig])

    def cond_reset(done: jax.Array, keys: jax.Array) -> Any:
        return jax.lax.cond(jnp.any(done), reset_batch, zeros, keys)

    fresh = custom_vmap(cond_reset)

    @fresh.def_vmap
    def rule(axis_size: int, in_batched: list[bool], done: jax.Array, keys: jax.Array) -> tuple[Any, Any]:
        done_b, keys_b = in_batched
        done = done if done_b else jnp.broadcast_to(done, (axis_size, *done.shape))
        keys = keys if keys_b else jnp.broadcast_to(keys, (axis_size, *keys.shape))
        n = done.shape[1]  # envs per seed (explicit: mjx Data has zero-size fields, where -1 is ambiguous)
        out = fresh(done.reshape(-1), keys.reshape((axis_size * n, *keys.shape[2:])))
        out = jax.tree.map(lambda x: x.reshape((axis_size, n, *x.shape[1:])), out)
        return out, jax.tree.map(lambda _: True, out)

    return fresh


# State fields a finished env takes from its reset
_FIELDS = ("data", "obs", "reward", "done", "metrics", "info")
