"""seed_conv equals lax.conv_general_dilated (values and both gradients) in every vmap layout, and keeps the
kernel-gradient convolution out of loop bodies (the XLA:CPU slow path it exists to avoid)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from plasticine_jax.nets.seed_conv import seed_conv

CASES = [  # (size, kernel, stride, padding, in channels, out channels): IMPALA and Nature CNN layers, SAME
    (16, 3, 1, ((1, 1), (1, 1)), 3, 8),
    (36, 8, 4, "VALID", 4, 8),
    (8, 4, 2, "VALID", 8, 16),
    (7, 3, 2, "SAME", 5, 7),
]


def _loss(conv, stride, pad, dn):
    return lambda x, w: (jnp.sin(conv(x, w, (stride, stride), pad, dimension_numbers=dn)) ** 2).sum()


def _err(a, b):
    return max(float(jnp.abs(u - v).max() / (jnp.abs(u).max() + 1e-9)) for u, v in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("axes", [(0, 0), (0, None), (None, 0), None])
def test_matches_lax_conv_and_its_gradients(case, axes):
    size, k, s, pad, ci, co = case
    x = jax.random.normal(jax.random.key(0), (3, 4, size, size, ci))
    w = jax.random.normal(jax.random.key(1), (3, k, k, ci, co)) / k
    dn = lax.conv_dimension_numbers(x.shape[1:], w.shape[1:], ("NHWC", "HWIO", "NHWC"))
    if axes is None:  # no vmap at all
        args, wrap = (x[0], w[0]), lambda f: f
    else:
        args = (x if axes[0] == 0 else x[0], w if axes[1] == 0 else w[0])
        wrap = lambda f: jax.vmap(f, axes)  # noqa: E731
    ref = jax.jit(wrap(jax.value_and_grad(_loss(lax.conv_general_dilated, s, pad, dn), (0, 1))))(*args)
    new = jax.jit(wrap(jax.value_and_grad(_loss(seed_conv, s, pad, dn), (0, 1))))(*args)
    assert _err(ref, new) < 1e-4


def test_nested_vmap_over_sweep_and_seeds():
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 10, 10, 3))
    w = jax.random.normal(jax.random.key(1), (2, 3, 3, 3, 3, 6))
    dn = lax.conv_dimension_numbers(x.shape[2:], w.shape[2:], ("NHWC", "HWIO", "NHWC"))
    ref = jax.jit(jax.vmap(jax.vmap(jax.grad(_loss(lax.conv_general_dilated, 1, "SAME", dn), (0, 1)))))(x, w)
    new = jax.jit(jax.vmap(jax.vmap(jax.grad(_loss(seed_conv, 1, "SAME", dn), (0, 1)))))(x, w)
    assert _err(ref, new) < 1e-4


def test_kernel_gradient_is_matmuls_inside_a_scan():
    """Inside lax.scan the plain kernel gradient is a whole-image-window convolution (12 s vs 0.1 s for an
    IMPALA layer on XLA:CPU); with seed_conv the only convolutions left have the kernel's own window."""
    x = jnp.ones((2, 4, 12, 12, 3))
    w = jnp.ones((2, 3, 3, 3, 5))
    dn = lax.conv_dimension_numbers(x.shape[1:], w.shape[1:], ("NHWC", "HWIO", "NHWC"))

    def hlo(conv):
        def run(x, w):
            def body(w, xi):
                return w - 1e-3 * jax.grad(_loss(conv, 1, "SAME", dn), 1)(xi, w), None
            return lax.scan(body, w[0], x)[0]
        return jax.jit(run).lower(x, w).compile().as_text()

    windows = lambda text: {line.split("window={size=")[1].split()[0] for line in text.splitlines()  # noqa: E731
                            if "window={size=" in line}
    if jax.default_backend() == "cpu":
        assert windows(hlo(seed_conv)) == {"3x3"}
    assert "12x12" in windows(hlo(lax.conv_general_dilated))


def test_other_layouts_fall_back_to_lax():
    x = np.random.default_rng(0).normal(size=(2, 3, 9, 9)).astype(np.float32)  # NCHW
    w = np.random.default_rng(1).normal(size=(4, 3, 3, 3)).astype(np.float32)  # OIHW
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NCHW", "OIHW", "NCHW"))
    a = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
    b = seed_conv(x, w, (1, 1), "SAME", dimension_numbers=dn)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
