"""What every learner shares: the protocol the driver talks to, and the unit machinery (init, one optimizer
step with its intervention hooks, the per-update intervention event, activations computed once and shared by
interventions and metrics, per-unit plasticity metrics).

A learner module (``ppo``, ``pqn``, ``td3``, ``sac``, ``c51``) reads top to bottom -- act, targets, loss,
update, metrics -- and calls these helpers for everything that is not its own algorithm.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import jax
import jax.numpy as jnp
import optax
from jax.extend import core as jax_core

from plasticine_jax.algos.state import RunState, Unit
from plasticine_jax.envs.tasks import ContinualConfig, TaskSchedule
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Context, Intervention, build_optimizer, compose, default_hparams
from plasticine_jax.interventions.surgery import every
from plasticine_jax.metrics.collect import activation_metrics, heavy_metric_names, metric_prefix, weight_metrics
from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.metrics.norms import global_norm
from plasticine_jax.nets import Network


class Learner(Protocol):
    """What the driver needs from a learner. All methods are pure and vmappable over (key, hparams)."""

    algo: str
    env_id: str
    num_updates: int
    env_steps_per_update: int
    warnings: tuple[str, ...]

    def default_hparams(self) -> dict[str, float]: ...

    def init(self, key: jax.Array, hparams: dict | None = None) -> RunState: ...

    def run_updates(self, state: RunState, start: int | jax.Array, num: int,
                    count: int | jax.Array | None = None) -> tuple[RunState, dict]: ...

    def train(self, key: jax.Array, hparams: dict | None = None) -> tuple[RunState, dict]: ...

    def metric_names(self) -> list[str]: ...

    def config_dict(self) -> dict: ...


class UpdateLoop:
    """The entry points every learner shares, given its ``init(key, hparams)``, ``_update(state, idx)``,
    ``num_updates``, ``cfg``, ``iv``, ``env``, ``HPARAMS`` (the config fields that are vmappable) and, in a
    continual run, ``tasks`` (``envs.tasks.TaskSchedule``) and ``continual`` (its config): the whole run and
    chunks of it are one ``lax.scan`` over unbatched update indices, with the task switch inside it."""

    tasks: TaskSchedule | None = None
    continual: ContinualConfig | None = None

    def default_hparams(self) -> dict[str, float]:
        """Vmappable float hyperparameters: the learner's, every intervention's and a continual run's."""
        hp = learner_hparams(self.cfg, self.HPARAMS, self.iv)
        if self.tasks is not None:
            hp["continual.fresh"] = float(self.continual.fresh)
        return hp

    def run_updates(self, state: RunState, start: int | jax.Array, num: int,
                    count: int | jax.Array | None = None) -> tuple[RunState, dict]:
        """Run ``num`` updates starting at global update index ``start`` (unbatched under vmap).

        With ``count`` (unbatched; may be traced) only the first ``min(count, num)`` updates run and the metrics
        keep ``num`` rows, zeros past ``count``: one executable then serves every chunk length (the driver's
        last, shorter chunk) instead of a second compile of the whole update."""
        idx = jnp.asarray(start, jnp.int32) + jnp.arange(num, dtype=jnp.int32)
        if count is None:
            return jax.lax.scan(self._scan_update, state, idx)
        return scan_first(self._scan_update, state, idx, count)

    def _scan_update(self, state: RunState, update_idx: jax.Array) -> tuple[RunState, dict]:
        """One update, preceded by the task switch on the first update of every task after the first, followed
        by the divergence guard."""
        if self.tasks is None:
            new, out = self._update(state, update_idx)
        else:
            switched = jax.lax.cond(self.tasks.starts_task(update_idx), lambda s: self._switch_task(s, update_idx),
                                    lambda s: s, state)
            new, out = self._update(switched, update_idx)
            out = {**out, "charts/current_task": new.task.astype(jnp.float32)}
        return guard_divergence(state, new, out, update_idx)

    # ------------------------------------------------------------------ continual scenarios
    def env_at(self, update_idx: jax.Array):
        """The env bound to the task of this update (the env itself in an ordinary run)."""
        return self.env if self.tasks is None else self.env.at(self.tasks.task_of(update_idx))

    def activations_due(self, update_idx: jax.Array) -> jax.Array:
        """Whether an intervention reads activations on this update (its schedule, or a task switch after it)."""
        due = self.iv.activations_due(update_idx)
        if self.tasks is not None and self.iv.switch_activations:
            due = due | self.tasks.ends_task(update_idx)
        return due

    def unit_specs(self) -> dict[str, UnitSpec]:
        """Every unit of the learner by name."""
        return {v.name: v for v in vars(self).values() if isinstance(v, UnitSpec)}

    def _switch_task(self, state: RunState, update_idx: jax.Array) -> RunState:
        """Start the task of ``update_idx``: fresh episodes of the new task (normalisation statistics restart
        unless kept), optionally fresh optimizer states and an empty replay buffer, and, where the vmappable
        ``continual.fresh`` is 1, a freshly initialised learner (the fresh-network baseline). The intervention
        task-switch hooks already ran after the previous update (``after_update``)."""
        c = self.continual
        task = self.tasks.task_of(update_idx)
        key, k_env, k_fresh = jax.random.split(state.key, 3)
        previous = state.env_state if c.keep_norm_stats else None
        obs, env_state = self.env.at(task).reset(k_env, previous)
        units = dict(state.units)
        if c.reset_optimizer:
            specs = self.unit_specs()
            units = {n: u.replace(opt_state=fresh_opt_state(specs[n], u)) for n, u in units.items()}
        buffer, extra = state.buffer, state.extra
        hp = next(iter(units.values())).hp
        fresh = self.init(k_fresh, hp)
        if c.reset_buffer:
            buffer = fresh.buffer
        pick = hp["continual.fresh"] > 0.5
        choose = lambda new, old: jax.tree.map(lambda a, b: jnp.where(pick, a, b), new, old)
        units = choose(fresh.units, units)
        buffer = choose(fresh.buffer, buffer)
        extra = choose(fresh.extra, extra)
        return state.replace(units=units, env_state=env_state, obs=obs, key=key, task=task, buffer=buffer,
                             extra=extra)

    def train(self, key: jax.Array, hparams: dict | None = None) -> tuple[RunState, dict]:
        """The whole run for one seed: returns (final carry, metrics stacked over updates)."""
        return self.run_updates(self.init(key, hparams), 0, self.num_updates)

    def metric_names(self) -> list[str]:
        """Every key of the per-update metrics (traced, not run)."""
        shapes = jax.eval_shape(lambda k: self.run_updates(self.init(k), 0, 1)[1], jax.random.PRNGKey(0))
        return sorted(shapes)


