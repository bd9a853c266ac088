"""The intervention contract: a record of optional pure hooks, and ``compose`` that chains any subset into
one intervention of the same type (as ``optax.chain`` returns one transformation).

An intervention never owns the training loop and knows nothing of the learner. Every learner unit
(``algos.state.Unit``: params, optimizer state, optional target, this intervention's state) is handed to
the hooks at fixed events, with a static per-unit ``Context`` (its network and layout, optimizer, run shape):

* ``transform_net(NetConfig) -> NetConfig``  architecture (LayerNorm, CReLU/DFF, injection heads);
* ``grad_transform(hp)``  after global-norm clipping, before the base optimizer (coupled L2);
* ``base_optimizer(lr, hp)``  replaces Adam (Kron); at most one intervention;
* ``wrap_base(tx, hp)``  wraps the base optimizer (TRAC);
* ``post_transform(hp, network)``  last in the chain (freezing masks);
* ``trainable(ctx, unit) -> bool tree | None``  parameters that may receive gradient now: the rest is
  zeroed before clipping and before the gradient-norm metric (injection's frozen heads);
* ``init(ctx, unit, key) -> unit``  once, after the network is initialised (stores theta_0, norms, ...);
* ``loss(ctx, params, istate, hp) -> scalar``  added to the unit's loss every optimizer step;
* ``after_step(ctx, unit, key) -> unit``  after every optimizer step of the unit;
* ``after_update(ctx, unit, key, update_idx, acts) -> unit``  once per update (iteration), after its
  optimizer steps. ``update_idx`` is an *unbatched* int (the scan index), so schedules are ``lax.cond``s
  that stay real branches under ``vmap`` over seeds. ``acts`` are the unit's hidden activations on the
  update's metric batch, computed once by the learner (after the optimizer steps, before any hook) and
  shared with the plasticity metrics; they are computed only on updates where
  ``activations_due(update_idx)`` (else zeros).
* ``on_task_switch(ctx, unit, key, task, acts) -> unit``  once per task switch of a continual run
  (``envs.tasks``): after the last update of the ending task (after its ``after_update`` hooks), before the
  first update of task ``task`` (the task that begins, an unbatched int32). Never before task 0 nor after
  the last task. ``acts`` are the unit's activations on the ending task's last update when
  ``switch_activations`` is set (else zeros). ``ctx.task_updates`` is the task length in updates.

Numeric hyperparameters live in ``unit.hp`` (flat float32 scalars named ``"<iv>.<field>"``) so any of
them can be vmapped (``--sweep snp.coef=0.9,0.99``); schedule periods are static ints. Each intervention
keeps its own state in ``unit.istate[name]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax

from plasticine_jax.algos.state import Unit
from plasticine_jax.errors import ConfigError
from plasticine_jax.nets import NetConfig, Network


@dataclass(frozen=True)
class Context:
    """Static facts about one learner unit that hooks may need."""

    network: Network
    num_updates: int
    steps_per_update: int  # optimizer steps of this unit per update
    env_steps_per_update: int
    tx: optax.GradientTransformation | None = None  # the unit's optimizer (structure, for state surgery)
    name: str = "agent"
    task_updates: int = 0  # updates per task of a continual run (0: the run has no task sequence)

    def fresh_params(self, key: jax.Array) -> dict:
        """A new sample of every parameter from its original initializer (SnP, resets, ReDo)."""
        return self.network.fresh_params(key)


@dataclass(frozen=True)
class Intervention:
    """A bundle of optional pure hooks (see the module docstring). ``order`` fixes composition order;
    ``activation_every`` > 0 asks the learner for activations every that many updates."""

    name: str
    order: int
    hparams: dict[str, float] = field(default_factory=dict)  # defaults, keyed by field (no prefix)
    transform_net: Callable[[NetConfig], NetConfig] | None = None
    grad_transform: Callable[[dict], optax.GradientTransformation] | None = None
    base_optimizer: Callable[[Any, dict], optax.GradientTransformation] | None = None
    wrap_base: Callable[[optax.GradientTransformation, dict], optax.GradientTransformation] | None = None
    post_transform: Callable[[dict, Network], optax.GradientTransformation] | None = None
    trainable: Callable[[Context, Unit], Any] | None = None
    init: Callable[[Context, Unit, jax.Array], Unit] | None = None
    loss: Callable[[Context, dict, Any, dict], jax.Array] | None = None
    after_step: Callable[[Context, Unit, jax.Array], Unit] | None = None
    after_update: Callable[[Context, Unit, jax.Array, jax.Array, Any], Unit] | None = None
    on_task_switch: Callable[[Context, Unit, jax.Array, jax.Array, Any], Unit] | None = None
    switch_activations: bool = False  # on_task_switch reads the ending task's last activations
    task_flags: tuple[str, ...] = ()  # options that only act in a continual run (warned about otherwise)
    activation: str | None = None  # set by interventions that replace the hidden activation (crelu, dff)
    activation_every: tuple[int, ...] = ()  # update periods at which after_update reads activations
    schedules: tuple[tuple[str, int], ...] = ()  # (flag, period in updates) of scheduled events, for warnings
    components: tuple[Intervention, ...] = ()  # what a composed intervention was built from

    @property
    def parts(self) -> tuple[Intervention, ...]:
        """The atomic interventions inside (itself when atomic)."""
        return self.components if self.components else (self,)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts if p.name != "vanilla")

    def activations_due(self, update_idx: jax.Array) -> jax.Array:
        """Whether any after_update hook reads activations on this update (unbatched bool)."""
        due = jnp.zeros((), bool)
        for period in self.activation_every:
            due = due | ((update_idx + 1) % period == 0)
        return due


def _split(key: jax.Array, n: int) -> list[jax.Array]:
    return list(jax.random.split(key, n)) if n > 1 else [key]


def _chain_unit_hook(parts: list[Intervention], attr: str) -> Callable | None:
    """Chain ``attr`` hooks (signature (ctx, unit, key, *rest) -> unit), one split key per hook."""
    hooks = [getattr(p, attr) for p in parts if getattr(p, attr) is not None]
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def chained(ctx, unit, key, *rest):
        for h, k in zip(hooks, _split(key, len(hooks)), strict=True):
            unit = h(ctx, unit, k, *rest)
        return unit

    return chained


def compose(interventions: list[Intervention] | tuple[Intervention, ...]) -> Intervention:
    """Validate a set of interventions and chain them into one. Order is canonical (by ``order``), not the
    user's, so ``redo,ln,snp`` and ``snp,ln,redo`` are the same experiment: architecture first, then losses
    and optimizer wrappers, then per-step projections, then scheduled resets. Composing a composed
    intervention flattens it."""
    flat = [p for iv in interventions for p in iv.parts if p.name != "vanilla"]
    names = [iv.name for iv in flat]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"intervention(s) {', '.join(sorted(dup))} given twice; list each once")
    acts = [iv.name for iv in flat if iv.activation]
    if len(acts) > 1:
        raise ConfigError(f"interventions {' and '.join(acts)} both replace the hidden activation; pick one")
    bases = [iv.name for iv in flat if iv.base_optimizer]
    if len(bases) > 1:
        raise ConfigError(f"interventions {' and '.join(bases)} both replace the optimizer; pick one")
    parts = sorted(flat, key=lambda iv: (iv.order, iv.name))
    if not parts:
        return Intervention("vanilla", order=0)

    def transform_net(cfg):
        for p in parts:
            if p.transform_net is not None:
                cfg = p.transform_net(cfg)
        return cfg

    grads = [p.grad_transform for p in parts if p.grad_transform is not None]
    wraps = [p.wrap_base for p in parts if p.wrap_base is not None]
    posts = [p.post_transform for p in parts if p.post_transform is not None]
    base = next((p.base_optimizer for p in parts if p.base_optimizer is not None), None)
    masks = [p.trainable for p in parts if p.trainable is not None]
    losses = [p for p in parts if p.loss is not None]

    def wrap_base(tx, hp):
        for w in wraps:
            tx = w(tx, hp)
        return tx

    def trainable(ctx, unit):
        out = None
        for m in masks:
            mk = m(ctx, unit)
            if mk is not None:
                out = mk if out is None else jax.tree.map(jnp.logical_and, out, mk)
        return out

    def loss(ctx, params, istate, hp):
        return sum((p.loss(ctx, params, istate.get(p.name), hp) for p in losses), jnp.zeros(()))

    return Intervention(
        name="+".join(p.name for p in parts),
        order=0,
        hparams={},
        transform_net=transform_net,
        grad_transform=(lambda hp: optax.chain(*[g(hp) for g in grads])) if grads else None,
        base_optimizer=base,
        wrap_base=wrap_base if wraps else None,
        post_transform=(lambda hp, net: optax.chain(*[t(hp, net) for t in posts])) if posts else None,
        trainable=trainable if masks else None,
        init=_chain_unit_hook(parts, "init"),
        loss=loss if losses else None,
        after_step=_chain_unit_hook(parts, "after_step"),
        after_update=_chain_unit_hook(parts, "after_update"),
        on_task_switch=_chain_unit_hook(parts, "on_task_switch"),
        switch_activations=any(p.switch_activations for p in parts),
        task_flags=tuple(f for p in parts for f in p.task_flags),
        activation=next((p.activation for p in parts if p.activation), None),
        activation_every=tuple(sorted({e for p in parts for e in p.activation_every})),
        schedules=tuple(s for p in parts for s in p.schedules),
        components=tuple(parts),
    )


def default_hparams(iv: Intervention) -> dict[str, float]:
    """Flat ``{"<iv>.<field>": value}`` defaults of every part of a (composed) intervention."""
    return {f"{p.name}.{k}": float(v) for p in iv.parts for k, v in p.hparams.items()}


def apply_net_transforms(cfg: NetConfig, iv: Intervention) -> NetConfig:
    return iv.transform_net(cfg) if iv.transform_net is not None else cfg


def init_unit_state(iv: Intervention, ctx: Context, unit: Unit, key: jax.Array) -> Unit:
    """Run the init hooks on a fresh unit (its ``istate`` becomes ``{}`` filled by the hooks)."""
    unit = unit.replace(istate={})
    return iv.init(ctx, unit, key) if iv.init is not None else unit


CLIPS = ("global_norm", "per_network", "elementwise")


def gradient_clip(clip: str, max_norm: float, network: Network | None = None) -> optax.GradientTransformation:
    """The gradient clip named by ``clip`` (see ``build_optimizer``)."""
    if clip == "global_norm":
        return optax.clip_by_global_norm(max_norm)
    if clip == "elementwise":
        return optax.clip(max_norm)
    if clip == "per_network":
        if network is None:
            raise ConfigError("per_network gradient clipping needs the unit's network layout")
        return optax.multi_transform({t.name: optax.clip_by_global_norm(max_norm) for t in network.torsos},
                                     network.sub_network_labels)
    raise ConfigError(f"unknown gradient clipping '{clip}'; use one of {', '.join(CLIPS)}")


def build_optimizer(
    iv: Intervention,
    hp: dict,
    learning_rate: Any,
    max_grad_norm: float | None,
    adam_eps: float,
    network: Network,
    clip: str = "global_norm",
    optimizer: str = "adam",
) -> optax.GradientTransformation:
    """clip -> grad transforms -> [wrapped] base optimizer -> post transforms, as a ``named_chain``.

    ``clip`` (``max_grad_norm`` None or <= 0 disables it): ``global_norm`` scales the whole unit's gradient by
    one norm over all its params (torch's clip_grad_norm_ over actor and critic together, CleanRL);
    ``per_network`` does the same separately for each sub-network (actor tower + its head, critic tower + its
    head; ``Network.sub_network``), as two optimizers each with their own clip would; ``elementwise`` clips
    every gradient entry to [-max_grad_norm, max_grad_norm] (``optax.clip``, rejax). ``optimizer``: ``adam`` or
    ``radam`` (PQN; torch's RAdam = optax's, threshold 5) with epsilon ``adam_eps``."""
    parts: list[tuple[str, optax.GradientTransformation]] = []
    if max_grad_norm is not None and max_grad_norm > 0:
        parts.append(("clip", gradient_clip(clip, max_grad_norm, network)))
    if iv.grad_transform is not None:
        parts.append(("grad", iv.grad_transform(hp)))
    if iv.base_optimizer is not None:
        base = iv.base_optimizer(learning_rate, hp)
    elif optimizer == "adam":
        base = optax.chain(optax.scale_by_adam(eps=adam_eps), optax.scale_by_learning_rate(learning_rate))
    elif optimizer == "radam":
        base = optax.chain(optax.scale_by_radam(eps=adam_eps), optax.scale_by_learning_rate(learning_rate))
    else:
        raise ConfigError(f"unknown optimizer '{optimizer}'; use adam or radam")
    if iv.wrap_base is not None:
        base = iv.wrap_base(base, hp)
    parts.append(("base", base))
    if iv.post_transform is not None:
        parts.append(("post", iv.post_transform(hp, network)))
    return optax.named_chain(*parts)
