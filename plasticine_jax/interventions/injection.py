"""Plasticity injection (Nikishin et al. 2023), with static shapes: each head of every unit is pre-allocated
as main(x) + gate * (new(x) - stop_gradient(frozen(x))) (``nets.heads.InjectableHead``), gate = 0 until the
injection update. At injection (by default once, after update ``at * num_updates``): new and frozen are
re-sampled identically (so outputs are unchanged at that instant), the gate opens, new's optimizer state is
fresh, the target network (where the unit has one) gets the same new/frozen pair, and from then on the old
head (main) and the frozen copy receive no gradient (they are out of clipping and of the gradient-norm metric)
and no updates, while new and the torso train. Before injection new/frozen are unused and receive nothing.
``mode=reference`` reproduces the reference's bug: the injected head never trains and the old head keeps
training (the function stays the vanilla one).

Continual runs (the newest reference injects at mid-task and after every task, nesting a new injector around
the previous one each time): ``every_task`` injects at fraction ``at`` of every task (after update u with
u % task_updates == max(int(task_updates * at), 1) - 1) instead of once in the run; ``on_task_switch`` also
injects at every task switch. Without a task sequence (``ctx.task_updates == 0``) ``every_task`` falls back to
the run-level schedule (the learner warns: ``task_flags``). Repeated injection keeps the static shapes: when
the gates are already open, the injected function is first folded exactly into the old head, main <- main +
(new - frozen) (kernel and bias: the heads are affine, so main(x) + new(x) - frozen(x) is the folded main(x)),
then new == frozen are re-sampled as above, new's optimizer state is fresh and the gates stay open. The target
network gets the same fold of its own heads and the same new/frozen pair, so both functions are unchanged at
the instant. In ``paper`` mode main stays frozen after the first injection (the folded head is the nested
injector's frozen inner module); in ``reference`` mode new never trains (new == frozen), so the fold adds 0.
The defaults (neither option) inject once."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.interventions.surgery import mirror_target, reset_opt_state


@dataclass(frozen=True)
class Options:
    at: float = 0.5  # inject after this fraction of the run (of every task with every_task; reference: N//2)
    mode: str = "paper"  # paper (train new head, freeze old) | reference (new head never trains)
    every_task: bool = False  # inject at fraction `at` of every task of a continual run, not once in the run
    on_task_switch: bool = False  # also inject at every task switch of a continual run


class InjectState(NamedTuple):
    injected: jax.Array  # bool scalar (found by name with optax.tree_utils.tree_set)


def _keys(path) -> tuple[str, ...]:
    return tuple(getattr(k, "key", str(k)) for k in path)


def _live(network, path, injected, mode: str):
    """Whether a parameter may move now (bool scalar): the torso always; heads by injection phase."""
    part = network.head_part(path)
    if part is None:
        return jnp.ones((), bool)
    if mode == "reference":
        return jnp.asarray(part == "main")
    if part == "main":
        return jnp.logical_not(injected)
    if part == "new":
        return jnp.asarray(injected)
    return jnp.zeros((), bool)  # frozen


def freeze_updates(mode: str, network) -> optax.GradientTransformation:
    """Last in the optimizer chain: zero updates of parameters that must not move right now (Adam's
    momentum would otherwise keep moving a head whose gradient was masked)."""

    def init(params):
        return InjectState(jnp.zeros((), bool))

    def update(updates, state, params=None):
        def f(path, u):
            return jnp.where(_live(network, _keys(path), state.injected, mode), u, jnp.zeros_like(u))

        return jax.tree_util.tree_map_with_path(f, updates), state

    return optax.GradientTransformation(init, update)


def is_injected(unit) -> jax.Array:
    gates = unit.net_state["injection"]
    return jax.tree.leaves(gates)[0] > 0


def fold(network, params: dict, injected: jax.Array) -> dict:
    """Where ``injected``: every head's main <- main + (new - frozen), leafwise (kernel and bias), the exact
    affine equivalent of main(x) + (new(x) - frozen(x)) with the gate open; otherwise ``params`` unchanged."""

    def f(path, x):
        keys = _keys(path)
        if network.head_part(keys) != "main":
            return x
        head = params[keys[0]]
        return jnp.where(injected, x + (head["new"][keys[2]] - head["frozen"][keys[2]]), x)

    return jax.tree_util.tree_map_with_path(f, params)


def inject(ctx, unit, key):
    """Fold an earlier injection into main (only when the gates are already open), open the gates, re-sample
    new == frozen, fresh optimizer state for the new heads, mirror the target (folded the same way)."""
    net = ctx.network
    fresh = ctx.fresh_params(key)
    injected = is_injected(unit)
    unit = unit.replace(params=fold(net, unit.params, injected),
                        target=None if unit.target is None else fold(net, unit.target, injected))

    def pick(path, cur, fr):
        keys = _keys(path)
        if net.head_part(keys) == "frozen":  # frozen copy = the same sample as new
            return fresh[keys[0]]["new"][keys[2]]
        if net.head_part(keys) == "new":
            return fr
        return cur

    params = jax.tree_util.tree_map_with_path(pick, unit.params, fresh)
    new_mask = net.mask(params, lambda p: net.head_part(p) in ("new", "frozen"))
    opt_state = reset_opt_state(ctx.tx, unit.opt_state, new_mask)
    opt_state = optax.tree_utils.tree_set(opt_state, injected=jnp.ones((), bool))
    net_state = {**unit.net_state, "injection": jax.tree.map(jnp.ones_like, unit.net_state["injection"])}
    unit = unit.replace(params=params, opt_state=opt_state, net_state=net_state)
    return mirror_target(unit, new_mask)


def make(opts: Options) -> Intervention:
    if not 0.0 <= opts.at < 1.0:
        raise ConfigError(f"--pi.at must be in [0, 1) (got {opts.at})")
    if opts.mode not in ("paper", "reference"):
        raise ConfigError(f"--pi.mode must be paper or reference (got {opts.mode})")

    def trainable(ctx, unit):
        injected = is_injected(unit)
        return jax.tree_util.tree_map_with_path(
            lambda p, x: jnp.broadcast_to(_live(ctx.network, _keys(p), injected, opts.mode), x.shape), unit.params)

    def due(ctx, update_idx):
        """Whether to inject after update ``update_idx`` (0-based): at fraction ``at`` of the run, or of
        every task with ``every_task`` in a continual run."""
        if opts.every_task and ctx.task_updates > 0:
            return update_idx % ctx.task_updates == max(int(ctx.task_updates * opts.at), 1) - 1
        return update_idx == max(int(ctx.num_updates * opts.at), 1) - 1

    def after_update(ctx, unit, key, update_idx, acts):
        return jax.lax.cond(due(ctx, update_idx), lambda u: inject(ctx, u, key), lambda u: u, unit)

    def on_task_switch(ctx, unit, key, task, acts):
        return inject(ctx, unit, key)

    flags = tuple(f for f, on in (("--pi.every-task", opts.every_task), ("--pi.on-task-switch", opts.on_task_switch))
                  if on)
    return Intervention("plasticity_injection", order=60, transform_net=lambda c: replace(c, injection=True),
                        post_transform=lambda hp, net: freeze_updates(opts.mode, net), trainable=trainable,
                        after_update=after_update, on_task_switch=on_task_switch if opts.on_task_switch else None,
                        task_flags=flags)