DIVERGENCE_QUANTITIES = ("loss", "gradient norm", "params")


def _all_finite(xs: list) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in xs])) if xs else jnp.asarray(True)


def divergence_code(units: dict, out: dict) -> jax.Array:
    """int32: 0 while every parameter is finite; once one is not, 1 + the index in ``DIVERGENCE_QUANTITIES`` of
    the first quantity of this update that is non-finite (a loss, else a gradient norm, else the params alone).
    Parameters are the trigger because off-policy learners report NaN losses for updates without a gradient step
    (warm-up), and a non-finite loss or gradient reaches the parameters in the same update (a clipped infinite
    gradient is NaN too)."""
    losses = [v for k, v in out.items() if k.startswith("losses/") and (k.endswith("_loss") or k == "losses/loss")]
    grads = [v for k, v in out.items() if k.endswith("gradient_norm")]
    params_ok = _all_finite(jax.tree.leaves({name: u.params for name, u in units.items()}))
    what = jnp.where(_all_finite(losses), jnp.where(_all_finite(grads), 3, 2), 1)
    return jnp.where(params_ok, 0, what).astype(jnp.int32)


def guard_divergence(old: RunState, new: RunState, out: dict, update_idx: jax.Array) -> tuple[RunState, dict]:
    """Per seed, in-graph: record the first update whose loss, gradient norm or params went non-finite and keep
    the units (params, optimizer and intervention states, targets) at their last finite values from then on, so
    a diverged seed stops learning while the other vmapped seeds go on (``--on-divergence``). Exact otherwise:
    a healthy seed's state passes through unchanged. Adds ``charts/diverged`` (1 once frozen) to the metrics."""
    code = divergence_code(new.units, out)
    first = (old.diverged == 0) & (code > 0)
    diverged = jnp.where(first, update_idx + 1, old.diverged).astype(jnp.int32)
    what = jnp.where(first, code, old.diverged_what).astype(jnp.int32)
    frozen = diverged > 0
    units = jax.tree.map(lambda a, b: jnp.where(frozen, a, b), old.units, new.units)
    new = new.replace(units=units, diverged=diverged, diverged_what=what)
    return new, {**out, "charts/diverged": frozen.astype(jnp.float32)}


