"""Output heads. ``InjectableHead`` pre-allocates plasticity-injection heads so shapes stay static:
out = main(x) + gate * (new(x) - stop_gradient(frozen(x))), with ``gate`` in the ``injection`` collection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from plasticine_jax.nets.initializers import orthogonal, torch_default_bias, torch_default_kernel


class Head(nn.Module):
    """Linear head, orthogonal init with ``gain`` and zero bias (the reference's layer_init)."""

    features: int
    gain: float

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.features, kernel_init=orthogonal(self.gain), bias_init=nn.initializers.zeros,
                        name="main")(x)


class InjectableHead(nn.Module):
    """Head with a pre-allocated injection pair (Nikishin et al. 2023). ``new`` and ``frozen`` use the
    PyTorch default init (as the reference's Injector); the injection hook re-samples them identically."""

    features: int
    gain: float

    @nn.compact
    def __call__(self, x):
        main = nn.Dense(self.features, kernel_init=orthogonal(self.gain), bias_init=nn.initializers.zeros,
                        name="main")(x)
        fan_in = x.shape[-1]
        mk = lambda name: nn.Dense(self.features, kernel_init=torch_default_kernel(),
                                   bias_init=torch_default_bias(fan_in), name=name)
        new = mk("new")(x)
        frozen = mk("frozen")(x)
        gate = self.variable("injection", "gate", lambda: jnp.zeros((), jnp.float32)).value
        return main + gate * (new - jax.lax.stop_gradient(frozen))
