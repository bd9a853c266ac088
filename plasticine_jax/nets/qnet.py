"""Q-networks for value-based learners: a torso and one head of |A| values (PQN) or |A| x n_atoms logits
(C51, categorical over a fixed support)."""

from __future__ import annotations

from flax import linen as nn

from plasticine_jax.nets.heads import head
from plasticine_jax.nets.network import Network, TorsoSpec, build_network
from plasticine_jax.nets.torsos import TORSOS, NetConfig


class QNetwork(nn.Module):
    """obs -> Q [B, A] (``n_atoms`` = 1) or logits [B, A, n_atoms]. The head gain is ``cfg.value_gain``."""

    cfg: NetConfig
    action_dim: int
    n_atoms: int = 1

    @nn.compact
    def __call__(self, obs):
        torso_cls, _ = TORSOS[self.cfg.torso]
        z = torso_cls(self.cfg, name="torso")(obs)
        out = head(self.cfg, self.action_dim * self.n_atoms, self.cfg.value_gain, "q_head")(z)
        if self.n_atoms > 1:
            return out.reshape(*out.shape[:-1], self.action_dim, self.n_atoms)
        return out


def make_q_network(cfg: NetConfig, obs_shape: tuple[int, ...], action_dim: int, n_atoms: int = 1) -> Network:
    return build_network(QNetwork(cfg, action_dim, n_atoms), cfg, (TorsoSpec("torso", ("q_head",)),),
                         [tuple(obs_shape)])
