"""Hidden activations. CReLU and DFF concatenate two views, doubling the width (reference §3.10)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from plasticine_jax.errors import ConfigError


def crelu(x: jax.Array) -> jax.Array:
    """concat(relu(x), relu(-x)) on the last (channel) axis."""
    return jnp.concatenate([jax.nn.relu(x), jax.nn.relu(-x)], axis=-1)


def dff(x: jax.Array) -> jax.Array:
    """Deep Fourier features: concat(sin x, cos x) on the last axis."""
    return jnp.concatenate([jnp.sin(x), jnp.cos(x)], axis=-1)


_ACTIVATIONS: dict[str, tuple[Callable[[jax.Array], jax.Array], int]] = {
    "relu": (jax.nn.relu, 1),
    "tanh": (jnp.tanh, 1),
    "sigmoid": (jax.nn.sigmoid, 1),
    "swish": (jax.nn.swish, 1),  # x * sigmoid(x) (flax nn.swish; rejax's default)
    "crelu": (crelu, 2),
    "dff": (dff, 2),
}

# Activations whose dormancy is judged on |a| (signed outputs), as the reference does for tanh and dff.
USES_ABS = {"tanh": True, "dff": True, "relu": False, "crelu": False, "sigmoid": False, "swish": True}


def get_activation(name: str) -> tuple[Callable[[jax.Array], jax.Array], int]:
    """(function, width multiplier) for an activation name."""
    if name not in _ACTIVATIONS:
        raise ConfigError(f"unknown activation '{name}'; choose one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]
