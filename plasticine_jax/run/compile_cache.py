"""``--compile-cache``: jax's persistent compilation cache for runs started by the CLI or ``run.driver.run``.

A re-run, a ``--resume`` or another sweep cell of the same program (same config shapes, flags and jax version,
all in jax's cache key) loads the executable XLA built before instead of compiling it again: XLA's compile is
most of a learner's 3-8 s start-up on CPU. A hit is the same executable, so results do not change.
"""

from __future__ import annotations

import os
from pathlib import Path

from plasticine_jax.errors import ConfigError

MAX_BYTES = 2 * 1024**3  # the cache directory we pick ourselves is kept under this size (least recently used out)


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/plasticine-jax/xla`` (``~/.cache/plasticine-jax/xla`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "plasticine-jax" / "xla"


def enable(setting: str) -> Path | None:
    """Apply ``--compile-cache``: ``auto`` (jax's own setting, e.g. ``JAX_COMPILATION_CACHE_DIR``, when it has
    one, else ``default_dir()`` capped at ``MAX_BYTES``), ``off`` (no persistent cache), or a directory. Returns
    the directory in use (None: off). Takes effect before the process's first compile (jax decides once)."""
    import jax

    if setting == "off":
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    if setting == "auto" and jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    path = default_dir() if setting == "auto" else Path(setting).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--compile-cache {path}: cannot create it ({e.strerror}); pass a writable directory or "
                          f"off") from None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if setting == "auto":
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