def compose_interventions(interventions: Intervention | list | tuple) -> Intervention:
    """One composed intervention from an intervention or a list of them (``make_train``'s argument)."""
    return compose([interventions] if isinstance(interventions, Intervention) else list(interventions))


# ---------------------------------------------------------------------------------------------------------
# units
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitSpec:
    """Static description of one unit: its network, how to build its optimizer from the hyperparameters,
    its metric tag and whether it keeps a target network."""

    name: str
    network: Network
    make_tx: Callable[[dict], optax.GradientTransformation]
    ctx: Context
    tag: str = ""  # metric tag: plasticity/<tag>/... ('' for PPO's single unit)
    target: bool = False


def make_unit_spec(name: str, network: Network, iv: Intervention, hp_defaults: dict, *, learning_rate: Callable,
                   max_grad_norm: float | None, adam_eps: float, num_updates: int, steps_per_update: int,
                   env_steps_per_update: int, tag: str = "", target: bool = False,
                   clip: str = "global_norm", optimizer: str = "adam", task_updates: int = 0) -> UnitSpec:
    """A unit whose optimizer is the intervention chain around Adam (``build_optimizer``).
    ``learning_rate(hp) -> schedule(count)`` so the learning rate can be a vmapped hyperparameter."""

    def make_tx(hp):
        return build_optimizer(iv, hp, learning_rate(hp), max_grad_norm, adam_eps, network, clip, optimizer)

    hp0 = {k: jnp.asarray(v, jnp.float32) for k, v in hp_defaults.items()}
    ctx = Context(network, num_updates, steps_per_update, env_steps_per_update, make_tx(hp0), name, task_updates)
    return UnitSpec(name, network, make_tx, ctx, tag, target)


def init_unit(spec: UnitSpec, iv: Intervention, key: jax.Array, hp: dict, k_iv: jax.Array | None = None) -> Unit:
    """Fresh params (and target copy), optimizer state and intervention state for one unit."""
    variables = spec.network.init(key)
    params = variables.pop("params")
    unit = Unit(params, dict(variables), spec.make_tx(hp).init(params), {}, hp,
                target=params if spec.target else None)
    if iv.init is not None:
        unit = iv.init(spec.ctx, unit, key if k_iv is None else k_iv)
    return unit


def loss_with_interventions(spec: UnitSpec, iv: Intervention, loss_fn: Callable) -> Callable:
    """``loss_fn(params, unit, *args) -> (loss, aux)`` plus the interventions' loss terms, logged as
    ``losses/intervention_loss`` in aux (0 when no intervention adds one, so every run has the same columns)."""

    def f(params, unit: Unit, *args):
        loss, aux = loss_fn(params, unit, *args)
        extra = iv.loss(spec.ctx, params, unit.istate, unit.hp) if iv.loss is not None else jnp.zeros(())
        return loss + extra, {**aux, "losses/intervention_loss": extra}

    return f


def apply_grads(spec: UnitSpec, iv: Intervention, unit: Unit, grads: dict, key: jax.Array) -> tuple[Unit, jax.Array]:
    """One optimizer step of a unit: mask untrainable entries (before clipping and the norm metric), update,
    then every ``after_step`` hook. Returns (unit, gradient norm over the trainable params, pre-clip)."""
    if iv.trainable is not None:
        mask = iv.trainable(spec.ctx, unit)
        grads = jax.tree.map(lambda g, m: jnp.where(m, g, jnp.zeros_like(g)), grads, mask)
    norm = global_norm(grads)
    updates, opt_state = spec.make_tx(unit.hp).update(grads, unit.opt_state, unit.params)
    unit = unit.replace(params=optax.apply_updates(unit.params, updates), opt_state=opt_state)
    if iv.after_step is not None:
        unit = iv.after_step(spec.ctx, unit, key)
    return unit, norm


def _traced_once(fn: Callable, operand):
    """(``fn`` as a replay of its jaxpr, its output shapes): one trace serves both the branch and the zeros."""
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(operand)
    tree = jax.tree.structure(shapes)

    def replay(x):
        return jax.tree.unflatten(tree, jax_core.jaxpr_as_fun(closed)(*jax.tree.leaves(x)))

    return replay, shapes


