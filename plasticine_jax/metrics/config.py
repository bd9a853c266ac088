"""When and how plasticity metrics are computed in-graph."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricsConfig:
    """Heavy metrics run every ``every`` updates (0 = off). ``cadence="update"``: dormant ratio and feature
    metrics on that update's metric batch (the last minibatch for PPO). ``cadence="minibatch"`` (the
    reference's PPO cadence, §4.2): feature metrics on every minibatch before its step, averaged over the
    update, and the dormant ratio every ``every`` updates on the last minibatch. Cheap metrics (weight
    norms, gradient norm, entropy) run every update."""

    every: int = 10
    tau: float = 0.025  # dormant threshold (reference: 0.025; Craftax 0.05)
    dormant_formula: str = "redo"  # redo (ratio of expectations, the paper) | june (reference's per-sample)
    feature_variance_across: str = "features"  # features (reference) | batch (per-unit variance)
    cadence: str = "update"  # update | minibatch (see the class docstring)
