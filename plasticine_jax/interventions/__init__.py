"""Interventions against plasticity loss as composable pure hooks (see ``base``); names in ``registry``."""

from plasticine_jax.interventions.base import Context, Intervention, LearnerState, compose
from plasticine_jax.interventions.registry import REGISTRY, canonical, parse_list, resolve

__all__ = ["REGISTRY", "Context", "Intervention", "LearnerState", "canonical", "compose", "parse_list", "resolve"]
