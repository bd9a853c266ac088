"""Plasticity injection (Nikishin et al. 2023), with static shapes: each head is pre-allocated as
main(x) + gate * (new(x) - stop_gradient(frozen(x))) (``nets.heads.InjectableHead``), gate = 0 until the
injection update. At injection (once, after update ``at * num_updates``): new and frozen are re-sampled
identically (so outputs are unchanged at that instant), the gate opens, new's optimizer state is fresh,
and from then on the old head (main) and the frozen copy receive no updates while new and the torso
train. Before injection new/frozen receive no updates. ``mode=reference`` reproduces the reference's bug:
the injected head never trains and the old head keeps training (function identical to vanilla)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.interventions.surgery import path_mask, reset_opt_state

HEADS = ("policy_head", "value_head")
POST = "plasticity_injection_post"


@dataclass(frozen=True)
class Options:
    at: float = 0.5  # inject once after this fraction of the updates (reference: N//2)
    mode: str = "paper"  # paper (train new head, freeze old) | reference (new head never trains)


class InjectState(NamedTuple):
    injected: jax.Array  # bool scalar


def freeze_updates(mode: str) -> optax.GradientTransformation:
    """Last in the optimizer chain: zero updates of parameters that must not move right now."""

    def init(params):
        return InjectState(jnp.zeros((), bool))

    def update(updates, state, params=None):
        def f(path, u):
            keys = tuple(getattr(k, "key", str(k)) for k in path)
            if keys[0] not in HEADS:
                return u
            part = keys[1]
            if mode == "reference":
                return u if part == "main" else jnp.zeros_like(u)
            if part == "main":
                return jnp.where(state.injected, jnp.zeros_like(u), u)
            if part == "new":
                return jnp.where(state.injected, u, jnp.zeros_like(u))
            return jnp.zeros_like(u)  # frozen

        return jax.tree_util.tree_map_with_path(f, updates), state

    return optax.GradientTransformation(init, update)


def inject(ctx, learner, key):
    """Open the gates, re-sample new == frozen, fresh optimizer state for the new heads."""
    fresh = ctx.fresh_params(key)

    def pick(path, cur, fr):
        keys = tuple(getattr(k, "key", str(k)) for k in path)
        if keys[0] in HEADS and keys[1] == "frozen":  # frozen copy = the same sample as new
            return fresh[keys[0]]["new"][keys[2]]
        if keys[0] in HEADS and keys[1] == "new":
            return fr
        return cur

    params = jax.tree_util.tree_map_with_path(pick, learner.params, fresh)
    new_mask = path_mask(params, lambda p: p[0] in HEADS and p[1] in ("new", "frozen"))
    opt_state = reset_opt_state(learner.opt_state, params, new_mask)
    opt_state = type(opt_state)({**opt_state, POST: InjectState(jnp.ones((), bool))})
    net_state = {**learner.net_state,
                 "injection": jax.tree.map(lambda g: jnp.ones_like(g), learner.net_state["injection"])}
    return learner.replace(params=params, opt_state=opt_state, net_state=net_state)


def make(opts: Options) -> Intervention:
    if not 0.0 <= opts.at < 1.0:
        raise ConfigError(f"--pi.at must be in [0, 1) (got {opts.at})")
    if opts.mode not in ("paper", "reference"):
        raise ConfigError(f"--pi.mode must be paper or reference (got {opts.mode})")

    def after_update(ctx, learner, key, update_idx, obs):
        when = max(int(ctx.num_updates * opts.at), 1) - 1  # 0-based index of the update after which to inject
        return jax.lax.cond(update_idx == when, lambda lr: inject(ctx, lr, key), lambda lr: lr, learner)

    return Intervention("plasticity_injection", order=60, transform_net=lambda c: replace(c, injection=True),
                        post_transform=lambda hp: freeze_updates(opts.mode), after_update=after_update)


