"""TensorBoard event files of a run or sweep directory, under the reference's tag names, so TensorBoard dashboards
and the reference's plotting notebooks built on Plasticine's logs read our runs.

One event-file folder per run (seed x sweep point x cell): ``<tb dir>/<env>__<group>__<seed>/`` (the reference's
``{env_id}__{exp_name}__{seed}__{time}``, without the time), every logged ``charts/*``, ``losses/*`` and
``plasticity/*`` value as a scalar at x = the run's global env step, and
``add_text("hyperparameters", markdown table)`` of the run's config, as the reference does (reference §5).

Our metric names differ from the reference's in two ways (reference §4.2 "R log names", §4.3):

* the metric: ``dormant_ratio`` -> ``dormant_units``, ``active_fraction`` -> ``active_units``,
  ``weight_difference`` -> ``l2_norm_difference``, ``gradient_norm`` -> ``grad_norm``;
* the network: our per-unit / per-torso prefix ``plasticity/actor/...`` (TD3, SAC) and ``plasticity/critic/...``
  (TD3, SAC, and PPO's separate critic torso) is the reference's ``plasticity/policy_...`` / ``value_...``.

A name is renamed only when the result is one of the reference's tags (:data:`REFERENCE_TAGS`); anything else
(e.g. ``plasticity/actor/weight_magnitude``: the reference logs only the actor+critic sum; ``plasticity/critic/q2/...``:
the reference measures one critic) keeps our name. Where the reference's families disagree we take the majority:
``feature_variance`` (PPO-Procgen, PQN, TD3), not PPO-Craftax's ``feature_var``; ``grad_norm`` (R), not N's
``gradient_norm``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from plasticine_jax.analysis.groups import is_metric

_FEATURE = ("dormant_units", "active_units", "stable_rank", "effective_rank", "feature_norm", "feature_variance")
REFERENCE_TAGS = frozenset(
    [f"plasticity/{k}" for k in (*_FEATURE, "weight_magnitude", "l2_norm_difference", "grad_norm",
                                 "policy_entropy")]
    + [f"plasticity/{n}_{k}" for n in ("policy", "value") for k in (*_FEATURE, "feature_var", "grad_norm")])
METRIC_NAMES = {"dormant_ratio": "dormant_units", "active_fraction": "active_units",
                "weight_difference": "l2_norm_difference", "gradient_norm": "grad_norm"}
NETWORK_PREFIXES = {"": "", "actor/": "policy_", "critic/": "value_"}


def reference_tag(name: str) -> str:
    """Our metric name as the reference's TensorBoard tag (unchanged where the reference has no such tag)."""
    if not name.startswith("plasticity/"):
        return name
    rest = name.removeprefix("plasticity/")
    prefix, _, leaf = rest.rpartition("/")
    prefix = prefix + "/" if prefix else ""
    if prefix not in NETWORK_PREFIXES:
        return name
    tag = "plasticity/" + NETWORK_PREFIXES[prefix] + METRIC_NAMES.get(leaf, leaf)
    return tag if tag in REFERENCE_TAGS else name


def hyperparameter_table(row) -> str:
    """The reference's ``|param|value|`` markdown table of a run's config (its constant, non-metric columns)."""
    skip = {"step", "update", "task", "group", "run", "run_name", "task_name"}
    items = [(k, v) for k, v in row.items() if not is_metric(k) and k not in skip]
    return "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in items)


def write_events(df, tb_dir: str | Path) -> list[Path]:
    """One event-file folder per run of the labelled table ``df`` (:func:`.groups.label_runs`) under ``tb_dir``;
    a folder's earlier event files (an earlier ``plot --tensorboard``) are replaced, not appended to. Each logged
    row is one event at its env step holding all of the row's finite scalars (readers see the same per-tag
    series as from one ``add_scalar`` per value, written ~30x faster)."""
    from tensorboardX import FileWriter, summary
    from tensorboardX.proto.summary_pb2 import Summary

    tb_dir = Path(tb_dir)
    metrics = [c for c in df.columns if is_metric(c)]
    tags = [reference_tag(m) for m in metrics]
    written = []
    for name, sub in df.sort_values(["update"]).groupby("run_name", sort=True):
        d = tb_dir / str(name)
        for old in d.glob("events.out.tfevents.*"):
            old.unlink()
        w = FileWriter(str(d))
        w.add_summary(summary.text("hyperparameters", hyperparameter_table(sub.iloc[0])), 0)
        vals = sub[metrics].to_numpy(float, na_value=np.nan)
        for step, row in zip(sub["step"].to_numpy(), vals, strict=True):
            ok = np.isfinite(row)
            if ok.any():
                w.add_summary(Summary(value=[Summary.Value(tag=t, simple_value=float(v))
                                             for t, v, k in zip(tags, row, ok, strict=True) if k]), int(step))
        w.close()
        written.append(d)
    return written


def read_scalars(run_tb_dir: str | Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, str]]:
    """Scalars ``{tag: [(step, value), ...]}`` and texts ``{tag: text}`` of every event file in a folder
    (TFRecord framing with masked CRC-32C checks, parsed with tensorboardX's protobufs; TensorBoard itself is
    not needed)."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    scalars: dict[str, list[tuple[int, float]]] = {}
    texts: dict[str, str] = {}
    for f in sorted(Path(run_tb_dir).glob("events.out.tfevents.*")):
        buf = f.read_bytes()
        i = 0
        while i < len(buf):
            header = buf[i:i + 8]
            (n,) = struct.unpack("Q", header)
            (hcrc,) = struct.unpack("I", buf[i + 8:i + 12])
            data = buf[i + 12:i + 12 + n]
            (dcrc,) = struct.unpack("I", buf[i + 12 + n:i + 16 + n])
            if hcrc != masked_crc32c(header) or dcrc != masked_crc32c(data):
                raise ValueError(f"{f}: corrupt record at byte {i}")
            i += 16 + n
            ev = event_pb2.Event.FromString(data)
            for v in ev.summary.value:
                if v.HasField("simple_value"):
                    scalars.setdefault(v.tag, []).append((ev.step, v.simple_value))
                elif v.HasField("tensor") and v.tensor.string_val:
                    texts[v.tag.removesuffix("/text_summary")] = v.tensor.string_val[0].decode()
    return scalars, texts


__all__ = ["METRIC_NAMES", "NETWORK_PREFIXES", "REFERENCE_TAGS", "hyperparameter_table", "read_scalars",
           "reference_tag", "write_events"]
