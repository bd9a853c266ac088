"""plasticine-jax: plasticity research in deep RL as one jit/vmap-compiled function."""

from plasticine_jax import threefry_cpu as _threefry_cpu

__version__ = "0.1.0"

_threefry_cpu.enable()  # unrolled threefry on XLA:CPU: same bits, fewer kernels (threefry_cpu.py)
