"""Output heads. ``InjectableHead`` pre-allocates plasticity-injection heads so shapes stay static:
out = main(x) + gate * (new(x) - stop_gradient(frozen(x))), with ``gate`` in the ``injection`` collection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from plasticine_jax.nets.initializers import kernel_and_bias, torch_default_bias, torch_default_kernel


def _main(features: int, gain: float, init: str, fan_in: int) -> nn.Dense:
    """The head's own Dense: orthogonal with ``gain`` and zero bias (the reference's layer_init), the PyTorch
    nn.Linear default (TD3, C51) or flax's LeCun normal (rejax)."""
    k, b = kernel_and_bias(init, gain, fan_in)
    return nn.Dense(features, kernel_init=k, bias_init=b, name="main")


class Head(nn.Module):
    """Linear head (parameters under ``main``)."""

    features: int
    gain: float
    init: str = "orthogonal"

    @nn.compact
    def __call__(self, x):
        return _main(self.features, self.gain, self.init, x.shape[-1])(x)


class InjectableHead(nn.Module):
    """Head with a pre-allocated injection pair (Nikishin et al. 2023). ``new`` and ``frozen`` use the
    PyTorch default init (as the reference's Injector); the injection hook re-samples them identically."""

    features: int
    gain: float
    init: str = "orthogonal"

    @nn.compact
    def __call__(self, x):
        main = _main(self.features, self.gain, self.init, x.shape[-1])(x)
        fan_in = x.shape[-1]
        mk = lambda name: nn.Dense(self.features, kernel_init=torch_default_kernel(),
                                   bias_init=torch_default_bias(fan_in), name=name)
        new = mk("new")(x)
        frozen = mk("frozen")(x)
        gate = self.variable("injection", "gate", lambda: jnp.zeros((), jnp.float32)).value
        return main + gate * (new - jax.lax.stop_gradient(frozen))


def head(cfg, features: int, gain: float, name: str) -> nn.Module:
    """The head module a network config asks for (injectable when ``cfg.injection``)."""
    cls = InjectableHead if cfg.injection else Head
    return cls(features, gain, cfg.head_init, name=name)
