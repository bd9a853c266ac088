"""A built network and its declared layout: torsos, heads, hidden-unit groups, frozen copies, kernels and
LayerNorm pairs.

Every learner's networks (actor-critic, Q-network, deterministic/Gaussian actor, twin critic) are flax
modules made of named torsos (``nets.torsos``) feeding named heads (``nets.heads``). ``build_network``
traces the module once and records that layout, so interventions and metrics ask the network ("which
parameters are heads?", "which kernels feed this hidden unit?") instead of listing heads or parsing names.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
from flax import linen as nn

from plasticine_jax.nets.structure import ParamRef, UnitGroup
from plasticine_jax.nets.torsos import TORSOS, NetConfig

Path = tuple[str, ...]


@dataclass(frozen=True)
class TorsoSpec:
    """One torso (a flax submodule name), the heads reading its features, and its metric tag ('' = none;
    metrics of a torso go under ``plasticity/[<unit>/][<tag>/]<name>``)."""

    name: str
    heads: tuple[str, ...]
    tag: str = ""


def _path_keys(path) -> Path:
    return tuple(getattr(k, "key", str(k)) for k in path)


def _sequential_init(module: nn.Module, input_shapes: Sequence[tuple[int, ...]], key: jax.Array) -> dict:
    @jax.custom_batching.sequential_vmap
    def init(k):
        return dict(module.init(k, *[jnp.zeros((1, *s), jnp.float32) for s in input_shapes]))

    return init(key)


@dataclass(frozen=True)
class Network:
    """A flax module with its layout. ``groups`` lists every hidden activation (names prefixed by torso,
    e.g. ``actor_torso/act_0``) with the parameters producing and consuming its units."""

    module: nn.Module
    cfg: NetConfig
    torsos: tuple[TorsoSpec, ...]
    groups: tuple[UnitGroup, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    injectable: bool = False  # heads carry a pre-allocated plasticity-injection pair (main/new/frozen)

    # ------------------------------------------------------------------ apply
    def init(self, key: jax.Array) -> dict:
        """All variable collections: ``params`` (+ ``injection`` gates when enabled).

        Under ``vmap`` (seeds, or fresh samples inside a vmapped run) the draws run one after another:
        orthogonal inits use LAPACK QR, and jaxlib's batched CPU LAPACK kernels block on the intra-op
        thread pool they occupy -- two at once deadlock a 2-core machine. Init is rare, so this is cheap."""
        return _sequential_init(self.module, self.input_shapes, key)

    def fresh_params(self, key: jax.Array) -> dict:
        """A new sample of every parameter from its original initializer (SnP, resets, ReDo, injection)."""
        return self.init(key)["params"]

    def apply(self, params: dict, net_state: dict, *inputs: jax.Array):
        return self.module.apply({"params": params, **net_state}, *inputs)

    def apply_with_activations(self, params: dict, net_state: dict, *inputs: jax.Array):
        """(outputs, {group name: activation}) with activations captured via ``sow``."""
        out, inter = self.module.apply({"params": params, **net_state}, *inputs, mutable=["intermediates"])
        acts = {}
        for t in self.torsos:
            for k, v in inter["intermediates"][t.name].items():
                acts[f"{t.name}/{k}"] = v[0]
        return out, acts

    # ------------------------------------------------------------------ layout queries
    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(h for t in self.torsos for h in t.heads)

    def feature_groups(self) -> dict[str, str]:
        """Torso name -> the group name of its output features (its last activation)."""
        out = {}
        for g in self.groups:
            out[g.name.split("/")[0]] = g.name
        return out

    def is_head(self, path: Path) -> bool:
        return path[0] in self.head_names

    def sub_network(self, path: Path) -> str:
        """The torso a parameter belongs to: its own torso, the torso its head reads, else the first torso
        (free parameters such as a Gaussian policy's ``log_std`` belong to the actor). Two towers (actor and
        critic) are two sub-networks; a shared torso makes the whole network one."""
        for t in self.torsos:
            if path[0] == t.name or path[0] in t.heads:
                return t.name
        return self.torsos[0].name

    def sub_network_labels(self, params: dict) -> dict:
        """``params``' tree with every leaf replaced by its ``sub_network`` name (optax.multi_transform labels)."""
        return jax.tree_util.tree_map_with_path(lambda p, _: self.sub_network(_path_keys(p)), params)

    def head_part(self, path: Path) -> str | None:
        """'main', 'new' or 'frozen' for a head parameter (injection layout), None for everything else."""
        return path[1] if self.is_head(path) else None

    def is_frozen_copy(self, path: Path) -> bool:
        """The plasticity-injection heads' frozen copy: nothing may move it (it must keep cancelling the value
        of ``new`` it was copied from)."""
        return self.injectable and self.head_part(path) == "frozen"

    def mask(self, params: dict, predicate: Callable[[Path], bool]) -> dict:
        """Boolean tree: True on every leaf whose key path satisfies ``predicate``."""
        return jax.tree_util.tree_map_with_path(lambda p, x: jnp.full(x.shape, bool(predicate(_path_keys(p)))),
                                                params)

    def kernel_paths(self, params: dict, heads: bool = True) -> list[Path]:
        """Every Dense/Conv kernel (heads optional), never injection's frozen copy."""
        out = []
        for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
            keys = _path_keys(p)
            if keys[-1] == "kernel" and not self.is_frozen_copy(keys) and (heads or not self.is_head(keys)):
                out.append(keys)
        return out

    @functools.cached_property
    def param_shapes(self) -> dict:
        """Shapes of ``params`` (a tree of ShapeDtypeStruct), traced once."""
        return jax.eval_shape(lambda: self.init(jax.random.PRNGKey(0)))["params"]

    def torso_kernel_paths(self, last_only: bool = False) -> list[Path]:
        """Every Dense/Conv kernel of the torsos in creation order, or only the last hidden layer's per torso."""
        out = []
        for t in self.torsos:
            if last_only:
                ks = [r.path for g in self.groups if g.name.startswith(t.name + "/") for r in g.producers
                      if r.path[-1] == "kernel"]
                out.extend(ks[-1:])
            else:
                out.extend((t.name, layer, "kernel") for layer, leaves in self.param_shapes[t.name].items()
                           if "kernel" in leaves)
        return out

    def layer_norm_paths(self) -> list[Path]:
        """Every LayerNorm of the torsos (a module whose params are exactly ``scale`` and ``bias``)."""
        return [(t.name, layer) for t in self.torsos for layer, leaves in self.param_shapes[t.name].items()
                if set(leaves) == {"scale", "bias"}]

    def used_mask(self, params: dict, net_state: dict) -> dict:
        """Parameters that take part in the forward pass: a gated injection pair counts only once open
        (pre-allocated unused heads stay out of weight metrics)."""
        if not self.injectable:
            return jax.tree.map(lambda x: jnp.ones(x.shape, bool), params)
        gates = net_state["injection"]

        def f(path, x):
            keys = _path_keys(path)
            if self.is_head(keys) and keys[1] in ("new", "frozen"):
                return jnp.broadcast_to(gates[keys[0]]["gate"] > 0, x.shape)
            return jnp.ones(x.shape, bool)

        return jax.tree_util.tree_map_with_path(f, params)


