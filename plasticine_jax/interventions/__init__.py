"""Interventions against plasticity loss as composable pure hooks (see ``base``); names in ``registry``."""

from plasticine_jax.interventions.base import Context, Intervention, compose
from plasticine_jax.interventions.registry import REGISTRY, canonical, parse_list, resolve

__all__ = ["REGISTRY", "Context", "Intervention", "canonical", "compose", "parse_list", "resolve"]
