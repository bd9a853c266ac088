"""Actor-critic network: torso(s) + policy head (categorical logits or Gaussian mean + state-independent
log-std) + value head, with its neuron structure (``structure``) for generic interventions and metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
from flax import linen as nn

from plasticine_jax.nets.heads import Head, InjectableHead
from plasticine_jax.nets.structure import ParamRef, UnitGroup
from plasticine_jax.nets.torsos import TORSOS, NetConfig

__all__ = ["ActorCritic", "NetConfig", "Network", "make_network"]


class ActorCritic(nn.Module):
    """Returns (policy_out, value). policy_out: logits [B, A] (discrete) or mean [B, A] (continuous)."""

    cfg: NetConfig
    action_dim: int
    continuous: bool

    @nn.compact
    def __call__(self, obs):
        torso_cls, _ = TORSOS[self.cfg.torso]
        if self.cfg.shared:
            za = zc = torso_cls(self.cfg, name="torso")(obs)
        else:
            za = torso_cls(self.cfg, name="actor_torso")(obs)
            zc = torso_cls(self.cfg, name="critic_torso")(obs)
        head = InjectableHead if self.cfg.injection else Head
        pi = head(self.action_dim, self.cfg.policy_gain, name="policy_head")(za)
        v = head(1, self.cfg.value_gain, name="value_head")(zc)[..., 0]
        if self.continuous:
            log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
            return (pi, jnp.broadcast_to(log_std, pi.shape)), v
        return pi, v


def _sequential_init(module: ActorCritic, obs_shape: tuple[int, ...], key: jax.Array) -> dict:
    @jax.custom_batching.sequential_vmap
    def init(k):
        return dict(module.init(k, jnp.zeros((1, *obs_shape), jnp.float32)))

    return init(key)


def _torso_prefixes(cfg: NetConfig) -> list[tuple[str, ...]]:
    return [("torso",)] if cfg.shared else [("actor_torso",), ("critic_torso",)]


def _head_refs(cfg: NetConfig, head: str) -> tuple[ParamRef, ...]:
    names = ("main", "new", "frozen") if cfg.injection else ("main",)
    return tuple(ParamRef((head, n, "kernel"), 0) for n in names)


@dataclass(frozen=True)
class Network:
    """A built network: the flax module, its unit structure and the torso each group belongs to."""

    module: ActorCritic
    cfg: NetConfig
    groups: tuple[UnitGroup, ...]  # every hidden activation, names prefixed by torso ("actor_torso/act_0")
    obs_shape: tuple[int, ...]

    def init(self, key: jax.Array) -> dict:
        """All variable collections: ``params`` (+ ``injection`` gates when enabled).

        Under ``vmap`` (seeds, or fresh samples inside a vmapped run) the draws run one after another:
        orthogonal inits use LAPACK QR, and jaxlib's batched CPU LAPACK kernels block on the intra-op
        thread pool they occupy -- two at once deadlock a 2-core machine. Init is rare, so this is cheap."""
        return _sequential_init(self.module, self.obs_shape, key)

    def apply(self, params: dict, net_state: dict, obs: jax.Array):
        return self.module.apply({"params": params, **net_state}, obs)

    def apply_with_activations(self, params: dict, net_state: dict, obs: jax.Array):
        """(outputs, {group name: activation}) with activations captured via ``sow``."""
        out, inter = self.module.apply({"params": params, **net_state}, obs, mutable=["intermediates"])
        acts = {}
        for prefix in _torso_prefixes(self.cfg):
            sown = inter["intermediates"][prefix[0]]
            for k, v in sown.items():
                acts[f"{prefix[0]}/{k}"] = v[0]
        return out, acts

    def feature_groups(self) -> dict[str, str]:
        """Torso name -> the group name of its output features (its last activation)."""
        out = {}
        for g in self.groups:
            out[g.name.split("/")[0]] = g.name
        return out


def make_network(cfg: NetConfig, obs_shape: tuple[int, ...], action_dim: int, continuous: bool) -> Network:
    """Build the module and its structure; flatten tiles are resolved from the traced activation shapes."""
    if cfg.torso not in TORSOS:
        from plasticine_jax.errors import ConfigError

        raise ConfigError(f"unknown torso '{cfg.torso}'; choose one of {', '.join(TORSOS)}")
    module = ActorCritic(cfg, action_dim, continuous)
    _, structure_fn = TORSOS[cfg.torso]
    dummy = jnp.zeros((1, *obs_shape), jnp.float32)

    def _sown():
        variables = module.init(jax.random.PRNGKey(0), dummy)
        return module.apply(variables, dummy, mutable=["intermediates"])[1]

    shapes = jax.eval_shape(_sown)
    groups = []
    for prefix in _torso_prefixes(cfg):
        sown = shapes["intermediates"][prefix[0]]
        torso_groups = structure_fn(cfg, prefix)
        last = len(torso_groups) - 1
        heads = ["policy_head", "value_head"] if cfg.shared else (
            ["policy_head"] if prefix[0] == "actor_torso" else ["value_head"])
        for i, g in enumerate(torso_groups):
            act_shape = sown[g.name][0].shape
            spatial = math.prod(act_shape[1:-1])
            cons = tuple(replace(c, tile=spatial, flatten=False) if c.flatten else c for c in g.consumers)
            if i == last:
                cons = cons + tuple(r for h in heads for r in _head_refs(cfg, h))
            assert act_shape[-1] == g.width * g.copies, (g.name, act_shape, g.width, g.copies)
            groups.append(replace(g, name=f"{prefix[0]}/{g.name}", consumers=cons))
    return Network(module, cfg, tuple(groups), tuple(obs_shape))
