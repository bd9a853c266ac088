"""Checkpoints of a run and exact resume.

A checkpoint is one orbax step directory under ``<out>/checkpoints/<updates done>/`` holding two items: ``state``,
the driver's whole vmapped carry (``RunState``: every unit's params, optimizer, target and intervention state,
env state, RNG keys, step/update/task counters and, unless ``--no-checkpoint-buffer``, the replay buffer), and
``position``, a small JSON saying where the driver stood (updates done, metrics rows and bytes written, chunk
size, package and jax versions, a hash of the resolved config, a checksum of the state).

Why this resumes bit-for-bit: the driver compiles the same chunk function from the same config, restarts at a
chunk boundary with the identical carry, and every update is a pure function of the carry and the update index.

Atomicity comes from orbax: a step is written into ``<step>.orbax-checkpoint-tmp`` and renamed to ``<step>``
only once every item is committed, and orbax lists only renamed steps, so a save cut short leaves a tmp
directory that is never read (and is removed by the next resumed run). The checksum in ``position`` catches
a finalized checkpoint damaged later on disk.

Host envs (``envpool:``, ``dmc:``) keep their simulators in C++/Python outside the carry; their state cannot be
saved, so a resumed host-env run restarts its envs (fresh episodes) and restores everything else.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from plasticine_jax.errors import ConfigError

DIRNAME = "checkpoints"
HOST_BACKENDS = ("envpool", "dmc")  # simulators outside the compiled graph: their state is not in the carry
# Run options that steer this process but not the results: they may differ between a run and its resume.
_RUN_CONTROL = ("out", "overwrite", "resume", "stop_after_chunks", "progress", "devices", "compile_cache")
# checked separately (jax version, device split in the driver) or irrelevant to results
_NOT_CONFIG = ("devices", "run_devices", "jax_version", "argv")


class AlreadyFinished(Exception):  # noqa: N818 - an outcome, not an error
    """``--resume`` of a run whose final checkpoint exists: nothing to do (the CLI exits 0)."""


class RunStopped(Exception):  # noqa: N818 - an outcome, not an error
    """``--stop-after-chunks`` ended the process early, as a kill would (the CLI exits 0)."""


@dataclass(frozen=True)
class Position:
    """Where the driver stood when the checkpoint was written (saved as JSON beside the state)."""

    updates_done: int
    num_updates: int
    chunk_updates: int
    rows_written: int  # metrics.jsonl lines belonging to the checkpoint; later lines are dropped on resume
    metrics_bytes: int  # metrics.jsonl size at the checkpoint
    package_version: str
    jax_version: str
    config_hash: str
    buffer_saved: bool
    finished: bool
    train_time_s: float  # training wall time so far, summed over resumed processes
    state_crc32: str  # checksum of every state leaf, checked after restore
    wandb_id: str | None = None  # the W&B run a resumed run goes on logging into


def is_host_env(env_id: str) -> bool:
    """Whether the env backend runs on the host, so its simulator state is not part of the carry."""
    return env_id.split(":", 1)[0] in HOST_BACKENDS


def config_view(config: dict) -> dict:
    """The part of a resolved config (config.json) that must match for a resume: everything but process
    control (output dir, progress bar, --resume, --stop-after-chunks), devices and the recorded argv."""
    view = {k: v for k, v in config.items() if k not in _NOT_CONFIG}
    view["run"] = {k: v for k, v in config["run"].items() if k not in _RUN_CONTROL}
    return view


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON of ``config_view(config)``."""
    return hashlib.sha256(json.dumps(config_view(config), sort_keys=True).encode()).hexdigest()


