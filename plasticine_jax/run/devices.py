"""Runs (seeds x sweep points) spread over local devices: a 1-D mesh over the leading run axis.

Every run is independent, so the vmapped train functions are wrapped in ``jax.shard_map`` over a ``runs`` mesh
axis: each device vmaps its own slice of runs and no collective is ever needed. Carry, keys and hyperparameters
live as ``NamedSharding(mesh, P("runs"))`` arrays; the host reads logs and checkpoints them like any array.
Several hosts are not joined into one mesh (runs never communicate, and the driver reads every run's logs and
checkpoints on one host): each host runs its own seeds or sweep cells as an independent process (README
"Multi-device").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from plasticine_jax.errors import ConfigError

AXIS = "runs"


def choose_devices(num_runs: int, requested: int, host_env: bool) -> tuple[int, str | None]:
    """How many devices to split ``num_runs`` over (``requested``: 0 = all local devices), and a note when fewer
    than asked are used. Runs must divide evenly: the largest count <= the available devices that divides the
    runs is taken. Host-env backends step their simulators through one host callback: one device."""
    available = len(jax.devices())
    if requested < 0:
        raise ConfigError(f"--devices must be >= 0 (0 = every local device) (got {requested})")
    if requested > available:
        raise ConfigError(f"--devices {requested}: only {available} {jax.default_backend()} device(s) are visible; "
                          f"use --devices {available} or 0")
    want = requested or available
    if host_env:
        return 1, ("host-env backends run on one device" if want > 1 else None)
    n = max(d for d in range(1, want + 1) if num_runs % d == 0)
    note = None if n == want else (f"{num_runs} runs do not split evenly over {want} devices: using {n} "
                                   f"(make seeds x sweep points a multiple of {want} to use them all)")
    return n, note


def runs_mesh(n: int) -> Mesh | None:
    """A 1-D mesh of the first ``n`` devices over the run axis (None for one device: plain jit)."""
    return None if n <= 1 else Mesh(jax.devices()[:n], (AXIS,))


def runs_sharding(mesh: Mesh | None) -> NamedSharding | None:
    return None if mesh is None else NamedSharding(mesh, PartitionSpec(AXIS))


def shard_runs(fn: Callable, mesh: Mesh | None, n_args: int, replicated: tuple[int, ...] = ()) -> Callable:
    """``fn`` (vmapped over runs on axis 0 of every argument but ``replicated`` ones) split over ``mesh``: every
    device runs ``fn`` on its slice of runs. Identity without a mesh."""
    if mesh is None:
        return fn
    specs = tuple(PartitionSpec() if i in replicated else PartitionSpec(AXIS) for i in range(n_args))
    return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(AXIS), check_vma=False)


def put(tree: Any, mesh: Mesh | None) -> Any:
    """Place a run-major pytree on the mesh (no-op without one)."""
    sharding = runs_sharding(mesh)
    return tree if sharding is None else jax.device_put(tree, sharding)
