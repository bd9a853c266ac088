"""Assemble the ``plasticity/*`` metrics of a network from one forward pass (in-graph, per seed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from plasticine_jax.metrics.config import MetricsConfig
from plasticine_jax.metrics.norms import feature_norm, feature_variance
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


def heavy_metric_names(network: Network) -> list[str]:
    """The heavy metric keys this network produces (per-torso keys for separate actor/critic towers)."""
    names = [f"plasticity/{k}" for k in HEAVY_KEYS]
    if not network.cfg.shared:
        names += [f"plasticity/critic/{k}" for k in HEAVY_KEYS]
    return names


def activation_metrics(
    network: Network, acts: dict[str, jax.Array], cfg: MetricsConfig
) -> dict[str, jax.Array]:
    """Dormant ratio over every hidden activation of a torso, and feature metrics on its output features.

    For separate towers the actor's go under ``plasticity/<name>`` and the critic's under
    ``plasticity/critic/<name>``; a shared torso reports ``plasticity/<name>`` only.
    """
    out = {}
    for torso, feat_name in network.feature_groups().items():
        groups = [g for g in network.groups if g.name.startswith(torso + "/")]
        layers = [acts[g.name] for g in groups]
        use_abs = [USES_ABS[g.activation] for g in groups]
        feats = acts[feat_name].reshape(acts[feat_name].shape[0], -1)
        act_name = groups[-1].activation
        prefix = "plasticity/critic/" if torso == "critic_torso" else "plasticity/"
        out[prefix + "dormant_ratio"] = dormant_ratio(layers, cfg.tau, cfg.dormant_formula, use_abs)
        out[prefix + "active_fraction"] = active_fraction(feats, act_name)
        out[prefix + "stable_rank"] = stable_rank(feats).astype(jnp.float32)
        out[prefix + "effective_rank"] = effective_rank(feats)
        out[prefix + "feature_norm"] = feature_norm(feats)
        out[prefix + "feature_variance"] = feature_variance(feats, across=cfg.feature_variance_across)
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}