def first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The first dotted key where two JSON trees differ, as ``key: a != b`` (None when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
            if d is not None:
                return d
        return None
    return None if a == b else f"{prefix[:-1] or 'config'}: {b!r} != saved {a!r}"


def _pack(tree: Any) -> Any:
    """Zero-size leaves (MJX env states carry some) as 0-d placeholders: orbax refuses to save zero-size arrays,
    and they hold no data; ``_unpack`` gives them back their shapes."""
    def one(x):
        if x.size:
            return x
        return jax.ShapeDtypeStruct((), x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else np.zeros((), x.dtype)

    return jax.tree.map(one, tree)


def _unpack(tree: Any, abstract: Any) -> Any:
    return jax.tree.map(lambda ref, x: np.zeros(ref.shape, ref.dtype) if ref.size == 0 else x, abstract, tree)


def state_crc32(tree: Any) -> str:
    """CRC32 over every leaf's dtype, shape and bytes, in tree order (corruption check, not security)."""
    crc = 0
    for leaf in jax.tree.leaves(tree):
        a = np.ascontiguousarray(leaf)
        crc = zlib.crc32(f"{a.dtype}{a.shape}".encode(), crc)
        crc = zlib.crc32(a.tobytes() if a.size == 0 else memoryview(a).cast("B"), crc)  # zero-size: no bytes
    return f"{crc:08x}"


def buffer_nbytes(carry: Any) -> int:
    """Bytes of the replay buffers in a (vmapped) carry; 0 for learners without one."""
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(carry.buffer)) if carry.buffer is not None else 0


@contextmanager
def _stderr_held() -> Iterator[None]:
    """Hold back what C++ threads write to stderr (fd 2) inside the block, and drop it when the block raises:
    a failed orbax read leaves tensorstore callbacks that print 'Event loop is closed' tracebacks after the
    error, which would bury the one line that names the problem. Kept and re-emitted on success."""
    import os
    import sys
    import tempfile
    import time

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            time.sleep(1.0)  # let the stragglers print into the held file
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence orbax's absl warnings (read-only manager notes and the like) around a call."""
    from absl import logging as absl_logging

    old = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(old)


def _manager(directory: Path, keep: int | None, read_only: bool):
    import orbax.checkpoint as ocp

    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, read_only=read_only, create=not read_only,
                                        cleanup_tmp_directories=not read_only, enable_async_checkpointing=True)
    return ocp.CheckpointManager(directory, options=opts, item_names=("state", "position"))


class Checkpointer:
    """Writes a run's checkpoints into ``<out>/checkpoints``, keeping the last ``keep``. Saves are
    asynchronous (training goes on while orbax writes); ``close`` waits for the last one. The replay buffers'
    size is printed at the first save of a run (``told``: already printed by the process that started it)."""

    def __init__(self, out: Path, keep: int, save_buffer: bool, told: bool = False):
        self.directory = (out / DIRNAME).absolute()
        self.save_buffer = save_buffer
        self.told = told
        with _quiet():
            self.manager = _manager(self.directory, keep, read_only=False)

    def save(self, carry: Any, position: Position) -> None:
        """Save ``carry`` (device arrays are copied to the host first) with ``position``; step = updates done."""
        import orbax.checkpoint as ocp

        if not self.told:
            self._tell(carry)
        buffer_saved = self.save_buffer or carry.buffer is None
        if not self.save_buffer:
            carry = carry.replace(buffer=None)
        host = jax.device_get(carry)
        position = Position(**{**asdict(position), "buffer_saved": buffer_saved, "state_crc32": state_crc32(host)})
        with _quiet():
            self.manager.save(position.updates_done, args=ocp.args.Composite(
                state=ocp.args.StandardSave(_pack(host)), position=ocp.args.JsonSave(asdict(position))))

    def _tell(self, carry: Any) -> None:
        import sys

        self.told = True
        n = buffer_nbytes(carry)
        if n and self.save_buffer:
            print(f"checkpoints in {self.directory} hold the replay buffers ({n / 2**20:,.1f} MiB); "
                  f"--no-checkpoint-buffer leaves them out", file=sys.stderr)
        elif n:
            print("checkpoints leave out the replay buffers (--no-checkpoint-buffer): this off-policy run cannot be "
                  "resumed", file=sys.stderr)

    def close(self) -> None:
        """Wait for a pending save and release orbax's threads."""
        with _quiet():
            self.manager.wait_until_finished()
            self.manager.close()


def read_position(out: Path, config: dict, saved_config: dict) -> tuple[int, Position]:
    """Validate the latest checkpoint of ``out`` against the config resolved now, without touching anything.
    Returns (orbax step, position); raises ``AlreadyFinished`` for a finished run and ``ConfigError`` (one
    line naming the problem and the fix) for a missing, unreadable or mismatched checkpoint."""
    import plasticine_jax

    directory = (out / DIRNAME).absolute()
    fresh = f"start the run again without --resume (python -m plasticine_jax train ... --out {out} --overwrite)"
    steps: list[int] = []
    if directory.is_dir():
        with _quiet():
            try:
                steps = list(_manager(directory, None, read_only=True).all_steps())
            except Exception:
                steps = []
    if not steps:
        raise ConfigError(f"--resume: no checkpoint in {directory} (the run stopped before its first one); {fresh}")
    step = max(steps)
    try:
        import orbax.checkpoint as ocp

        with _quiet():
            raw = _manager(directory, None, read_only=True).restore(
                step, args=ocp.args.Composite(position=ocp.args.JsonRestore()))["position"]
        position = Position(**raw)
    except Exception as e:
        raise ConfigError(f"--resume: checkpoint {directory / str(step)} is unreadable ({type(e).__name__}); "
                          f"{_older(directory, steps, step, fresh)}") from None
    if position.package_version != plasticine_jax.__version__:
        raise ConfigError(f"--resume: the checkpoint was written by plasticine-jax {position.package_version}, this "
                          f"is {plasticine_jax.__version__}; resume with pip install "
                          f"plasticine-jax=={position.package_version}, or {fresh}")
    if position.jax_version != jax.__version__:
        raise ConfigError(f"--resume: the checkpoint was written with jax {position.jax_version}, this is "
                          f"{jax.__version__}; resume with jax=={position.jax_version} (results stay exact only "
                          f"then), or {fresh}")
    if position.config_hash != config_hash(config):
        diff = first_difference(config_view(saved_config), config_view(config)) or "config.json was edited"
        raise ConfigError(f"--resume: the config resolved now differs from the checkpoint's ({diff}); give only "
                          f"--resume {out} to continue with the saved flags, or {fresh}")
    if position.finished:
        raise AlreadyFinished(f"run in {out} already finished ({position.num_updates} updates); nothing to do")
    if not position.buffer_saved:
        raise ConfigError(f"--resume: the checkpoint holds no replay buffer (--no-checkpoint-buffer), so this "
                          f"off-policy run cannot continue exactly; {fresh}")
    return step, position