def scan_first(body: Callable, carry, xs: jax.Array, count: int | jax.Array):
    """``lax.scan(body, carry, xs)`` over only the first ``count`` entries of ``xs`` (a traced trip count):
    (final carry, outputs with all ``len(xs)`` rows, zeros past ``count``). A ``while_loop`` writing each step's
    outputs in place, as scan's own lowering does; ``body`` is traced once."""
    n = xs.shape[0]
    step_fn, (_, out_shapes) = _traced_once(lambda cx: body(*cx), (carry, xs[0]))
    stop = jnp.minimum(jnp.asarray(count, jnp.int32), n)

    def step(c):
        state, i, outs = c
        state, out = step_fn((state, xs[i]))
        return state, i + 1, jax.tree.map(lambda buf, v: buf.at[i].set(v), outs, out)

    outs = jax.tree.map(lambda s: jnp.zeros((n, *s.shape), s.dtype), out_shapes)
    carry, _, outs = jax.lax.while_loop(lambda c: c[1] < stop, step, (carry, jnp.int32(0), outs))
    return carry, outs


def _zeros(shapes):
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def cond_or_zeros(pred: jax.Array, fn: Callable, operand):
    """``fn(operand)`` when ``pred``, else zeros shaped like its output, with ``fn`` traced once (not once by
    ``eval_shape`` for the zeros and again for the branch)."""
    taken, shapes = _traced_once(fn, operand)
    return jax.lax.cond(pred, taken, lambda _: _zeros(shapes), operand)


def step_or_skip(pred: jax.Array, fn: Callable, operand):
    """``fn(operand) -> (operand', aux)`` when ``pred``, else ``(operand, zeros like aux)``: a training step
    that has not started yet or is not due (a real branch when ``pred`` is unbatched).

    ``fn`` is traced once and the taken branch replays that jaxpr, rather than tracing it once for the shapes of
    the zeros and again for the branch; nested steps (TD3's train step holding its delayed actor step) would
    otherwise re-trace their Python and the networks' flax code 2^depth times. Cuts TD3's and SAC's trace time
    by about a fifth."""
    taken, shapes = _traced_once(fn, operand)
    return jax.lax.cond(pred, taken, lambda x: (x, _zeros(shapes[1])), operand)


def unit_activations(spec: UnitSpec, unit: Unit, inputs: tuple, due: jax.Array) -> dict:
    """Hidden activations of a unit on ``inputs`` when ``due`` (zeros otherwise): one forward pass per update,
    shared by the interventions that read activations and by the plasticity metrics."""
    def compute(operand):
        params, net_state, xs = operand
        return spec.network.apply_with_activations(params, net_state, *xs)[1]

    return cond_or_zeros(due, compute, (unit.params, unit.net_state, tuple(inputs)))


