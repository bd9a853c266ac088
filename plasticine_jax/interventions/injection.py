"""Plasticity injection (Nikishin et al. 2023), with static shapes: each head of every unit is pre-allocated
as main(x) + gate * (new(x) - stop_gradient(frozen(x))) (``nets.heads.InjectableHead``), gate = 0 until the
injection update. At injection (once, after update ``at * num_updates``): new and frozen are re-sampled
identically (so outputs are unchanged at that instant), the gate opens, new's optimizer state is fresh, the
target network (where the unit has one) gets the same new/frozen pair, and from then on the old head (main)
and the frozen copy receive no gradient (they are out of clipping and of the gradient-norm metric) and no
updates, while new and the torso train. Before injection new/frozen are unused and receive nothing.
``mode=reference`` reproduces the reference's bug: the injected head never trains and the old head keeps
training (the function stays the vanilla one)."""

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
    at: float = 0.5  # inject once after this fraction of the updates (reference: N//2)
    mode: str = "paper"  # paper (train new head, freeze old) | reference (new head never trains)


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


def inject(ctx, unit, key):
    """Open the gates, re-sample new == frozen, fresh optimizer state for the new heads, mirror the target."""
    net = ctx.network
    fresh = ctx.fresh_params(key)

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

    def after_update(ctx, unit, key, update_idx, acts):
        when = max(int(ctx.num_updates * opts.at), 1) - 1  # 0-based index of the update after which to inject
        return jax.lax.cond(update_idx == when, lambda u: inject(ctx, u, key), lambda u: u, unit)

    return Intervention("plasticity_injection", order=60, transform_net=lambda c: replace(c, injection=True),
                        post_transform=lambda hp, net: freeze_updates(opts.mode, net), trainable=trainable,
                        after_update=after_update)
