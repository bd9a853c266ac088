"""The intervention contract: a record of optional pure hooks, and ``compose`` that chains any subset.

An intervention never owns the training loop. The learner calls its hooks at fixed points:

* ``transform_net(NetConfig) -> NetConfig``  architecture (LayerNorm, CReLU/DFF, injection heads);
* ``grad_transform(hp) -> GradientTransformation``  after global-norm clipping, before the base optimizer
  (coupled L2 adds wd*theta here, as torch's Adam(weight_decay) does);
* ``base_optimizer(lr, hp) -> GradientTransformation``  replaces Adam (Kron); at most one intervention;
* ``wrap_base(tx, hp) -> GradientTransformation``  wraps the base optimizer (TRAC);
* ``post_transform(hp) -> GradientTransformation``  last in the chain (freezing masks);
* ``init(ctx, learner, key) -> learner``  once, after the network is initialised (stores theta_0, norms...);
* ``loss(ctx, params, istate, hp) -> scalar``  added to the learner's loss every minibatch;
* ``after_step(ctx, learner, key) -> learner``  after every optimizer step (every minibatch);
* ``after_update(ctx, learner, key, update_idx, obs) -> learner``  once per iteration after the update
  epochs; ``update_idx`` is an *unbatched* int (scan index), so schedules are ``lax.cond`` that stay
  real branches under ``vmap`` over seeds.

Numeric hyperparameters live in ``learner.hp`` (a flat dict of float32 scalars named ``"<iv>.<field>"``)
so any of them can be vmapped (``--sweep snp.coef=0.9,0.99``). Schedules (periods) are static ints.
Each intervention keeps its own state in ``learner.istate[name]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import optax
from flax import struct

from plasticine_jax.errors import ConfigError
from plasticine_jax.nets import NetConfig, Network


@struct.dataclass
class LearnerState:
    """Everything the learner updates: params, non-param collections, optimizer, interventions, hparams."""

    params: dict
    net_state: dict  # non-param flax collections (e.g. injection gates)
    opt_state: Any
    istate: dict  # per-intervention state, keyed by intervention name
    hp: dict  # float32 scalars: learner and intervention hyperparameters (vmappable)


@dataclass(frozen=True)
class Context:
    """Static facts hooks may need: the network, the run's shape, and a fresh-init sampler."""

    network: Network
    num_updates: int
    steps_per_update: int  # optimizer steps (epochs x minibatches) per iteration
    env_steps_per_update: int

    def fresh_params(self, key: jax.Array) -> dict:
        """A new sample of every parameter from its original initializer (SnP, resets, ReDo)."""
        return self.network.init(key)["params"]


@dataclass(frozen=True)
class Intervention:
    """A bundle of optional pure hooks (see the module docstring). ``order`` fixes composition order."""

    name: str
    order: int
    hparams: dict[str, float] = field(default_factory=dict)  # defaults, keyed by field (no prefix)
    transform_net: Callable[[NetConfig], NetConfig] | None = None
    grad_transform: Callable[[dict], optax.GradientTransformation] | None = None
    base_optimizer: Callable[[Any, dict], optax.GradientTransformation] | None = None
    wrap_base: Callable[[optax.GradientTransformation, dict], optax.GradientTransformation] | None = None
    post_transform: Callable[[dict], optax.GradientTransformation] | None = None
    init: Callable[[Context, LearnerState, jax.Array], LearnerState] | None = None
    loss: Callable[[Context, dict, Any, dict], jax.Array] | None = None
    after_step: Callable[[Context, LearnerState, jax.Array], LearnerState] | None = None
    after_update: Callable[[Context, LearnerState, jax.Array, jax.Array, jax.Array], LearnerState] | None = None
    activation: str | None = None  # set by interventions that replace the hidden activation (crelu, dff)


def compose(interventions: list[Intervention]) -> tuple[Intervention, ...]:
    """Validate and order a set of interventions. Order is canonical (by ``order``), not the user's, so
    ``redo,ln,snp`` and ``snp,ln,redo`` are the same experiment: architecture first, then losses and
    optimizer wrappers, then per-step projections, then scheduled resets."""
    names = [iv.name for iv in interventions]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"intervention(s) {', '.join(sorted(dup))} given twice; list each once")
    acts = [iv.name for iv in interventions if iv.activation]
    if len(acts) > 1:
        raise ConfigError(f"interventions {' and '.join(acts)} both replace the hidden activation; pick one")
    bases = [iv.name for iv in interventions if iv.base_optimizer]
    if len(bases) > 1:
        raise ConfigError(f"interventions {' and '.join(bases)} both replace the optimizer; pick one")
    return tuple(sorted(interventions, key=lambda iv: (iv.order, iv.name)))


def default_hparams(interventions: tuple[Intervention, ...]) -> dict[str, float]:
    """Flat ``{"<iv>.<field>": value}`` defaults of every composed intervention."""
    return {f"{iv.name}.{k}": float(v) for iv in interventions for k, v in iv.hparams.items()}


def apply_net_transforms(cfg: NetConfig, interventions: tuple[Intervention, ...]) -> NetConfig:
    for iv in interventions:
        if iv.transform_net is not None:
            cfg = iv.transform_net(cfg)
    return cfg


def build_optimizer(
    interventions: tuple[Intervention, ...],
    hp: dict,
    learning_rate: Any,
    max_grad_norm: float | None,
    adam_eps: float,
) -> optax.GradientTransformation:
    """clip -> grad transforms -> [wrapped] base optimizer -> post transforms, as a ``named_chain`` so a
    hook can find its own optimizer state by name."""
    parts: list[tuple[str, optax.GradientTransformation]] = []
    if max_grad_norm is not None and max_grad_norm > 0:
        parts.append(("clip", optax.clip_by_global_norm(max_grad_norm)))
    for iv in interventions:
        if iv.grad_transform is not None:
            parts.append((f"{iv.name}_grad", iv.grad_transform(hp)))
    base = None
    for iv in interventions:
        if iv.base_optimizer is not None:
            base = iv.base_optimizer(learning_rate, hp)
    if base is None:
        base = optax.chain(optax.scale_by_adam(eps=adam_eps), optax.scale_by_learning_rate(learning_rate))
    for iv in interventions:
        if iv.wrap_base is not None:
            base = iv.wrap_base(base, hp)
    parts.append(("base", base))
    for iv in interventions:
        if iv.post_transform is not None:
            parts.append((f"{iv.name}_post", iv.post_transform(hp)))
    return optax.named_chain(*parts)
