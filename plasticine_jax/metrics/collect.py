"""Assemble the ``plasticity/*`` metrics of one learner unit from activations computed once (in-graph, per
seed): per torso, dormant ratio over every hidden layer and feature metrics on its output features; per
unit, weight magnitude and difference over the parameters in use."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.metrics.norms import feature_norm, feature_variance, weight_difference, weight_magnitude
from plasticine_jax.metrics.rank import effective_rank, stable_rank
from plasticine_jax.metrics.units import active_fraction, dormant_ratio
from plasticine_jax.nets import Network
from plasticine_jax.nets.activations import USES_ABS

HEAVY_KEYS = (
    "dormant_ratio",
    "active_fraction",
    "stable_rank",
    "effective_rank",
    "feature_norm",
    "feature_variance",
)
FEATURE_KEYS = HEAVY_KEYS[1:]  # everything but dormant_ratio: computed on the torso's output features


def metric_prefix(unit_tag: str, torso_tag: str = "") -> str:
    """``plasticity/[<unit>/][<torso>/]`` (PPO's unit is untagged, so its keys stay the reference's)."""
    return "plasticity/" + "".join(f"{t}/" for t in (unit_tag, torso_tag) if t)


def heavy_metric_names(network: Network, unit_tag: str = "") -> list[str]:
    """The heavy metric keys this unit's network produces (one set per torso)."""
    return [metric_prefix(unit_tag, t.tag) + k for t in network.torsos for k in HEAVY_KEYS]


def feature_metrics(feats: jax.Array, activation: str, cfg: MetricsConfig) -> dict[str, jax.Array]:
    """Active fraction, ranks, norm and variance of a feature batch [B, D] (keys without prefix)."""
    return {
        "active_fraction": active_fraction(feats, activation),
        "stable_rank": stable_rank(feats).astype(jnp.float32),
        "effective_rank": effective_rank(feats),
        "feature_norm": feature_norm(feats),
        "feature_variance": feature_variance(feats, across=cfg.feature_variance_across),
    }


def activation_metrics(network: Network, acts: dict[str, jax.Array], cfg: MetricsConfig,
                       unit_tag: str = "", features: bool = True) -> dict[str, jax.Array]:
    """Dormant ratio over every hidden activation of each torso and (``features``) the feature metrics on
    its output features, under ``metric_prefix(unit_tag, torso.tag)``."""
    out = {}
    feat_groups = network.feature_groups()
    for t in network.torsos:
        groups = [g for g in network.groups if g.name.startswith(t.name + "/")]
        prefix = metric_prefix(unit_tag, t.tag)
        out[prefix + "dormant_ratio"] = dormant_ratio([acts[g.name] for g in groups], cfg.tau, cfg.dormant_formula,
                                                      [USES_ABS[g.activation] for g in groups])
        if features:
            f = acts[feat_groups[t.name]]
            for k, v in feature_metrics(f.reshape(f.shape[0], -1), groups[-1].activation, cfg).items():
                out[prefix + k] = v
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


def torso_features(network: Network, acts: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Torso name -> its output features flattened to [B, D]."""
    groups = network.feature_groups()
    return {t.name: acts[groups[t.name]].reshape(acts[groups[t.name]].shape[0], -1) for t in network.torsos}


def weight_metrics(network: Network, params: dict, net_state: dict, ref_params: dict,
                   unit_tag: str = "") -> dict[str, jax.Array]:
    """RMS weight magnitude and RMS distance to ``ref_params`` over the parameters in use (pre-allocated,
    not yet injected heads excluded)."""
    # a leaf is either wholly used or wholly unused: select it by its (traced) flag, shapes stay static
    flags = [u.reshape(-1)[0] for u in jax.tree.leaves(network.used_mask(params, net_state))]
    p = [jnp.where(f, x, 0.0) for x, f in zip(jax.tree.leaves(params), flags, strict=True)]
    r = [jnp.where(f, x, 0.0) for x, f in zip(jax.tree.leaves(ref_params), flags, strict=True)]
    n = sum(jnp.where(f, x.size, 0) for x, f in zip(p, flags, strict=True))
    n = jnp.maximum(n, 1).astype(jnp.float32)
    sq = sum(jnp.sum(jnp.square(x)) for x in p)
    dsq = sum(jnp.sum(jnp.square(a - b)) for a, b in zip(p, r, strict=True))
    prefix = metric_prefix(unit_tag)
    return {prefix + "weight_magnitude": jnp.sqrt(sq / n), prefix + "weight_difference": jnp.sqrt(dsq / n)}


__all__ = ["activation_metrics", "feature_metrics", "heavy_metric_names", "metric_prefix", "torso_features",
           "weight_difference", "weight_magnitude", "weight_metrics"]
