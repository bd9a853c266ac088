"""Names, aliases and option dataclasses of every intervention; ``resolve`` turns a CLI list into hooks.

Each intervention module defines ``Options`` (a frozen dataclass: numeric fields listed in ``HPARAMS``
are vmappable, the rest static) and ``make(options) -> Intervention``.
"""

from __future__ import annotations

import importlib
from dataclasses import fields
from typing import Any

from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.base import Intervention

# canonical name -> (reference alias, module)
REGISTRY: dict[str, tuple[str, str]] = {
    "shrink_perturb": ("snp", "shrink_perturb"),
    "plasticity_injection": ("pi", "injection"),
    "redo": ("redo", "redo"),
    "reset_layers": ("rl", "reset_layers"),
    "layer_norm": ("ln", "layer_norm"),
    "normalize_project": ("nap", "normalize_project"),
    "l2": ("l2n", "l2"),
    "regenerative": ("rr", "regenerative"),
    "parseval": ("pr", "parseval"),
    "crelu": ("ca", "crelu"),
    "dff": ("dff", "dff"),
    "trac": ("trac", "trac"),
    "kron": ("kron", "kron"),
}
ALIASES = {alias: name for name, (alias, _) in REGISTRY.items()}


def canonical(name: str) -> str:
    """Canonical name for a canonical name or reference alias (case-insensitive)."""
    key = name.strip().lower().replace("-", "_")
    if key in REGISTRY:
        return key
    if key in ALIASES:
        return ALIASES[key]
    known = ", ".join(f"{n} ({a})" for n, (a, _) in REGISTRY.items())
    raise ConfigError(f"unknown intervention '{name}'; known: {known}")


def module(name: str):
    return importlib.import_module(f"plasticine_jax.interventions.{REGISTRY[canonical(name)][1]}")


def options_class(name: str) -> type:
    return module(name).Options


def parse_list(spec: str | None) -> list[str]:
    """'redo,ln,snp' -> canonical names (empty or 'none'/'vanilla' -> [])."""
    if spec is None:
        return []
    items = [s for s in (x.strip() for x in spec.split(",")) if s]
    if items in (["none"], ["vanilla"]):
        return []
    return [canonical(s) for s in items]


def resolve(names: list[str], options: dict[str, Any] | None = None) -> list[Intervention]:
    """Build the hooks of each named intervention with its options (defaults where not given)."""
    options = options or {}
    out = []
    for n in names:
        mod = module(n)
        opts = options.get(n) or mod.Options()
        out.append(mod.make(opts))
    return out


def option_fields(name: str) -> list[tuple[str, Any, Any]]:
    """(field name, type, default) of an intervention's options, for the CLI."""
    cls = options_class(name)
    return [(f.name, f.type, f.default) for f in fields(cls)]
