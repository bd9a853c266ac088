"""Layer resets (Nikishin et al. 2022, primacy bias): every ``frequency`` updates re-sample the chosen
layers of every unit from their original initializers, reset their optimizer state (paper) and copy them
into the unit's target network (the paper resets targets too). ``which=heads`` resets the output heads the
network declares (the reference's 'final': policy and value heads, the Q head, the actor and both critic
heads), ``all`` the whole network. The reference left the optimizer state alone (``reset_optimizer=False``)
and the targets untouched (``mirror_target=False``). Its frequency (1000 iterations) is the default.

Continual runs: ``on_task_switch`` also resets at every task switch (the same reset, once, after the ending
task's last update: the newest reference resets the heads after every task). ``frequency=0`` turns the
periodic reset off, so ``frequency=0, on_task_switch=True`` resets only at task boundaries."""

from __future__ import annotations

from dataclasses import dataclass

import jax

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention
from plasticine_jax.interventions.surgery import every, mirror_target, reset_opt_state, where_tree


@dataclass(frozen=True)
class Options:
    which: str = "heads"  # heads (reference 'final') | all
    frequency: int = 1000  # updates between resets (reference: 1000 iterations); 0: no periodic reset
    reset_optimizer: bool = True  # paper: reset optimizer state of reset params; the reference does not
    mirror_target: bool = True  # paper: reset the target copy too; the reference does not
    on_task_switch: bool = False  # also reset at every task switch of a continual run (newest reference)


def reset_mask(network, params: dict, which: str):
    """Heads (or everything) except injection's frozen copy and PPO's state-independent log-std."""
    if which == "all":
        return network.mask(params, lambda p: p[0] != "log_std" and not network.is_frozen_copy(p))
    return network.mask(params, lambda p: network.is_head(p) and not network.is_frozen_copy(p))


def make(opts: Options) -> Intervention:
    if opts.which not in ("heads", "all"):
        raise ConfigError(f"--rl.which must be heads or all (got {opts.which})")
    if opts.frequency < 0:
        raise ConfigError(f"--rl.frequency must be >= 0 updates (0 = no periodic reset) (got {opts.frequency})")
    if opts.frequency == 0 and not opts.on_task_switch:
        raise ConfigError("--rl.frequency 0 without --rl.on-task-switch never resets anything; give a period "
                          ">= 1 or add --rl.on-task-switch")

    def fire(ctx, unit, key):
        mask = reset_mask(ctx.network, unit.params, opts.which)
        params = where_tree(mask, ctx.fresh_params(key), unit.params)
        opt_state = reset_opt_state(ctx.tx, unit.opt_state, mask) if opts.reset_optimizer else unit.opt_state
        unit = unit.replace(params=params, opt_state=opt_state)
        return mirror_target(unit, mask) if opts.mirror_target else unit

    def after_update(ctx, unit, key, update_idx, acts):
        return jax.lax.cond(every(opts.frequency, update_idx), lambda u: fire(ctx, u, key), lambda u: u, unit)

    def on_task_switch(ctx, unit, key, task, acts):
        return fire(ctx, unit, key)

    periodic = opts.frequency > 0
    return Intervention("reset_layers", order=51, after_update=after_update if periodic else None,
                        on_task_switch=on_task_switch if opts.on_task_switch else None,
                        task_flags=("--rl.on-task-switch",) if opts.on_task_switch else (),
                        schedules=(("--rl.frequency", opts.frequency),) if periodic else ())
