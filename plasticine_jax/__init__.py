"""plasticine-jax: plasticity research in deep RL as one jit/vmap-compiled function."""

__version__ = "0.1.0"
