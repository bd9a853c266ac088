"""max_pool equals flax's max pooling forward and sends gradients exactly where XLA's select_and_scatter does
(first maximum of each window, ties included), under vmap too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from plasticine_jax.nets.pooling import max_pool


def _ref(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


@pytest.mark.parametrize("shape", [(2, 9, 9, 3), (3, 8, 8, 2), (1, 16, 16, 4)])
def test_forward_and_gradient_match_flax_with_ties(shape):
    x = jnp.round(jax.random.normal(jax.random.key(0), shape) * 2) / 2  # many equal values: ties in windows
    g = jax.random.normal(jax.random.key(1), _ref(x).shape)
    y_ref, vjp_ref = jax.vjp(_ref, x)
    y, vjp = jax.vjp(max_pool, x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    np.testing.assert_allclose(np.asarray(vjp(g)[0]), np.asarray(vjp_ref(g)[0]), atol=1e-6)


def test_gradient_goes_to_first_maximum_only():
    x = jnp.zeros((1, 3, 3, 1))  # one window (the centre output of a 3x3 input) full of equal maxima
    dx = jax.grad(lambda x: max_pool(x)[0, 0, 0, 0])(x)
    assert float(dx.sum()) == 1.0 and float(dx[0, 0, 0, 0]) == 1.0  # the first cell of the window, once


def test_vmap_over_seeds():
    x = jax.random.normal(jax.random.key(2), (3, 2, 10, 10, 2))
    f = lambda fn: jax.vmap(jax.grad(lambda x: (fn(x) ** 2).sum()))  # noqa: E731
    np.testing.assert_allclose(np.asarray(f(max_pool)(x)), np.asarray(f(_ref)(x)), atol=1e-5)
