"""Where logged rows go between compiled chunks: JSONL file, W&B (offline by default), console progress."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any


def to_jsonable(x: Any) -> Any:
    """Nested dicts/lists with non-finite floats as None, so json.dumps writes valid JSON (null)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class JsonlSink:
    """One JSON object per run per logged update; non-finite floats become null (valid JSON)."""

    def __init__(self, path: Path):
        self.f = open(path, "a")  # noqa: SIM115 - closed in close()

    def write(self, row: dict) -> None:
        self.f.write(json.dumps(to_jsonable(row)) + "\n")

    def flush(self) -> int:
        """Flush to disk (fsync, so a checkpoint never counts rows a crash could lose); returns the file size."""
        self.f.flush()
        os.fsync(self.f.fileno())
        return self.f.tell()

    def close(self) -> None:
        self.f.flush()
        self.f.close()


class WandbSink:
    """One W&B run for the whole vmapped experiment: per-run keys ``<label>/<metric>`` plus the mean over
    runs. Offline unless ``--track``; any W&B failure is reported once and logging goes on without it.
    ``run_id`` (a resumed run) continues that W&B run instead of starting a new one."""

    def __init__(self, out: Path, cfg: Any, labels: list[dict], run_id: str | None = None):
        self.run = None
        self.labels = labels
        try:
            from dataclasses import asdict

            import wandb

            mode = "online" if cfg.run.track else "offline"
            os.environ.setdefault("WANDB_SILENT", "true")
            group = cfg.run.wandb_group or f"{cfg.run.env}__{'+'.join(cfg.interventions) or 'vanilla'}"
            self.run = wandb.init(
                project=cfg.run.wandb_project, entity=cfg.run.wandb_entity, group=group, mode=mode,
                dir=str(out), config={"run": asdict(cfg.run), cfg.run.algo: asdict(cfg.algo_cfg),
                                      "interventions": list(cfg.interventions)},
                name=Path(cfg.run.out).name, reinit="create_new",
                **({"id": run_id, "resume": "allow"} if run_id else {}),
            )
        except Exception as e:  # a missing network or broken install never fails a run
            print(f"warning: W&B disabled ({type(e).__name__}: {str(e).splitlines()[0][:120]})", file=sys.stderr)
            self.run = None

    @property
    def run_id(self) -> str | None:
        """The W&B run id (saved in checkpoints so a resumed run logs into the same W&B run)."""
        return None if self.run is None else self.run.id

    def log_chunk(self, rows: list[dict]) -> None:
        if self.run is None or not rows:
            return
        try:
            by_step: dict[int, dict] = {}
            for row in rows:
                tag = "_".join(f"{k}{row[k]}" for k in self.labels[0])
                d = by_step.setdefault(row["step"], {})
                for k, v in row.items():
                    if "/" in k and isinstance(v, float) and math.isfinite(v):
                        d[f"{tag}/{k}"] = v
                        d.setdefault(f"mean/{k}", []).append(v)
            for step, d in sorted(by_step.items()):
                flat = {k: (sum(v) / len(v) if isinstance(v, list) else v) for k, v in d.items()}
                self.run.log(flat, step=step)
        except Exception as e:
            print(f"warning: W&B logging stopped ({type(e).__name__}: {e})", file=sys.stderr)
            self.run = None

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception:
                pass


class Progress:
    """Console progress: steps, SPS, ETA and mean return (rich bar on a TTY, plain lines otherwise)."""

    def __init__(self, total: int, enabled: bool = True):
        self.total = total
        self.enabled = enabled
        self.t0 = time.time()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("[bold]train"), BarColumn(),
                                    TextColumn("{task.completed:,}/{task.total:,}"), TextColumn("{task.fields[info]}"),
                                    TimeRemainingColumn(), transient=False)
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, info="")

    def update(self, steps: int, sps: float, mean_return: float) -> None:
        if not self.enabled:
            return
        info = f"SPS {sps:,.0f} | return {mean_return:.1f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=steps, info=info)
        else:
            eta = (self.total - steps) / max(sps, 1e-9)
            print(f"steps {steps:,}/{self.total:,} | {info} | ETA {eta:.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
