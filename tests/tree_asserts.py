"""Pytree comparisons shared by the tests (pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import jax
import numpy as np


def assert_same(a, b) -> None:
    """Every leaf bit-identical."""
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def assert_ulps(a, b) -> None:
    """Equal up to float rounding (a few ulps of float32), integer leaves exactly."""
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7), a, b)


def all_changed(a, b) -> bool:
    """Every leaf differs somewhere."""
    return all(not np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
