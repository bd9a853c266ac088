"""Continuous-control networks (TD3, SAC): a deterministic tanh actor, a Gaussian actor (mean and log-std
heads on one torso) and a twin critic (two independent Q towers on concat(obs, action))."""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from plasticine_jax.nets.heads import head
from plasticine_jax.nets.network import Network, TorsoSpec, build_network
from plasticine_jax.nets.torsos import TORSOS, NetConfig


class DeterministicActor(nn.Module):
    """obs -> tanh(head(torso(obs))) in [-1, 1]^A (the learner rescales to the action bounds)."""

    cfg: NetConfig
    action_dim: int

    @nn.compact
    def __call__(self, obs):
        torso_cls, _ = TORSOS[self.cfg.torso]
        z = torso_cls(self.cfg, name="torso")(obs)
        return jnp.tanh(head(self.cfg, self.action_dim, self.cfg.policy_gain, "policy_head")(z))


class GaussianActor(nn.Module):
    """obs -> (mean, raw log-std), two heads on one torso (CleanRL's SAC actor)."""

    cfg: NetConfig
    action_dim: int

    @nn.compact
    def __call__(self, obs):
        torso_cls, _ = TORSOS[self.cfg.torso]
        z = torso_cls(self.cfg, name="torso")(obs)
        mean = head(self.cfg, self.action_dim, self.cfg.policy_gain, "mean_head")(z)
        log_std = head(self.cfg, self.action_dim, self.cfg.policy_gain, "log_std_head")(z)
        return mean, log_std


class TwinCritic(nn.Module):
    """(obs, action) -> (Q1, Q2), each [B]: two independent towers, as TD3's qf1 and qf2."""

    cfg: NetConfig

    @nn.compact
    def __call__(self, obs, action):
        torso_cls, _ = TORSOS[self.cfg.torso]
        x = jnp.concatenate([obs.reshape(obs.shape[0], -1), action], axis=-1)
        q1 = head(self.cfg, 1, self.cfg.value_gain, "q1_head")(torso_cls(self.cfg, name="q1_torso")(x))
        q2 = head(self.cfg, 1, self.cfg.value_gain, "q2_head")(torso_cls(self.cfg, name="q2_torso")(x))
        return q1[..., 0], q2[..., 0]


def make_deterministic_actor(cfg: NetConfig, obs_shape: tuple[int, ...], action_dim: int) -> Network:
    return build_network(DeterministicActor(cfg, action_dim), cfg, (TorsoSpec("torso", ("policy_head",)),),
                         [tuple(obs_shape)])


def make_gaussian_actor(cfg: NetConfig, obs_shape: tuple[int, ...], action_dim: int) -> Network:
    return build_network(GaussianActor(cfg, action_dim), cfg, (TorsoSpec("torso", ("mean_head", "log_std_head")),),
                         [tuple(obs_shape)])


def make_twin_critic(cfg: NetConfig, obs_shape: tuple[int, ...], action_dim: int) -> Network:
    """Metrics: Q1's torso untagged (the reference's 'value' features come from qf1), Q2's under ``q2``."""
    torsos = (TorsoSpec("q1_torso", ("q1_head",)), TorsoSpec("q2_torso", ("q2_head",), "q2"))
    return build_network(TwinCritic(cfg), cfg, torsos, [tuple(obs_shape), (action_dim,)])
