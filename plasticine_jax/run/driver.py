"""Chunked driver: compile ``run_updates`` once, run it chunk by chunk over vmapped seeds (x sweep points),
and between chunks flush logs (progress bar, JSONL, W&B). The compiled function never calls the host.
It talks to the ``Learner`` protocol (``algos.learner``), never to a particular algorithm."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from plasticine_jax.algos import registry
from plasticine_jax.algos.learner import Learner
from plasticine_jax.config import RunConfig, parse_sweep
from plasticine_jax.envs.tasks import describe as describe_tasks
from plasticine_jax.errors import ConfigError
from plasticine_jax.interventions.registry import resolve
from plasticine_jax.run import batch_invariance, compile_cache, devices
from plasticine_jax.run import checkpoint as ckpt
from plasticine_jax.run.run_axis import over_runs
from plasticine_jax.run.sinks import JsonlSink, Progress, WandbSink, to_jsonable


@dataclass
class RunResult:
    """What a finished run returns to the caller (the CLI prints ``summary``)."""

    rows: list[dict]
    final_returns: np.ndarray  # [runs] mean episodic return over the last logged rows
    seeds: list[int]
    sweep: list[dict]
    wall_time: float
    compile_time: float
    env_steps: int
    per_task: list[dict] = field(default_factory=list)  # continual runs: one row per (run, task); see task_results
    diverged: list[dict] = field(default_factory=list)  # --on-divergence continue: runs frozen (update, quantity)


def build_learner(cfg: RunConfig) -> Learner:
    """The configured learner (``make_train`` of the algorithm's module), interventions composed."""
    ivs = resolve(list(cfg.interventions), cfg.intervention_options)
    module = registry.learner_module(cfg.run.algo)
    continual = cfg.continual if cfg.continual.enabled else None
    return module.make_train(cfg.algo_cfg, cfg.run.env, cfg.run.total_timesteps, ivs, cfg.metrics,
                             continual=continual)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output directory {out} is not empty; choose a new --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "config.json", "summary.json"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / ckpt.DIRNAME, ignore_errors=True)  # an old run's checkpoints must never be resumed


def resolved_config_dict(cfg: RunConfig, learner: Learner, seeds: list[int], sweep: list[dict]) -> dict:
    """The fully resolved configuration written to config.json (the learner's own section under its name)."""
    return to_jsonable({
        "run": asdict(cfg.run),
        **learner.config_dict(),
        "metrics": asdict(cfg.metrics),
        "preset": cfg.scenario,
        "continual": {**asdict(cfg.continual), **describe_tasks(cfg.continual, learner.env)},
        "interventions": list(cfg.interventions),
        "intervention_options": {k: asdict(v) for k, v in cfg.intervention_options.items()},
        "hparams": learner.default_hparams(),
        "sweep": sweep,
        "seeds": seeds,
        "num_updates": learner.num_updates,
        "env_steps_per_update": learner.env_steps_per_update,
        "warnings": list(learner.warnings),
        "jax_version": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    })


