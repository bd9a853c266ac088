"""Actor-critic network (PPO): torso(s) + policy head (categorical logits or Gaussian mean + state-independent
log-std) + value head. One shared torso (Procgen) or separate actor and critic towers (Craftax, CartPole)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from plasticine_jax.nets.heads import head
from plasticine_jax.nets.network import Network, TorsoSpec, build_network
from plasticine_jax.nets.torsos import TORSOS, NetConfig

__all__ = ["ActorCritic", "actor_critic_torsos", "make_network"]


class ActorCritic(nn.Module):
    """Returns (policy_out, value). policy_out: logits [B, A] (discrete) or (mean, log_std) (continuous)."""

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
        pi = head(self.cfg, self.action_dim, self.cfg.policy_gain, "policy_head")(za)
        v = head(self.cfg, 1, self.cfg.value_gain, "value_head")(zc)[..., 0]
        if self.continuous:
            log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
            return (pi, jnp.broadcast_to(log_std, pi.shape)), v
        return pi, v


def actor_critic_torsos(cfg: NetConfig) -> tuple[TorsoSpec, ...]:
    """Shared: one torso feeding both heads. Separate: the actor's metrics untagged, the critic's ``critic``."""
    if cfg.shared:
        return (TorsoSpec("torso", ("policy_head", "value_head")),)
    return (TorsoSpec("actor_torso", ("policy_head",)), TorsoSpec("critic_torso", ("value_head",), "critic"))


def make_network(cfg: NetConfig, obs_shape: tuple[int, ...], action_dim: int, continuous: bool) -> Network:
    """The actor-critic network with its layout."""
    return build_network(ActorCritic(cfg, action_dim, continuous), cfg, actor_critic_torsos(cfg), [tuple(obs_shape)])