def _older(directory: Path, steps: list[int], step: int, fresh: str) -> str:
    older = sorted(s for s in steps if s < step)
    if older:
        return f"delete {directory / str(step)} to resume from the previous checkpoint (update {older[-1]})"
    return fresh


def restore(out: Path, step: int, position: Position, template: Any, host_env: bool) -> Any:
    """The carry saved at ``step``, as device arrays shaped like ``template`` (a freshly initialised carry of
    the same config). Host-env runs keep the template's fresh env state and observations (their simulators
    restart). Raises ``ConfigError`` when the state cannot be read or fails its checksum."""
    import orbax.checkpoint as ocp

    directory = (out / DIRNAME).absolute()
    target = template if position.buffer_saved else template.replace(buffer=None)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), jax.device_get(target))
    problem = None
    try:
        with _quiet(), _stderr_held():
            state = _manager(directory, None, read_only=True).restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_pack(abstract))))["state"]
        state = _unpack(state, abstract)
        if state_crc32(state) != position.state_crc32:
            problem = "its state fails the checksum"
    except Exception as e:
        problem = f"its state is unreadable ({type(e).__name__})"
    if problem:
        with _quiet():
            steps = list(_manager(directory, None, read_only=True).all_steps())
        fresh = f"start the run again without --resume (python -m plasticine_jax train ... --out {out} --overwrite)"
        raise ConfigError(f"--resume: checkpoint {directory / str(step)} is corrupt: {problem}; "
                          f"{_older(directory, steps, step, fresh)}")
    state = jax.tree.map(lambda ref, x: jax.device_put(np.asarray(x, ref.dtype), ref.sharding), target, state)
    if template.buffer is not None and not position.buffer_saved:
        state = state.replace(buffer=template.buffer)
    if host_env:
        state = state.replace(env_state=template.env_state, obs=template.obs)
    return state


def read_rows(out: Path, position: Position) -> list[dict]:
    """The metrics rows written up to the checkpoint (nulls back to NaN); raises ``ConfigError`` when
    metrics.jsonl holds fewer bytes or rows than the checkpoint recorded."""
    path = out / "metrics.jsonl"
    data = path.read_bytes()[:position.metrics_bytes] if path.exists() else b""
    lines = data.decode(errors="replace").splitlines()
    if len(data) != position.metrics_bytes or len(lines) != position.rows_written or \
            (data and not data.endswith(b"\n")):
        raise ConfigError(f"--resume: {path} holds less than the checkpoint's {position.rows_written} rows (it was "
                          f"edited or truncated); start the run again without --resume (--overwrite)")
    rows = [json.loads(line) for line in lines]
    return [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in rows]


def truncate_metrics(out: Path, position: Position) -> None:
    """Drop metrics rows written after the checkpoint (the resumed run writes them again)."""
    with open(out / "metrics.jsonl", "r+b") as f:
        f.truncate(position.metrics_bytes)


def latest_state(out: Path) -> tuple[Any, dict]:
    """The latest checkpoint's state as a tree of numpy arrays (nested dicts, no template) and its position
    dict: for analysis notebooks and tests. Zero-size leaves come back as 0-d placeholders (``_pack``);
    ``run.load.load_final_state`` restores them with their shapes."""
    import orbax.checkpoint as ocp

    directory = (out / DIRNAME).absolute()
    with _quiet():
        m = _manager(directory, None, read_only=True)
        step = m.latest_step()
        if step is None:
            raise ConfigError(f"no checkpoint in {directory}")
        got = m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                      position=ocp.args.JsonRestore()))
    return got["state"], got["position"]