def run(cfg: RunConfig, argv: list[str] | None = None) -> RunResult:
    """Train every (sweep point x seed) in one vmapped, chunk-compiled loop and write the outputs, saving
    checkpoints as it goes (``run.checkpoint``). With ``cfg.run.resume`` set, continue the run in that
    directory from its latest checkpoint instead: validated before anything in it is touched. ``argv`` (the
    command line) is recorded in config.json so ``--resume`` can rebuild the config."""
    opts = cfg.run
    if opts.batch_invariant:
        batch_invariance.enable()  # from Python: only in a process whose backend has not started yet
    compile_cache.enable(opts.compile_cache)  # before this process's first compile
    learner = build_learner(cfg)
    sweep = list(parse_sweep(opts.sweep, learner.default_hparams()))
    seeds = [opts.seed + i for i in range(opts.num_seeds)]
    runs = [(s, p) for p in sweep for s in seeds]
    n_dev, note = devices.choose_devices(len(runs), opts.devices, ckpt.is_host_env(opts.env))  # before any write
    out = Path(opts.resume or opts.out)
    config = {**resolved_config_dict(cfg, learner, seeds, sweep), "run_devices": n_dev}
    resume: tuple[int, ckpt.Position] | None = None
    if opts.resume:
        saved = _saved_config(out)
        resume = ckpt.read_position(out, config, saved)  # raises before anything is touched
        if saved.get("run_devices", 1) != n_dev:
            raise ConfigError(f"--resume: the run was split over {saved.get('run_devices', 1)} device(s), this "
                              f"process would use {n_dev}; resume with --devices {saved.get('run_devices', 1)} "
                              f"(a resume is bit-exact only on the same split)")
    else:
        _prepare_out(out, opts.overwrite)
    for line in learner.warnings:  # only once the input is known to be good
        print(f"warning: {line}", file=sys.stderr)
    if note:
        print(f"note: {note}", file=sys.stderr)
    if resume is None:
        recorded = {} if argv is None else {"argv": list(argv)}  # no argv: started from Python, resumed from Python
        (out / "config.json").write_text(json.dumps({**config, **recorded}, indent=2))

    keys = jnp.stack([jax.random.PRNGKey(s) for s, _ in runs])
    hp = {k: jnp.asarray([p.get(k, v) for _, p in runs], jnp.float32) for k, v in learner.default_hparams().items()}
    n_updates = learner.num_updates
    every = log_every(cfg)
    chunk = chunk_updates(n_updates, every, opts.chunk_updates)
    if resume is not None and (resume[1].chunk_updates, resume[1].num_updates) != (chunk, n_updates):
        raise ConfigError(f"--resume: the checkpoint's chunks ({resume[1].chunk_updates} of {resume[1].num_updates} "
                          f"updates) differ from this run's ({chunk} of {n_updates}); start it again without --resume")

    mesh = devices.runs_mesh(n_dev)
    keys, hp = devices.put((keys, hp), mesh)
    t0 = time.time()
    carry, run_chunk = compile_programs(learner, mesh, keys, hp, chunk)
    jax.block_until_ready(carry)
    compile_time = time.time() - t0
    rows: list[dict] = []
    done, train_before = 0, 0.0
    if resume is not None:  # every check passes before the first write to the out dir
        step_, pos = resume
        carry = ckpt.restore(out, step_, pos, carry, ckpt.is_host_env(opts.env))
        rows = ckpt.read_rows(out, pos)
        ckpt.truncate_metrics(out, pos)
        done, train_before = pos.updates_done, pos.train_time_s
        print(f"resuming {out} from its checkpoint at update {done}/{n_updates}", file=sys.stderr)
        if ckpt.is_host_env(opts.env):
            print(f"note: {opts.env.split(':')[0]} envs run outside the compiled graph and their simulator state is "
                  f"not checkpointed; they restart from fresh episodes (everything else is restored)",
                  file=sys.stderr)
    labels = [{"seed": s, **{k: v for k, v in p.items()}} for s, p in runs]
    jsonl = JsonlSink(out / "metrics.jsonl")
    wandb = None if opts.no_wandb else WandbSink(out, cfg, labels, resume[1].wandb_id if resume else None)
    steps_per_update = learner.env_steps_per_update
    total_steps = n_updates * steps_per_update
    progress = Progress(total_steps * len(runs), enabled=opts.progress)
    saver = ckpt.Checkpointer(out, opts.checkpoint_keep, opts.checkpoint_buffer, told=resume is not None)
    version = _package_version()

    def position(finished: bool) -> ckpt.Position:
        return ckpt.Position(
            updates_done=done, num_updates=n_updates, chunk_updates=chunk, rows_written=len(rows),
            metrics_bytes=jsonl.flush(), package_version=version, jax_version=jax.__version__,
            config_hash=ckpt.config_hash(config), buffer_saved=True, finished=finished,
            train_time_s=train_before + time.time() - t_train, state_crc32="",
            wandb_id=None if wandb is None else wandb.run_id)

    t_train = time.time()
    chunks_run, done_before = 0, done
    diverged: list[dict] = []
    try:
        while done < n_updates:
            n = min(chunk, n_updates - done)
            t_chunk = time.time()
            carry, outs = run_chunk(carry, done, n)
            outs = jax.tree.map(lambda x, n=n: np.asarray(x)[:, :n], outs)  # blocks until the chunk is done
            chunk_sps = n * steps_per_update * len(runs) / max(time.time() - t_chunk, 1e-9)
            new_rows = []
            first = 0  # the first update of this chunk not yet covered by a logged row
            for j in range(n):
                u = done + j
                if (u + 1) % every and u + 1 != n_updates:
                    continue
                for r, label in enumerate(labels):
                    row = {**label, "step": (u + 1) * steps_per_update, "update": u + 1}
                    row.update({k: float(v[r, j]) for k, v in outs.items()})
                    row.update(window_episode_stats(outs, r, first, j))
                    row["task"] = int(row.get("charts/current_task", 0))
                    row["charts/SPS"] = chunk_sps
                    new_rows.append(row)
                    jsonl.write(row)
                first = j + 1
            rows.extend(new_rows)
            done += n
            elapsed = time.time() - t_train
            sps = (done - done_before) * steps_per_update * len(runs) / max(elapsed, 1e-9)
            recent = outs["charts/episodic_return"]
            progress.update(done * steps_per_update * len(runs), sps, float(np.nanmean(recent)) if
                            np.isfinite(recent).any() else float("nan"))
            if wandb is not None:
                wandb.log_chunk(new_rows)
            diverged = _check_divergence(carry, labels, steps_per_update, opts.on_divergence, diverged, out)
            chunks_run += 1
            if done < n_updates and opts.checkpoint_every and chunks_run % opts.checkpoint_every == 0:
                saver.save(carry, position(False))
            if opts.stop_after_chunks and chunks_run >= opts.stop_after_chunks and done < n_updates:
                raise ckpt.RunStopped(f"stopped after {chunks_run} chunk(s) at update {done}/{n_updates} "
                                      f"(--stop-after-chunks); continue with: python -m plasticine_jax train "
                                      f"--resume {out}")
        wall = train_before + time.time() - t_train
        final = _final_returns(rows, labels)
        per_task = task_results(rows, labels) if cfg.continual.enabled else []
        result = RunResult(rows, final, seeds, sweep, wall, compile_time, total_steps, per_task, diverged)
        (out / "summary.json").write_text(json.dumps(to_jsonable(summary_dict(result, labels)), indent=2))
        saver.save(carry, position(True))  # after summary.json: a finished checkpoint means a finished run
    finally:
        progress.close()
        jsonl.close()
        saver.close()
        if wandb is not None:
            wandb.finish()
    return result