def after_update(spec: UnitSpec, iv: Intervention, unit: Unit, key: jax.Array, update_idx: jax.Array,
                 acts: dict) -> Unit:
    """The per-update intervention event for one unit, then (continual runs, on the last update of every task
    but the last) the task-switch event ``on_task_switch`` with the same activations."""
    tu = spec.ctx.task_updates
    switch = iv.on_task_switch is not None and tu > 0
    if switch:
        key, k_switch = jax.random.split(key)
    if iv.after_update is not None:
        unit = iv.after_update(spec.ctx, unit, key, update_idx, acts)
    if switch:
        nxt = update_idx + 1
        ends = (nxt % tu == 0) & (nxt < spec.ctx.num_updates)
        unit = jax.lax.cond(ends, lambda u: iv.on_task_switch(spec.ctx, u, k_switch, nxt // tu, acts),
                            lambda u: u, unit)
    return unit


def fresh_opt_state(spec: UnitSpec, unit: Unit):
    """A fresh optimizer state for a unit's current params, keeping plasticity injection's phase flag."""
    new = spec.make_tx(unit.hp).init(unit.params)
    flag = optax.tree_utils.tree_get_all_with_path(unit.opt_state, "injected")
    return optax.tree_utils.tree_set(new, injected=flag[0][1]) if flag else new


def metrics_due(metrics: MetricsConfig, update_idx: jax.Array) -> jax.Array:
    return every(metrics.every, update_idx)


def unit_heavy_metrics(spec: UnitSpec, metrics: MetricsConfig, acts: dict, due: jax.Array,
                       features: bool = True) -> dict:
    """Dormant ratio and feature metrics of a unit on the shared activations (NaN when not due)."""
    names = [k for k in heavy_metric_names(spec.network, spec.tag)
             if features or k.endswith("dormant_ratio")]
    nan = {k: jnp.full((), jnp.nan, jnp.float32) for k in names}
    if metrics.every <= 0:
        return nan
    return jax.lax.cond(due, lambda a: activation_metrics(spec.network, a, metrics, spec.tag, features),
                        lambda _: nan, acts)


def unit_weight_metrics(spec: UnitSpec, unit: Unit, ref_params: dict) -> dict:
    return weight_metrics(spec.network, unit.params, unit.net_state, ref_params, spec.tag)


def gradient_norm_key(spec: UnitSpec) -> str:
    return metric_prefix(spec.tag) + "gradient_norm"


# ---------------------------------------------------------------------------------------------------------
# hyperparameters and schedules
# ---------------------------------------------------------------------------------------------------------


def resolve_hparams(defaults: dict[str, float], overrides: dict | None) -> dict:
    """float32 hyperparameters: the defaults with ``overrides`` applied (unknown keys refused)."""
    hp = {k: jnp.asarray(v, jnp.float32) for k, v in defaults.items()}
    for k, v in (overrides or {}).items():
        if k not in hp:
            raise ConfigError(f"unknown hyperparameter '{k}'; vmappable ones: {', '.join(sorted(hp))}")
        hp[k] = jnp.asarray(v, jnp.float32)
    return hp


def linear_lr(anneal: bool, steps_per_update: int, num_updates: int) -> Callable:
    """``hp -> schedule(count)``: the learning rate ``hp["learning_rate"]`` annealed linearly to 0 over the run,
    constant within an update (CleanRL's per-iteration annealing), or constant."""
    def make(hp):
        lr = hp["learning_rate"]
        if anneal:
            return lambda count: lr * (1.0 - (count // steps_per_update).astype(jnp.float32) / num_updates)
        return lambda count: lr * jnp.ones_like(count, jnp.float32)

    return make


def learner_hparams(cfg, names: tuple[str, ...], iv: Intervention) -> dict[str, float]:
    """The config fields ``names`` as floats, plus every intervention's numeric options."""
    return {**{k: float(getattr(cfg, k)) for k in names}, **default_hparams(iv)}


def schedule_warnings(iv: Intervention, metrics: MetricsConfig, num_updates: int,
                      tasks: TaskSchedule | None = None) -> tuple[str, ...]:
    """One line per scheduled intervention or metric that can never fire within ``num_updates`` updates (and
    per task-switch option in a run without a task sequence)."""
    out = []
    if tasks is None or tasks.num_tasks < 2:
        out += [f"{flag} never fires: this run has no task switch (set --continual.num-tasks >= 2 or a "
                f"continual --preset)" for flag in iv.task_flags]
    for flag, period in iv.schedules:
        if period > num_updates:
            out.append(f"{flag} {period} never fires in this run of {num_updates} updates; lower it to at most "
                       f"{num_updates}")
    if 0 < num_updates < metrics.every:
        out.append(f"--metrics.every {metrics.every} never computes the heavy plasticity metrics in this run of "
                   f"{num_updates} updates; lower it to at most {num_updates}")
    return tuple(out)


def task_schedule(continual: ContinualConfig | None, env_steps_per_update: int,
                  total_timesteps: int) -> TaskSchedule | None:
    """The run's task schedule (None outside a continual run)."""
    return None if continual is None else TaskSchedule.build(continual, env_steps_per_update, total_timesteps)


def emit_warnings(lines: tuple[str, ...]) -> None:
    for line in lines:
        warnings.warn(line, UserWarning, stacklevel=3)


def achievement_rates(names: tuple[str, ...], ep_done: jax.Array, achievements: jax.Array) -> dict:
    """Craftax's open-ended progress: per achievement, the percentage of the episodes that finished in a batch of
    steps which unlocked it (``charts/achievements/<name>``, NaN when none finished), as Craftax reports it."""
    n = ep_done.sum()
    got = (achievements * ep_done[..., None]).reshape(-1, achievements.shape[-1]).sum(0)
    rate = jnp.where(n > 0, 100.0 * got / jnp.maximum(n, 1), jnp.nan)
    return {f"charts/achievements/{name}": rate[i] for i, name in enumerate(names)}


def episode_stats(ep_done: jax.Array, ep_return: jax.Array, ep_length: jax.Array) -> dict:
    """Mean return and length of the episodes that finished in a batch of steps (NaN when none did)."""
    n = ep_done.sum()
    mean = lambda x: jnp.where(n > 0, (x * ep_done).sum() / jnp.maximum(n, 1), jnp.nan)
    return {"charts/episodes": n.astype(jnp.float32), "charts/episodic_return": mean(ep_return),
            "charts/episodic_length": mean(ep_length)}

