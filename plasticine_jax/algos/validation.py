"""Range checks for learner configs: each failure is one ``ConfigError`` line naming the flag
(``--<algo>.<field>``) and its valid range, so every learner validates the same way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from plasticine_jax.errors import ConfigError


class Checks:
    """``Checks("td3", cfg).ints("batch_size").positive("actor_lr").unit("gamma")`` -- raises on the first bad
    field."""

    def __init__(self, algo: str, cfg: Any):
        self.algo, self.cfg = algo, cfg

    def flag(self, name: str) -> str:
        return f"--{self.algo}.{name.replace('_', '-')}"

    def fail(self, name: str, what: str) -> None:
        raise ConfigError(f"{self.flag(name)} must be {what} (got {getattr(self.cfg, name)!r})")

    def ints(self, *names: str, minimum: int = 1) -> Checks:
        for k in names:
            v = getattr(self.cfg, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                self.fail(k, f"an integer >= {minimum}")
        return self

    def positive(self, *names: str) -> Checks:
        for k in names:
            if not getattr(self.cfg, k) > 0:
                self.fail(k, "> 0")
        return self

    def nonneg(self, *names: str) -> Checks:
        for k in names:
            if not getattr(self.cfg, k) >= 0:
                self.fail(k, ">= 0")
        return self

    def unit(self, *names: str, open_low: bool = True) -> Checks:
        """In (0, 1] (``open_low``) or [0, 1]."""
        for k in names:
            v = getattr(self.cfg, k)
            if not ((0 < v <= 1) if open_low else (0 <= v <= 1)):
                self.fail(k, "in (0, 1]" if open_low else "in [0, 1]")
        return self

    def one_of(self, name: str, choices: Iterable[str]) -> Checks:
        choices = tuple(choices)
        if getattr(self.cfg, name) not in choices:
            self.fail(name, "one of " + ", ".join(choices))
        return self

    def at_most(self, name: str, other: str) -> Checks:
        if getattr(self.cfg, name) > getattr(self.cfg, other):
            self.fail(name, f"<= {self.flag(other)} {getattr(self.cfg, other)}")
        return self

    def divides(self, name: str, total: int, what: str) -> Checks:
        if total % getattr(self.cfg, name):
            self.fail(name, f"a divisor of {what} = {total}")
        return self