def _saved_config(out: Path) -> dict:
    """config.json of the run in ``out`` (``--resume``), or a one-line ConfigError."""
    try:
        return json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        raise ConfigError(f"--resume: {out / 'config.json'} is missing or unreadable; --resume takes the --out "
                          f"directory of a run started by python -m plasticine_jax train") from None


def _package_version() -> str:
    import plasticine_jax

    return plasticine_jax.__version__


def divergence_label(d: dict) -> str:
    """The run of a divergence record (``summary.json``'s ``diverged``): ``seed 0, learning_rate 1e+08``."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items()
                     if k not in ("update", "step", "quantity"))


def log_every(cfg: RunConfig) -> int:
    """Updates between logged rows: ``--log-every``, else the metrics cadence, else 10."""
    return cfg.run.log_every or (cfg.metrics.every if cfg.metrics.every > 0 else 10)


def chunk_updates(n_updates: int, every: int, requested: int = 0) -> int:
    """Updates per compiled chunk: ``requested`` (``--chunk-updates``), else about a twentieth of the run in whole
    logging periods; never more than the run."""
    return min(requested or max(every, math.ceil(n_updates / 20 / every) * every), n_updates)


def compile_programs(learner: Learner, mesh, keys: jax.Array, hp: dict, chunk: int) -> tuple[Any, Any]:
    """(the fresh carry, the chunk executable ``(carry, start, count) -> (carry, metrics)``).

    One executable serves every chunk: it runs ``count`` <= ``chunk`` updates (a traced trip count), so the last,
    shorter chunk needs no second compile of the whole update. It is lowered from the fresh carry, never a
    restored one (restored arrays lose jax's weak types), so a resumed run runs the very executable of the
    uninterrupted run; with several devices every device runs the one-device program on its own slice of runs
    (``devices.compile_runs``). (Compiling init in a thread meanwhile gained nothing on 2 cores: XLA:CPU's own
    compile already keeps ~1.6 cores busy.)"""
    vstep = over_runs(learner.run_updates, in_axes=(0, None, None, None))

    def chunk_fn(carry, start, count):
        return vstep(carry, start, chunk, count)

    fresh = devices.compile_runs(over_runs(learner.init), mesh, (keys, hp))(keys, hp)
    return fresh, devices.compile_runs(chunk_fn, mesh, (fresh, 0, chunk), replicated=(1, 2))


def _check_divergence(carry: Any, labels: list[dict], steps_per_update: int, mode: str, known: list[dict],
                      out: Path) -> list[dict]:
    """Read the learners' in-graph divergence guard (``RunState.diverged``: per run, 1 + the update whose params
    first went non-finite, and which quantity went first). ``stop``: raise one line naming the run, update, env
    step and quantity (before this chunk is checkpointed, so the last checkpoint is the last good state).
    ``continue``: one line per newly diverged run (frozen in-graph at its last finite params), and the list of
    diverged runs for summary.json."""
    from plasticine_jax.algos.learner import DIVERGENCE_QUANTITIES

    updates = np.asarray(carry.diverged).reshape(-1)
    what = np.asarray(carry.diverged_what).reshape(-1)
    found = []
    for r, label in enumerate(labels):
        if updates[r] > 0:
            found.append({**label, "update": int(updates[r]), "step": int(updates[r]) * steps_per_update,
                          "quantity": DIVERGENCE_QUANTITIES[int(what[r]) - 1]})
    new = [d for d in found if d not in known]
    for d in new:
        msg = (f"{divergence_label(d)} diverged at update {d['update']} (env step {d['step']:,}): "
               f"non-finite {d['quantity']}")
        if mode == "stop":
            kept = (f"the last good checkpoint is kept in {out / 'checkpoints'}"
                    if any((out / "checkpoints").glob("[0-9]*")) else "no checkpoint had been saved yet")
            raise FloatingPointError(f"{msg}; {kept}; lower the learning rate, or --on-divergence continue to freeze "
                                     f"diverged seeds and go on")
        print(f"warning: {msg}; frozen at its last finite parameters, the other runs go on", file=sys.stderr)
    return found


EPISODES = "charts/episodes"


def window_episode_stats(outs: dict, r: int, first: int, last: int) -> dict:
    """Run ``r``'s episode statistics over updates ``first..last`` of a chunk's metrics (``[runs, updates]``
    arrays), for the row logged at ``last``: the episodes that finished in those updates (only those of the
    logged update's task in a continual run), their count summed and their returns, lengths and Craftax
    achievement rates averaged over every one of them (NaN when none finished). A row then summarises every
    episode since the previous row instead of the logged update's alone, which misses all of them whenever
    episodes end in step with the logging period (e.g. every CartPole episode at 500 steps)."""
    if EPISODES not in outs:
        return {}
    n = np.asarray(outs[EPISODES][r, first:last + 1], np.float64)
    if "charts/current_task" in outs:
        task = outs["charts/current_task"][r, first:last + 1]
        n = np.where(task == task[-1], n, 0.0)
    total = n.sum()
    out = {EPISODES: float(total)}
    for k, v in outs.items():
        if k in ("charts/episodic_return", "charts/episodic_length") or k.startswith("charts/achievements/"):
            x = np.asarray(v[r, first:last + 1], np.float64)
            out[k] = float((np.where(n > 0, x, 0.0) * n).sum() / total) if total > 0 else float("nan")
    return out


def _final_returns(rows: list[dict], labels: list[dict]) -> np.ndarray:
    """Per run: the mean finite return over its last tenth of logged rows (``analysis.stats.final_score``, the rule
    the plots' aggregates use too)."""
    from plasticine_jax.analysis.stats import final_score

    return np.asarray([final_score([r["charts/episodic_return"] for r in rows
                                    if all(r[k] == v for k, v in label.items())]) for label in labels])


def task_results(rows: list[dict], labels: list[dict]) -> list[dict]:
    """Per run and task: the mean episodic return over the task and at its end (the last tenth of the task's
    logged rows with a finished episode), NaN where no episode finished."""
    from plasticine_jax.analysis.stats import end_return

    out = []
    for label in labels:
        mine = [r for r in rows if all(r[k] == v for k, v in label.items())]
        for task in sorted({r["task"] for r in mine}):
            ret = [r["charts/episodic_return"] for r in mine if r["task"] == task]
            out.append({**label, "task": task, "mean_return": _mean(ret), "end_return": end_return(ret)})
    return out


def _mean(x) -> float:
    """Mean of the finite entries (NaN when there are none), without numpy's empty-slice warning."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def fresh_gaps(per_task: list[dict]) -> list[dict]:
    """Where a run swept ``continual.fresh`` over 0 and 1: per task (and other sweep values), the seed-mean end
    return of the continual learner, of the fresh one, and continual - fresh (negative = plasticity lost)."""
    key = "continual.fresh"
    if not per_task or key not in per_task[0]:
        return []
    others = sorted(k for k in per_task[0] if k not in ("seed", "task", key, "mean_return", "end_return"))
    groups: dict[tuple, dict[float, list[float]]] = {}
    for r in per_task:
        g = groups.setdefault((*[r[k] for k in others], r["task"]), {})
        g.setdefault(r[key], []).append(r["end_return"])
    out = []
    for g, by in groups.items():
        if 0.0 in by and 1.0 in by:
            cont, fresh = _mean(by[0.0]), _mean(by[1.0])
            out.append({**dict(zip(others, g[:-1], strict=True)), "task": g[-1], "continual": cont, "fresh": fresh,
                        "gap": cont - fresh})
    return out


def summary_dict(result: RunResult, labels: list[dict]) -> dict:
    return {
        "runs": [{**label, "final_return": float(r)} for label, r in zip(labels, result.final_returns, strict=True)],
        "per_task": result.per_task,
        "fresh_gap": fresh_gaps(result.per_task),
        "wall_time_s": result.wall_time,
        "compile_time_s": result.compile_time,
        "env_steps_per_run": result.env_steps,
        "steps_per_second": result.env_steps * len(labels) / max(result.wall_time, 1e-9),
        "diverged": result.diverged,
    }
