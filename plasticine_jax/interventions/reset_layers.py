"""Layer resets (Nikishin et al. 2022, primacy bias): every ``frequency`` updates re-sample the chosen
layers from their original initializers and reset their optimizer state (paper). ``which=heads`` resets
the policy and value heads (the reference's 'final'), ``all`` the whole network. The reference left the
optimizer state alone: ``reset_optimizer=False``. Its frequency (1000 iterations) is the default."""

from __future__ import annotations

from dataclasses import dataclass

import jax

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.interventions.surgery import every, is_frozen_copy, path_mask, reset_opt_state, where_tree

HEADS = ("policy_head", "value_head")


@dataclass(frozen=True)
class Options:
    which: str = "heads"  # heads (reference 'final') | all
    frequency: int = 1000  # updates between resets (reference: 1000 iterations)
    reset_optimizer: bool = True  # paper: reset optimizer state of reset params; the reference does not


def reset_mask(params: dict, which: str):
    if which == "all":
        return path_mask(params, lambda p: p[0] != "log_std" and not is_frozen_copy(p))
    return path_mask(params, lambda p: p[0] in HEADS and not is_frozen_copy(p))


def make(opts: Options) -> Intervention:
    if opts.which not in ("heads", "all"):
        raise ConfigError(f"--rl.which must be heads or all (got {opts.which})")
    if opts.frequency < 1:
        raise ConfigError(f"--rl.frequency must be >= 1 update (got {opts.frequency})")

    def fire(ctx, learner, key):
        mask = reset_mask(learner.params, opts.which)
        params = where_tree(mask, ctx.fresh_params(key), learner.params)
        opt_state = reset_opt_state(learner.opt_state, params, mask) if opts.reset_optimizer else learner.opt_state
        return learner.replace(params=params, opt_state=opt_state)

    def after_update(ctx, learner, key, update_idx, obs):
        return jax.lax.cond(every(opts.frequency, update_idx), lambda lr: fire(ctx, lr, key), lambda lr: lr, learner)

    return Intervention("reset_layers", order=51, after_update=after_update)
