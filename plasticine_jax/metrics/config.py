"""When and how plasticity metrics are computed in-graph."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricsConfig:
    """Heavy metrics (dormant, ranks, features) run every ``every`` updates (0 = off) on the last minibatch
    of that update (the reference's choice); cheap ones (norms, gradient norm, entropy) run every update."""

    every: int = 10
    tau: float = 0.025  # dormant threshold (reference: 0.025; Craftax 0.05)
    dormant_formula: str = "redo"  # redo (ratio of expectations, the paper) | june (reference's per-sample)
    feature_variance_across: str = "features"  # features (reference) | batch (per-unit variance)
