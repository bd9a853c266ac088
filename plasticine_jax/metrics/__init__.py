"""Plasticity metrics: pure, jit- and vmap-safe functions over activations, features, parameters and logits
(reference §4)."""

from plasticine_jax.metrics.norms import (
    feature_norm,
    feature_variance,
    global_norm,
    weight_difference,
    weight_magnitude,
)
from plasticine_jax.metrics.policy import categorical_entropy, gaussian_entropy
from plasticine_jax.metrics.rank import check_rank_batch, effective_rank, stable_rank
from plasticine_jax.metrics.units import (
    active_fraction,
    dormant_mask,
    dormant_ratio,
    dormant_ratio_per_layer,
    unit_scores,
)

__all__ = [
    "active_fraction",
    "categorical_entropy",
    "check_rank_batch",
    "dormant_mask",
    "dormant_ratio",
    "dormant_ratio_per_layer",
    "effective_rank",
    "feature_norm",
    "feature_variance",
    "gaussian_entropy",
    "global_norm",
    "stable_rank",
    "unit_scores",
    "weight_difference",
    "weight_magnitude",
]
