"""The unrolled threefry lowering on XLA:CPU (``plasticine_jax.threefry_cpu``): in effect once the package is
imported, no while loop left in a compiled draw, the Random123 known-answer vector, and the very bits of jax's
own rolled lowering (run in a process that opts out)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import plasticine_jax  # noqa: F401  (registers the lowering)
from plasticine_jax import threefry_cpu

DRAWS = """
import json, jax, jax.numpy as jnp
import plasticine_jax
k = jax.random.PRNGKey(7)
out = {"split": jax.random.split(k, 5).tolist(), "bits": jax.random.bits(k, (3, 4)).tolist(),
       "uniform": jax.random.uniform(k, (6,)).tolist(), "normal": jax.random.normal(k, (2, 3)).tolist(),
       "categorical": jax.random.categorical(k, jnp.zeros((64, 5))).tolist(),
       "vmapped": jax.vmap(lambda s: jax.random.uniform(jax.random.PRNGKey(s), (3,)))(jnp.arange(4)).tolist(),
       "jit_while": "while" in jax.jit(lambda k: jax.random.uniform(k, (5,))).lower(k).compile().as_text()}
print(json.dumps(out))
"""


def _draws(rolled: bool) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PLASTICINE_JAX_ROLLED_THREEFRY": "1" if rolled else "0"}
    res = subprocess.run([sys.executable, "-c", DRAWS], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_unrolled_lowering_is_in_effect_and_loop_free():
    assert jax.default_backend() != "cpu" or threefry_cpu.enable()
    text = jax.jit(lambda k: jax.random.normal(k, (8,))).lower(jax.random.PRNGKey(0)).compile().as_text()
    assert " while(" not in text


def test_known_answer_vector():
    """Random123's threefry2x32 (20 rounds) test vector: key (0x13198a2e, 0x03707344), counter (0x243f6a88,
    0x85a308d3) -> (0xc4923a9c, 0x483df7a0)."""
    from jax._src.random import threefry2x32 as tf

    key = jnp.asarray([0x13198A2E, 0x03707344], jnp.uint32)
    count = jnp.asarray([0x243F6A88, 0x85A308D3], jnp.uint32)
    out = jax.jit(tf.threefry_2x32)(key, count)
    np.testing.assert_array_equal(np.asarray(out), np.asarray([0xC4923A9C, 0x483DF7A0], np.uint32))


def test_same_bits_as_jax_rolled_loop():
    ours, rolled = _draws(rolled=False), _draws(rolled=True)
    assert ours.pop("jit_while") is False and rolled.pop("jit_while") is True  # the two lowerings really differ
    assert ours == rolled
