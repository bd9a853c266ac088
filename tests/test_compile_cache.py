"""``--compile-cache``: a re-run of the same program loads XLA's executable from the persistent cache (a hit, no
new entry) and logs the same rows; ``off`` writes nothing even where JAX_COMPILATION_CACHE_DIR names a cache; a
directory that cannot be made is refused in one line before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RUN = ("train", "--total-timesteps", "2000", "--num-seeds", "1", "--no-wandb", "--no-progress")


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}  # not the test run's cache
    return subprocess.run([sys.executable, "-m", "plasticine_jax", *args], capture_output=True, text=True,
                          env={**base, "JAX_PLATFORMS": "cpu", **env}, timeout=600)


def _entries(cache: Path) -> dict[str, int]:
    """Cached executables -> the last-access stamp jax's LRU cache writes beside each one on every hit."""
    return {p.name: int.from_bytes((cache / p.name.replace("-cache", "-atime")).read_bytes(), "little")
            for p in cache.glob("*-cache")}


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows]  # wall-clock speed differs


def test_auto_cache_is_hit_on_a_rerun_with_the_same_rows(tmp_path):
    cache = tmp_path / "xdg" / "plasticine-jax" / "xla"
    first = _cli(*RUN, "--out", str(tmp_path / "a"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert first.returncode == 0, first.stderr[-2000:]
    before = _entries(cache)
    assert before, "the first run cached no executable"
    second = _cli(*RUN, "--out", str(tmp_path / "b"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert second.returncode == 0, second.stderr[-2000:]
    after = _entries(cache)
    assert set(after) == set(before)  # nothing compiled anew
    assert any(after[k] > before[k] for k in before)  # and loaded from the cache
    assert _rows(tmp_path / "b") == _rows(tmp_path / "a")


def test_off_writes_no_cache_even_where_the_environment_names_one(tmp_path):
    env_cache = tmp_path / "env-cache"
    r = _cli(*RUN, "--out", str(tmp_path / "run"), "--compile-cache", "off", JAX_COMPILATION_CACHE_DIR=str(env_cache),
             XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert not any(env_cache.glob("*")) and not (tmp_path / "xdg" / "plasticine-jax").exists()


def test_unwritable_cache_dir_is_refused_before_anything_is_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = _cli(*RUN, "--out", str(tmp_path / "run"), "--compile-cache", str(blocker / "xla"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: --compile-cache {blocker / 'xla'}: cannot create it")
    assert not (tmp_path / "run").exists()
