"""flax.linen networks with declared neuron structure (torsos, heads, actor-critic)."""

from plasticine_jax.nets.agent import ActorCritic, Network, make_network
from plasticine_jax.nets.torsos import NetConfig

__all__ = ["ActorCritic", "NetConfig", "Network", "make_network"]
