"""flax.linen networks with a declared layout (torsos, heads, hidden-unit groups): actor-critic, Q-network,
deterministic and Gaussian actors, twin critic."""

from plasticine_jax.nets.agent import ActorCritic, make_network
from plasticine_jax.nets.network import Network, TorsoSpec, build_network
from plasticine_jax.nets.torsos import NetConfig

__all__ = ["ActorCritic", "NetConfig", "Network", "TorsoSpec", "build_network", "make_network"]