def build_network(module: nn.Module, cfg: NetConfig, torsos: Sequence[TorsoSpec],
                  input_shapes: Sequence[tuple[int, ...]]) -> Network:
    """Trace ``module`` once and declare its layout: every torso's unit groups (with NHWC flatten tiles
    resolved from the traced activation shapes) and, for each torso's last group, its heads as consumers."""
    if cfg.torso not in TORSOS:
        from plasticine_jax.errors import ConfigError

        raise ConfigError(f"unknown torso '{cfg.torso}'; choose one of {', '.join(TORSOS)}")
    _, structure_fn = TORSOS[cfg.torso]
    dummies = [jnp.zeros((1, *s), jnp.float32) for s in input_shapes]

    def _sown():
        variables = module.init(jax.random.PRNGKey(0), *dummies)
        return module.apply(variables, *dummies, mutable=["intermediates"])[1]

    shapes = jax.eval_shape(_sown)
    head_parts = ("main", "new", "frozen") if cfg.injection else ("main",)
    groups = []
    for t in torsos:
        sown = shapes["intermediates"][t.name]
        torso_groups = structure_fn(cfg, (t.name,))
        last = len(torso_groups) - 1
        for i, g in enumerate(torso_groups):
            act_shape = sown[g.name][0].shape
            spatial = math.prod(act_shape[1:-1])
            cons = tuple(replace(c, tile=spatial, flatten=False) if c.flatten else c for c in g.consumers)
            if i == last:
                cons = cons + tuple(ParamRef((h, part, "kernel"), 0) for h in t.heads for part in head_parts)
            assert act_shape[-1] == g.width * g.copies, (g.name, act_shape, g.width, g.copies)
            groups.append(replace(g, name=f"{t.name}/{g.name}", consumers=cons))
    return Network(module, cfg, tuple(torsos), tuple(groups), tuple(tuple(s) for s in input_shapes),
                   injectable=cfg.injection)
