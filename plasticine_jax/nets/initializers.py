"""Weight initialisers: orthogonal with a gain (the reference's layer_init), PyTorch's nn.Linear/Conv2d default,
or flax's default (LeCun normal, zero bias: rejax and most flax code)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn


def orthogonal(gain: float):
    """Orthogonal init on the [fan_in, fan_out] matrix (for conv: (kh*kw*in) x out), like torch's layer_init."""
    return nn.initializers.orthogonal(scale=gain)


def torch_default_kernel():
    """PyTorch default weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5))."""

    def init(key, shape, dtype=jnp.float32):
        fan_in = math.prod(shape[:-1])
        bound = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_default_bias(fan_in: int):
    """PyTorch default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


INITS = ("orthogonal", "torch", "lecun")


def kernel_and_bias(kind: str, gain: float, fan_in: int):
    """(kernel_init, bias_init) for ``kind`` in ``INITS``. ``gain`` only scales orthogonal kernels; orthogonal and
    lecun use zero biases."""
    if kind == "orthogonal":
        return orthogonal(gain), nn.initializers.zeros
    if kind == "torch":
        return torch_default_kernel(), torch_default_bias(fan_in)
    if kind == "lecun":
        return nn.initializers.lecun_normal(), nn.initializers.zeros
    raise ValueError(f"unknown init '{kind}' (use one of {', '.join(INITS)})")
