"""Metrics (plasticine_jax.metrics) against independent, loop-based numpy (float64) implementations."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticine_jax.errors import ConfigError
from plasticine_jax.metrics import (
    active_fraction,
    categorical_entropy,
    check_rank_batch,
    dormant_mask,
    dormant_ratio,
    dormant_ratio_per_layer,
    effective_rank,
    feature_norm,
    feature_variance,
    gaussian_entropy,
    global_norm,
    stable_rank,
    unit_scores,
    weight_difference,
    weight_magnitude,
)

# ---------------------------------------------------------------------------------------------------------
# Independent numpy references (float64, explicit loops).


def np_scores_redo(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    d = a.shape[-1]
    flat = a.reshape(-1, d)
    e = np.array([np.abs(flat[:, i]).sum() / flat.shape[0] for i in range(d)])
    return e / (e.mean() + 1e-9)


def np_scores_june(a: np.ndarray, use_abs: bool) -> np.ndarray:
    """Reference: per (b[, h, w]) divide by the channel mean + 1e-6, average over b, then over h, w."""
    x = np.abs(np.asarray(a, np.float64)) if use_abs else np.asarray(a, np.float64)
    if x.ndim == 2:
        b_, d = x.shape
        s = np.zeros(d)
        for b in range(b_):
            s += x[b] / (x[b].mean() + 1e-6)
        return s / b_
    b_, h_, w_, c = x.shape
    per_pos = np.zeros((h_, w_, c))
    for h in range(h_):
        for w in range(w_):
            acc = np.zeros(c)
            for b in range(b_):
                v = x[b, h, w]
                acc += v / (v.mean() + 1e-6)
            per_pos[h, w] = acc / b_
    return per_pos.reshape(-1, c).mean(axis=0)


def np_scores(a, formula, use_abs=False):
    return np_scores_redo(a) if formula == "redo" else np_scores_june(a, use_abs)


def np_dormant_ratio(layers, tau, formula, use_abs):
    fracs = []
    for a, u in zip(layers, use_abs, strict=True):
        s = np_scores(a, formula, u)
        fracs.append(sum(1 for v in s if v <= tau) / len(s))
    return float(np.mean(fracs)), np.array(fracs)


def np_fau(f: np.ndarray, activation: str, reference: bool) -> float:
    f = np.asarray(f, np.float64)
    if activation == "crelu" and not reference:
        half = f.shape[-1] // 2
        pos, neg = f[..., :half].ravel(), f[..., half:].ravel()
        dead = [p == 0 and n == 0 for p, n in zip(pos, neg, strict=True)]
        return 1.0 - sum(dead) / len(dead)
    flags = []
    for v in f.ravel():
        if activation in ("relu", "crelu"):
            flags.append(v == 0)
        elif activation == "tanh":
            flags.append(abs(v) > 0.99)
        elif activation == "sigmoid":
            flags.append(v < 0.01 or v > 0.99)
        elif activation == "dff":
            flags.append(abs(v) > (math.sqrt(2) - 0.01 if reference else 0.99))
    return 1.0 - sum(flags) / len(flags)


def np_srank(f: np.ndarray, delta: float = 0.01) -> int:
    sv = np.linalg.svd(np.asarray(f, np.float64), compute_uv=False)
    cum = np.cumsum(sv) / np.sum(sv)
    return int(np.sum(cum < 1.0 - delta)) + 1


def np_erank_from_sv(sv: np.ndarray) -> float:
    p = np.asarray(sv, np.float64) / np.sum(np.abs(sv))
    return math.exp(-sum(q * math.log(q) for q in p if q > 0))


def np_erank(f: np.ndarray) -> float:
    return np_erank_from_sv(np.linalg.svd(np.asarray(f, np.float64), compute_uv=False))


def np_feature_norm(f):
    return float(np.mean([math.sqrt(sum(float(v) ** 2 for v in row)) for row in np.asarray(f, np.float64)]))


def np_feature_var(f, across):
    f = np.asarray(f, np.float64)
    rows = f if across == "features" else f.T
    out = []
    for r in rows:
        m = sum(r) / len(r)
        out.append(sum((v - m) ** 2 for v in r) / (len(r) - 1))
    return float(np.mean(out))


def np_leaves(tree):
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in np_leaves(tree[k])]
    if isinstance(tree, list | tuple):
        return [x for t in tree for x in np_leaves(t)]
    return [np.asarray(tree, np.float64)]


def np_rms(tree):
    leaves = np_leaves(tree)
    return math.sqrt(sum(float((x**2).sum()) for x in leaves) / sum(x.size for x in leaves))


def np_cat_entropy(logits):
    logits = np.asarray(logits, np.float64)
    out = np.zeros(logits.shape[:-1])
    for idx in np.ndindex(*logits.shape[:-1]):
        row = [v for v in logits[idx] if np.isfinite(v)]
        m = max(row)
        z = sum(math.exp(v - m) for v in row)
        ps = [math.exp(v - m) / z for v in row]
        out[idx] = -sum(p * math.log(p) for p in ps if p > 0)
    return out


def np_gauss_entropy(log_std):
    log_std = np.asarray(log_std, np.float64)
    out = np.zeros(log_std.shape[:-1])
    for idx in np.ndindex(*log_std.shape[:-1]):
        out[idx] = sum(0.5 * math.log(2 * math.pi * math.e * math.exp(2 * s)) for s in log_std[idx])
    return out


# ---------------------------------------------------------------------------------------------------------
# Fixtures.


def relu_layer(rng, b, d, dead=()):
    a = np.maximum(rng.normal(0.5, 1.0, (b, d)), 0.0).astype(np.float32)
    a[:, list(dead)] = 0.0
    return a


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------------------------------------
# Unit scores / dormant ratio.


@pytest.mark.parametrize("formula", ["redo", "june"])
def test_unit_scores_linear(rng, formula):
    a = relu_layer(rng, 64, 32, dead=(3, 17))
    a[:, 5] *= 0.01  # a low-activity (but non-zero) unit
    s = np.asarray(unit_scores(jnp.asarray(a), formula))
    assert s.shape == (32,)
    np.testing.assert_allclose(s, np_scores(a, formula), rtol=1e-5, atol=1e-7)
    assert s[3] == 0 and s[17] == 0 and 0 < s[5] < 0.1


@pytest.mark.parametrize("formula", ["redo", "june"])
@pytest.mark.parametrize("use_abs", [False, True])
def test_unit_scores_conv_nhwc(rng, formula, use_abs):
    a = rng.normal(0.3, 1.0, (6, 5, 4, 8)).astype(np.float32)  # signed (tanh-like) NHWC activations
    a = np.tanh(a)
    a[..., 2] = 0.0
    s = np.asarray(unit_scores(jnp.asarray(a), formula, use_abs))
    assert s.shape == (8,)
    np.testing.assert_allclose(s, np_scores(a, formula, use_abs), rtol=1e-4, atol=1e-6)


def test_june_uses_signed_values_without_abs(rng):
    a = np.tanh(rng.normal(0.5, 1.0, (32, 6))).astype(np.float32)
    plain = np.asarray(unit_scores(jnp.asarray(a), "june", use_abs=False))
    absd = np.asarray(unit_scores(jnp.asarray(a), "june", use_abs=True))
    np.testing.assert_allclose(plain, np_scores_june(a, False), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(absd, np_scores_june(a, True), rtol=1e-5)
    assert np.max(np.abs(plain - absd)) > 1e-2


@pytest.mark.parametrize("formula", ["redo", "june"])
def test_all_dead_layer(formula):
    a = jnp.zeros((32, 16))
    np.testing.assert_array_equal(np.asarray(unit_scores(a, formula)), np.zeros(16))
    assert float(dormant_ratio([a], 0.025, formula)) == 1.0
    assert float(dormant_ratio([a], 0.0, formula)) == 1.0
    assert float(active_fraction(a, "relu")) == 0.0


@pytest.mark.parametrize("formula", ["redo", "june"])
def test_planted_dead_units_exact_ratio(rng, formula):
    l1 = relu_layer(rng, 128, 20, dead=(0, 4, 9, 11, 19))
    l2 = relu_layer(rng, 128, 10)
    l3 = relu_layer(rng, 128, 12, dead=(1, 2, 3))
    layers = [jnp.asarray(x) for x in (l1, l2, l3)]
    per = np.asarray(dormant_ratio_per_layer(layers, 0.025, formula))
    np.testing.assert_array_equal(per, np.array([5 / 20, 0.0, 3 / 12], np.float32))
    np.testing.assert_allclose(
        float(dormant_ratio(layers, 0.025, formula)), (0.25 + 0.0 + 0.25) / 3, rtol=1e-6
    )
    # tau = 0 counts exactly-zero units only
    np.testing.assert_allclose(float(dormant_ratio(layers, 0.0, formula)), (0.25 + 0.0 + 0.25) / 3, rtol=1e-6)
    mask = np.asarray(dormant_mask(layers[0], 0.025, formula))
    np.testing.assert_array_equal(np.flatnonzero(mask), [0, 4, 9, 11, 19])


@pytest.mark.parametrize("formula", ["redo", "june"])
def test_dormant_ratio_matches_numpy_mixed_layers(rng, formula):
    tau = 0.1
    lin = relu_layer(rng, 64, 24, dead=(2,))
    lin[:, 7] *= 0.02
    lin[:, 8] *= 0.5
    conv = np.maximum(rng.normal(0.2, 1.0, (4, 6, 6, 16)), 0).astype(np.float32)
    conv[..., 3] *= 0.01
    tanh = np.tanh(rng.normal(0.0, 1.0, (64, 10))).astype(np.float32)
    tanh[:, 4] *= 0.03
    layers, use_abs = [lin, conv, tanh], [False, False, True]
    want, want_per = np_dormant_ratio(layers, tau, formula, use_abs)
    for a, u in zip(layers, use_abs, strict=True):  # the inputs stay clear of the threshold
        assert np.min(np.abs(np_scores(a, formula, u) - tau)) > 1e-3
    got = dormant_ratio([jnp.asarray(x) for x in layers], tau, formula, use_abs)
    got_per = dormant_ratio_per_layer([jnp.asarray(x) for x in layers], tau, formula, use_abs)
    np.testing.assert_allclose(np.asarray(got_per), want_per, rtol=1e-6)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    assert 0 < want < 1


def test_unit_scores_bad_formula():
    with pytest.raises(ConfigError, match="formula"):
        unit_scores(jnp.ones((4, 3)), "may")
    with pytest.raises(ValueError, match="2 entries for 1 layers"):
        dormant_ratio([jnp.ones((4, 3))], use_abs=[True, False])


# ---------------------------------------------------------------------------------------------------------
# Fraction of active units.


def test_active_fraction_relu_tanh_sigmoid(rng):
    x = rng.normal(0.0, 3.0, (64, 32)).astype(np.float32)
    relu = np.maximum(x, 0.0)
    relu[:, :4] = 0.0
    tanh = np.tanh(x)
    sig = 1.0 / (1.0 + np.exp(-x))
    for f, act in ((relu, "relu"), (relu, "ln-relu"), (tanh, "tanh"), (sig, "sigmoid")):
        got = float(active_fraction(jnp.asarray(f), act))
        want = np_fau(f, act.replace("ln-", ""), reference=False)
        assert 0.05 < want < 0.95
        np.testing.assert_allclose(got, want, rtol=1e-6)
        np.testing.assert_allclose(
            float(active_fraction(jnp.asarray(f), act, reference=True)), want, rtol=1e-6
        )


def test_active_fraction_crelu(rng):
    x = rng.normal(0.0, 1.0, (64, 16)).astype(np.float32)
    x[:, :3] = 0.0  # three dead pre-activation units
    x[rng.random(x.shape) < 0.1] = 0.0
    f = np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], axis=-1)
    got = float(active_fraction(jnp.asarray(f), "crelu"))
    np.testing.assert_allclose(got, np_fau(f, "crelu", reference=False), rtol=1e-6)
    np.testing.assert_allclose(got, 1.0 - np.mean(x == 0), rtol=1e-6)  # pair active <=> x != 0
    ref = float(active_fraction(jnp.asarray(f), "crelu", reference=True))
    np.testing.assert_allclose(ref, np_fau(f, "relu", reference=True), rtol=1e-6)
    assert ref <= 0.5 < got
    with pytest.raises(ValueError, match="even"):
        active_fraction(jnp.ones((4, 5)), "crelu")


def test_active_fraction_dff(rng):
    x = rng.uniform(-4.0, 4.0, (64, 16)).astype(np.float32)
    f = np.concatenate([np.sin(x), np.cos(x)], axis=-1)
    got = float(active_fraction(jnp.asarray(f), "dff"))
    want = np_fau(f, "dff", reference=False)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert 0.5 <= want < 0.99
    # reference threshold sqrt(2) - 0.01 is unreachable for sin/cos: always 1
    assert float(active_fraction(jnp.asarray(f), "dff", reference=True)) == 1.0
    # every sin saturated (x = pi/2 + k pi) -> exactly half the outputs inactive
    x2 = np.full((8, 4), np.pi / 2, np.float32) + np.pi * np.arange(4, dtype=np.float32)
    f2 = np.concatenate([np.sin(x2), np.cos(x2)], axis=-1)
    np.testing.assert_allclose(float(active_fraction(jnp.asarray(f2), "dff")), 0.5, rtol=1e-6)
    with pytest.raises(ConfigError, match="unknown activation"):
        active_fraction(jnp.ones((4, 4)), "gelu")


# ---------------------------------------------------------------------------------------------------------
# Rank.


def orthonormal(rng, n, k):
    q, _ = np.linalg.qr(rng.normal(size=(n, k)))
    return q


def test_ranks_random_full_rank(rng):
    f = rng.normal(size=(64, 16)).astype(np.float32)
    assert int(stable_rank(jnp.asarray(f))) == np_srank(f)
    assert int(stable_rank(jnp.asarray(f), delta=0.2)) == np_srank(f, 0.2)
    np.testing.assert_allclose(float(effective_rank(jnp.asarray(f))), np_erank(f), rtol=1e-5)
    assert stable_rank(jnp.asarray(f)).dtype == jnp.int32


def test_ranks_rank_deficient(rng):
    f = (rng.normal(size=(64, 3)) @ rng.normal(size=(3, 16))).astype(np.float32)
    sr = int(stable_rank(jnp.asarray(f)))
    assert sr == np_srank(f) and sr <= 3
    er = float(effective_rank(jnp.asarray(f)))
    np.testing.assert_allclose(er, np_erank(f), rtol=1e-4)
    assert 1.0 < er < 3.0


def test_ranks_known_singular_values(rng):
    sigma = np.array([10, 5, 3, 1, 0.5, 0.3, 0.1, 0.05])  # sum 19.95
    f = (orthonormal(rng, 64, 8) * sigma) @ orthonormal(rng, 16, 8).T
    fj = jnp.asarray(f.astype(np.float32))
    # cumulative shares: .501 .752 .902 .952 .977 .992 .997 1.0
    assert int(stable_rank(fj)) == 6
    assert int(stable_rank(fj, delta=0.05)) == 4
    assert int(stable_rank(fj, delta=0.1)) == 3
    assert int(stable_rank(fj, delta=0.6)) == 1
    assert int(stable_rank(fj, delta=0.0)) == 8
    np.testing.assert_allclose(float(effective_rank(fj)), np_erank_from_sv(sigma), rtol=1e-5)


def test_stable_rank_exact_tie_and_identity():
    c, s = math.cos(0.3), math.sin(0.3)
    rot = np.array([[c, -s], [s, c]])
    f = jnp.asarray((rot @ np.diag([3.0, 1.0]) @ rot.T).astype(np.float32))
    assert int(stable_rank(f, delta=0.25)) == 1  # share of sigma_1 is exactly 0.75
    assert int(stable_rank(f, delta=0.2)) == 2
    eye = jnp.eye(16)
    assert int(stable_rank(eye)) == 16  # cumsum share 1 - 1/16 < .99 until the last
    assert int(stable_rank(eye, delta=0.0)) == 16  # never min(B, D) + 1
    np.testing.assert_allclose(float(effective_rank(eye)), 16.0, rtol=1e-5)


def test_ranks_fewer_samples_than_features(rng):
    f = rng.normal(size=(8, 32)).astype(np.float32)
    sr, er = int(stable_rank(jnp.asarray(f))), float(effective_rank(jnp.asarray(f)))
    assert sr == np_srank(f) and sr <= 8
    np.testing.assert_allclose(er, np_erank(f), rtol=1e-5)
    assert er <= 8.0
    with pytest.raises(ConfigError, match=r"batch 8 < width 32"):
        check_rank_batch(8, 32)
    check_rank_batch(32, 32)
    check_rank_batch(64, 32)


def test_ranks_all_zero():
    z = jnp.zeros((32, 8))
    assert int(stable_rank(z)) == 0
    assert float(effective_rank(z)) == 0.0
    assert not np.isnan(float(effective_rank(z)))
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        stable_rank(jnp.zeros((2, 3, 4)))


# ---------------------------------------------------------------------------------------------------------
# Norms.


def make_params(rng, scale=1.0):
    return {
        "conv": {"kernel": rng.normal(0, scale, (3, 3, 4, 8)), "bias": rng.normal(0, scale, (8,))},
        "dense": [rng.normal(0, scale, (16, 5)), rng.normal(0, scale, (5,))],
    }


def to_jax(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def test_weight_norms(rng):
    p, q = make_params(rng), make_params(rng, 0.1)
    pj, qj = to_jax(p), to_jax(q)
    np.testing.assert_allclose(float(weight_magnitude(pj)), np_rms(p), rtol=1e-5)
    diff = jax.tree.map(lambda a, b: a - b, p, q)
    np.testing.assert_allclose(float(weight_difference(pj, qj)), np_rms(diff), rtol=1e-5)
    assert float(weight_difference(pj, pj)) == 0.0
    gn = math.sqrt(sum(float((x**2).sum()) for x in np_leaves(p)))
    np.testing.assert_allclose(float(global_norm(pj)), gn, rtol=1e-5)
    n = sum(x.size for x in np_leaves(p))
    np.testing.assert_allclose(float(global_norm(pj)), float(weight_magnitude(pj)) * math.sqrt(n), rtol=1e-5)
    assert float(global_norm({})) == 0.0 and float(weight_magnitude({})) == 0.0


def test_feature_norm_and_variance(rng):
    f = rng.normal(0.5, 2.0, (32, 12)).astype(np.float32)
    np.testing.assert_allclose(float(feature_norm(jnp.asarray(f))), np_feature_norm(f), rtol=1e-5)
    for across in ("features", "batch"):
        got = float(feature_variance(jnp.asarray(f), across))
        np.testing.assert_allclose(got, np_feature_var(f, across), rtol=1e-5)
    a = float(feature_variance(jnp.asarray(f), "features"))
    b = float(feature_variance(jnp.asarray(f), "batch"))
    assert abs(a - b) > 1e-3  # the two definitions differ on generic data


def test_feature_variance_degenerate(rng):
    col = rng.normal(size=(16, 1)).astype(np.float32)
    row = rng.normal(size=(1, 16)).astype(np.float32)
    assert float(feature_variance(jnp.asarray(col), "features")) == 0.0
    assert float(feature_variance(jnp.asarray(row), "batch")) == 0.0
    np.testing.assert_allclose(
        float(feature_variance(jnp.asarray(col), "batch")), np_feature_var(col, "batch"), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(feature_variance(jnp.asarray(row), "features")), np_feature_var(row, "features"), rtol=1e-5
    )
    np.testing.assert_allclose(float(feature_norm(jnp.asarray(row))), np_feature_norm(row), rtol=1e-5)
    assert float(feature_norm(jnp.zeros((4, 3)))) == 0.0


# ---------------------------------------------------------------------------------------------------------
# Policy entropy.


def test_categorical_entropy(rng):
    logits = rng.normal(0, 3.0, (5, 7, 6)).astype(np.float32)
    logits[0, 0, 0] = 1e4  # numerically stable for large logits
    got = np.asarray(categorical_entropy(jnp.asarray(logits)))
    assert got.shape == (5, 7)
    np.testing.assert_allclose(got, np_cat_entropy(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(categorical_entropy(jnp.zeros(9))), math.log(9), rtol=1e-6)


def test_categorical_entropy_masked(rng):
    logits = rng.normal(0, 1.0, (4, 6)).astype(np.float32)
    logits[:, 4:] = -np.inf
    logits[3, 1:] = -np.inf  # a single live action -> entropy 0
    got = np.asarray(categorical_entropy(jnp.asarray(logits)))
    np.testing.assert_allclose(got, np_cat_entropy(logits), rtol=1e-5, atol=1e-7)
    assert got[3] == 0.0
    grad = jax.grad(lambda x: categorical_entropy(x).sum())(jnp.asarray(logits))
    assert np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_array_equal(np.asarray(grad)[:, 4:], 0.0)


def test_gaussian_entropy(rng):
    log_std = rng.normal(-0.5, 0.7, (10, 3)).astype(np.float32)
    got = np.asarray(gaussian_entropy(jnp.asarray(log_std)))
    np.testing.assert_allclose(got, np_gauss_entropy(log_std), rtol=1e-5)
    np.testing.assert_allclose(float(gaussian_entropy(jnp.zeros(2))), 1.0 + math.log(2 * math.pi), rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# jit and vmap over a leading seed axis.

S = 3


def seeded(rng, shape):
    return rng.normal(0.2, 1.0, (S, *shape)).astype(np.float32)


def _cases(rng):
    lin = np.maximum(seeded(rng, (32, 10)), 0)
    lin[:, :, 2] = 0
    lin[1, :, 5] = 0
    conv = np.maximum(seeded(rng, (4, 3, 3, 6)), 0)
    x = seeded(rng, (16, 8))
    x[0, :, 0] = 0
    crelu_f = np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], -1)
    dff_f = np.concatenate([np.sin(3 * x), np.cos(3 * x)], -1)
    feats = seeded(rng, (24, 8))
    params = {"w": seeded(rng, (4, 5)), "b": seeded(rng, (5,))}
    ref = {"w": seeded(rng, (4, 5)), "b": seeded(rng, (5,))}
    logits = seeded(rng, (6, 4))
    logits[:, :, 3] = -np.inf
    return [
        ("scores_redo", lambda a: unit_scores(a, "redo"), (conv,)),
        ("scores_june", lambda a: unit_scores(a, "june", True), (conv,)),
        ("mask", lambda a: dormant_mask(a, 0.1), (lin,)),
        ("ratio", lambda a, b: dormant_ratio([a, b], 0.025, "june"), (lin, conv)),
        ("ratio_per_layer", lambda a, b: dormant_ratio_per_layer([a, b]), (lin, conv)),
        ("fau_relu", lambda f: active_fraction(f, "relu"), (lin,)),
        ("fau_crelu", lambda f: active_fraction(f, "crelu"), (crelu_f,)),
        ("fau_dff", lambda f: active_fraction(f, "dff"), (dff_f,)),
        ("fau_dff_ref", lambda f: active_fraction(f, "dff", reference=True), (dff_f,)),
        ("srank", stable_rank, (feats,)),
        ("erank", effective_rank, (feats,)),
        ("wmag", weight_magnitude, (params,)),
        ("wdiff", weight_difference, (params, ref)),
        ("gnorm", global_norm, (params,)),
        ("fnorm", feature_norm, (feats,)),
        ("fvar", feature_variance, (feats,)),
        ("fvar_batch", lambda f: feature_variance(f, "batch"), (feats,)),
        ("cat_ent", categorical_entropy, (logits,)),
        ("gauss_ent", gaussian_entropy, (feats,)),
    ]


def test_jit_and_vmap_over_seeds(rng):
    for name, fn, args in _cases(rng):
        args = to_jax(args)
        batched = jax.jit(jax.vmap(fn))(*args)
        for s in range(S):
            one = [jax.tree.map(lambda x, s=s: x[s], a) for a in args]
            eager = fn(*one)
            jitted = jax.jit(fn)(*one)
            np.testing.assert_allclose(
                np.asarray(batched[s]), np.asarray(eager), rtol=1e-5, atol=1e-6, err_msg=name
            )
            np.testing.assert_allclose(
                np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-6, err_msg=name
            )
