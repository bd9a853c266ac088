"""Runs (seeds x sweep points) spread over local devices: a 1-D mesh over the leading run axis.

Every run is independent, so each device runs the one-device program (vmapped over its own slice of runs) and no
collective is ever needed (``compile_runs``). Carry, keys and hyperparameters
live as ``NamedSharding(mesh, P("runs"))`` arrays; the host reads logs and checkpoints them like any array.
Several hosts are not joined into one mesh (runs never communicate, and the driver reads every run's logs and
checkpoints on one host): each host runs its own seeds or sweep cells as an independent process (README
"Multi-device").
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from plasticine_jax.errors import ConfigError
from plasticine_jax.run import batch_invariance

AXIS = "runs"


def choose_devices(num_runs: int, requested: int, host_env: bool) -> tuple[int, str | None]:
    """How many devices to split ``num_runs`` over (``requested``: 0 = all local devices), and a note when fewer
    than asked are used. Runs must divide evenly: the largest count <= the available devices that divides the
    runs is taken (under ``--batch-invariant``, with at least 2 runs on each device). Host-env backends step their
    simulators through one host callback: one device."""
    available = len(jax.devices())
    if requested < 0:
        raise ConfigError(f"--devices must be >= 0 (0 = every local device) (got {requested})")
    if requested > available:
        raise ConfigError(f"--devices {requested}: only {available} {jax.default_backend()} device(s) are visible; "
                          f"use --devices {available} or 0")
    want = requested or available
    if host_env:
        return 1, ("host-env backends run on one device" if want > 1 else None)
    per_device = 2 if batch_invariance.active() else 1  # one run on a device compiles another program (run_axis)
    n = max(d for d in range(1, want + 1) if num_runs % d == 0 and (d == 1 or num_runs // d >= per_device))
    if n == want:
        return n, None
    if per_device == 2:
        return n, (f"--batch-invariant keeps at least 2 runs per device: {num_runs} runs over {want} devices use {n} "
                   f"(make seeds x sweep points a multiple of {2 * want} to use them all)")
    return n, (f"{num_runs} runs do not split evenly over {want} devices: using {n} "
               f"(make seeds x sweep points a multiple of {want} to use them all)")


def runs_mesh(n: int) -> Mesh | None:
    """A 1-D mesh of the first ``n`` devices over the run axis (None for one device: plain jit)."""
    return None if n <= 1 else Mesh(jax.devices()[:n], (AXIS,))


def runs_sharding(mesh: Mesh | None) -> NamedSharding | None:
    return None if mesh is None else NamedSharding(mesh, PartitionSpec(AXIS))


def compile_runs(fn: Callable, mesh: Mesh | None, example: tuple, replicated: tuple[int, ...] = ()) -> Callable:
    """``fn`` (vmapped over runs on axis 0 of every argument but the ``replicated`` ones) compiled for ``example``
    and returned as a callable over run-major arrays.

    Without a mesh: one jit executable. With one: the same one-device program is compiled for every device (in
    parallel threads) and each device runs it on its own slice of runs; the outputs are assembled into
    ``NamedSharding(mesh, P("runs"))`` arrays. Not ``shard_map``: XLA's partitioned program rewrites a few
    operations differently (e.g. ``x / sqrt(s)`` stays a division where the one-device program multiplies by
    ``rsqrt``), so its runs would differ from one device's in the last bits; per-device dispatch keeps the very
    program a one-device run of those runs executes."""
    if mesh is None:
        return jax.jit(fn).lower(*example).compile()
    devs = list(mesh.devices.flat)
    sharding = runs_sharding(mesh)

    def local(args: tuple, i: int) -> tuple:
        return tuple(a if j in replicated else jax.tree.map(lambda x: _shard_on(x, devs[i]), a)
                     for j, a in enumerate(args))

    jitted = jax.jit(fn)
    with ThreadPoolExecutor(len(devs)) as pool:  # XLA compiles without the GIL: the devices compile in parallel
        compiled = list(pool.map(lambda i: jitted.lower(*local(example, i)).compile(), range(len(devs))))

    def call(*args):
        outs = [c(*local(args, i)) for i, c in enumerate(compiled)]  # dispatch is asynchronous: devices overlap
        return jax.tree.map(lambda *xs: jax.make_array_from_single_device_arrays(
            (sum(x.shape[0] for x in xs), *xs[0].shape[1:]), sharding, list(xs)), *outs)

    return call


def _shard_on(x: jax.Array, device) -> jax.Array:
    """The slice of a run-sharded array that lives on ``device``."""
    for s in x.addressable_shards:
        if s.device == device:
            return s.data
    raise ValueError(f"no shard of this array lives on {device}")


def put(tree: Any, mesh: Mesh | None) -> Any:
    """Place a run-major pytree on the mesh (no-op without one)."""
    sharding = runs_sharding(mesh)
    return tree if sharding is None else jax.device_put(tree, sharding)
