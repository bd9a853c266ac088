"""Shared test settings: CPU only, W&B offline and inside the test's tmp dirs, and one persistent XLA
compilation cache for the whole run."""

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Many tests compile the same small programs (the CLI's defaults, a learner's tiny config), in-process and in the
# CLI subprocesses they start. One persistent compilation cache per test run, shared by the xdist workers and,
# through the environment, by those subprocesses, compiles each once. A hit returns the executable XLA built for
# the same program, flags and jax version (all in the cache key), so no result changes; it only saves time.
# The pytest process that imports this first (the xdist controller) names it; its workers inherit the environment.
XLA_CACHE = Path(tempfile.gettempdir()) / f"plasticine-jax-tests-xla-{os.getpid()}"
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(XLA_CACHE)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.3"


def pytest_configure(config):
    import jax  # a plugin may have imported jax before this file set the environment

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")))


def pytest_sessionfinish(session, exitstatus):
    if not os.environ.get("PYTEST_XDIST_WORKER") and os.environ["JAX_COMPILATION_CACHE_DIR"] == str(XLA_CACHE):
        shutil.rmtree(XLA_CACHE, ignore_errors=True)  # the controller, once every worker is done
