"""Action/observation space descriptions (static Python data, never traced)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Discrete:
    """n discrete actions, encoded as int32 in [0, n)."""

    n: int
    shape: tuple[int, ...] = ()
    dtype: str = "int32"


@dataclass(frozen=True)
class Box:
    """A real-valued box; low/high are per-element bounds (tuples so the space stays hashable)."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def low_array(self) -> np.ndarray:
        return np.asarray(self.low, np.float32).reshape(self.shape)

    @property
    def high_array(self) -> np.ndarray:
        return np.asarray(self.high, np.float32).reshape(self.shape)


Space = Discrete | Box
