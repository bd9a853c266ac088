"""plasticine-jax: plasticity research in deep RL as one jit/vmap-compiled function."""

import os as _os

# jaxlib 0.10.2's CPU "concurrency-optimized" thunk scheduler deadlocks on some programs that run several
# LAPACK QR calls (orthogonal inits) under vmap -- every worker waits, the run never ends (reproduced with a
# vmapped two-tower init). Turning that scheduler off fixes it at a ~10% CPU throughput cost. Set before
# the XLA backend starts; a user's own XLA_FLAGS are kept.
_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "xla_cpu_enable_concurrency_optimized_scheduler" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

__version__ = "0.1.0"
