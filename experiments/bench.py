"""``python experiments/bench.py``: compile time, throughput and memory of the whole compiled learner.

Lives in the repository, not in the package; ``python -m plasticine_jax bench ...`` runs this file's ``main``
from a clone. Run it from the repository root. One run prints four tables (and writes every figure to ``--out``
as JSON); ``--sections`` picks a subset:

1. scaling: PPO on each env for 1, 4, 16, 64 vmapped seeds: compile time of
   ``jax.jit(jax.vmap(learner.train)).lower(keys).compile()`` (one seed unbatched, as the driver compiles a
   single run: ``run.run_axis.over_runs``), env steps/s of the compiled call (total steps
   over all seeds / wall time, best of ``--repeats`` calls after compile, ``jax.block_until_ready``), XLA
   memory of the executable (``compiled.memory_analysis()``: temp + argument + output) and the process's
   max RSS so far (cumulative over the run, so only an upper bound for later rows);
2. metrics overhead: steps/s with heavy plasticity metrics every ``--metrics-every`` updates vs off;
3. intervention overhead: steps/s of each intervention alone vs vanilla (scheduled ones fire at least once);
4. learners: every learner of the registry (ppo, pqn, td3, sac, c51) on its CPU preset env for 1, 4, 16
   vmapped seeds, measured like the scaling table; a learner that is missing or fails is an error row.

The comparison with rejax (learning parity and speed on identical workloads) is ``experiments/parity.py``; this
file keeps the rejax venv helpers it uses (``ensure_peer_venv``).

Every figure comes from a compiled function timed on its second and later calls (envs.md §6.12); the JAX
persistent compilation cache is switched off so compile times are real.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

if importlib.util.find_spec("plasticine_jax") is None:  # a clone whose package is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CARTPOLE = "gymnax:CartPole-v1"
BREAKOUT = "gymnax:Breakout-MinAtar"
PENDULUM = "gymnax:Pendulum-v1"
DEFAULT_TIMESTEPS = {CARTPOLE: 102_400, BREAKOUT: 51_200}  # 200 / 100 updates of 4 x 128 steps
FALLBACK_TIMESTEPS = 51_200
REJAX_PINS = ("rejax==0.1.3", "gymnax==0.0.9", "six")
SECTIONS = ("scaling", "metrics", "interventions", "learners")

# learners table: each learner on its CPU preset env (preset = the config module's default_preset(env)), with
# env steps per seed sized so the whole table takes a few minutes on 2 CPU cores (off-policy learners include
# their learning_starts warm-up of random actions)
LEARNER_ENVS = {"ppo": CARTPOLE, "pqn": CARTPOLE, "c51": CARTPOLE, "td3": PENDULUM, "sac": PENDULUM}
LEARNER_TIMESTEPS = {"ppo": 51_200, "pqn": 65_536, "c51": 20_000, "td3": 1_500, "sac": 1_500}
LEARNER_TIMESTEPS_QUICK = {"ppo": 8_192, "pqn": 8_192, "c51": 1_500, "td3": 1_100, "sac": 1_100}

QUICK = dict(seeds="1,2", timesteps=8192, metrics_seeds="2", iv_seeds=2, iv_timesteps=8192,
             interventions="l2,redo", learner_seeds="1,2")
FULL = dict(seeds="1,4,16,64", timesteps=None, metrics_seeds=None, iv_seeds=4, iv_timesteps=51_200,
            interventions="all", learner_seeds="1,4,16")


def to_jsonable(x):
    from plasticine_jax.run.sinks import to_jsonable as f

    return f(x)


# --------------------------------------------------------------------------------------------- arguments
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python experiments/bench.py",
        description="Benchmark the compiled learners: PPO scaling over vmapped seeds, metrics and intervention "
                    "overhead and every registry learner at 1/4/16 seeds (the rejax comparison is "
                    "experiments/parity.py). Also runs as 'python -m plasticine_jax bench' from a clone.",
        epilog="Full run: python experiments/bench.py --out bench.json   (quick smoke run: --quick)",
    )
    p.add_argument("--quick", action="store_true",
                   help="tiny settings for tests/CI (options given explicitly still win): seeds 1,2; 8,192 steps per "
                        "seed everywhere; metrics off at 2 seeds; interventions l2,redo at 2 seeds; learners at "
                        "1,2 seeds with tiny budgets")
    p.add_argument("--sections", default="all",
                   help=f"comma list of sections to run, from {','.join(SECTIONS)} (default all)")
    p.add_argument("--envs", default=f"{CARTPOLE},{BREAKOUT}", help="comma list of env ids for the scaling table")
    p.add_argument("--seeds", default=None, help="comma list of vmapped seed counts (default 1,4,16,64)")
    p.add_argument("--timesteps", type=int, default=None,
                   help=f"env steps per seed for every env (default: {CARTPOLE} {DEFAULT_TIMESTEPS[CARTPOLE]:,}, "
                        f"{BREAKOUT} {DEFAULT_TIMESTEPS[BREAKOUT]:,}; use multiples of num_envs*num_steps=512)")
    p.add_argument("--preset", default="cartpole", help="PPO preset used for every env (default cartpole)")
    p.add_argument("--repeats", type=int, default=2, help="timed calls after compile; the best is kept (default 2)")
    p.add_argument("--metrics-every", type=int, default=10,
                   help="heavy plasticity metrics every N updates in the 'with metrics' runs (default 10)")
    p.add_argument("--metrics-seeds", default=None,
                   help=f"seed counts at which {CARTPOLE} is also timed with metrics off (default: --seeds)")
    p.add_argument("--interventions", default=None,
                   help="comma list of interventions to time alone vs vanilla, 'all' (default) or 'none'")
    p.add_argument("--iv-env", default=CARTPOLE, help=f"env of the intervention table (default {CARTPOLE})")
    p.add_argument("--iv-seeds", type=int, default=None, help="vmapped seeds of the intervention table (default 4)")
    p.add_argument("--iv-timesteps", type=int, default=None,
                   help="env steps per seed of the intervention table (default 51,200 = 100 updates)")
    p.add_argument("--learners", default="all",
                   help="comma list of registry learners for the learners table, 'all' (default) or 'none'")
    p.add_argument("--learner-seeds", default=None,
                   help="comma list of vmapped seed counts for the learners table (default 1,4,16)")
    p.add_argument("--learner-timesteps", type=int, default=None,
                   help="env steps per seed for every learner in the learners table (default per learner: "
                        + ", ".join(f"{k} {v:,}" for k, v in LEARNER_TIMESTEPS.items()) + ")")
    p.add_argument("--out", default=None, help="write every figure to this JSON file")
    return p


def _ints(spec: str) -> list[int]:
    try:
        out = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise ValueError(f"expected a comma list of positive integers, got '{spec}'")
    return out


def _resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    base = QUICK if args.quick else FULL
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.seeds = _ints(args.seeds)
    args.learner_seeds = _ints(args.learner_seeds)
    spec = args.sections.strip().lower()
    args.sections = list(SECTIONS) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    if "peer" in args.sections:
        raise ValueError("the rejax comparison moved to experiments/parity.py (learning parity and speed)")
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad or not args.sections:
        raise ValueError(f"unknown section '{bad[0] if bad else spec}'; available: {', '.join(SECTIONS)} or all")
    args.metrics_seeds = _ints(args.metrics_seeds) if args.metrics_seeds else list(args.seeds)
    args.envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    from plasticine_jax.errors import ConfigError
    from plasticine_jax.interventions.registry import REGISTRY, canonical

    spec = args.interventions.strip().lower()
    try:
        args.iv_names = list(REGISTRY) if spec == "all" else [] if spec in ("", "none") else \
            [canonical(s) for s in spec.split(",") if s.strip()]
    except ConfigError as e:
        raise ValueError(str(e)) from None
    from plasticine_jax.algos.registry import ALGOS

    spec = args.learners.strip().lower()
    args.learners = list(ALGOS) if spec == "all" else [] if spec in ("", "none") else \
        [s.strip() for s in spec.split(",") if s.strip()]
    bad = [s for s in args.learners if s not in ALGOS]
    if bad:
        raise ValueError(f"unknown learner '{bad[0]}'; available: {', '.join(ALGOS)}")
    for n in (args.repeats, args.iv_seeds, args.iv_timesteps, args.learner_timesteps or 1):
        if n < 1:
            raise ValueError("--repeats, --iv-seeds, --iv-timesteps and --learner-timesteps must be positive")
    return args


def _timesteps(args, env: str) -> int:
    return args.timesteps or DEFAULT_TIMESTEPS.get(env, FALLBACK_TIMESTEPS)


def _learner_timesteps(args, algo: str) -> int:
    budgets = LEARNER_TIMESTEPS_QUICK if args.quick else LEARNER_TIMESTEPS
    return args.learner_timesteps or budgets.get(algo, FALLBACK_TIMESTEPS)


# --------------------------------------------------------------------------------------------- machine
def machine_info() -> dict:
    import jax

    cpu = platform.processor() or "unknown"
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # first processor only
            k, _, v = line.partition(":")
            fields[k.strip()] = v.strip()
        cpu = fields.get("model name", cpu)
        if "cpu family" in fields:
            cpu += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    dev = jax.devices()[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "python": platform.python_version(),
            "jax": jax.__version__, "device": f"{dev.platform}:{dev.id} ({getattr(dev, 'device_kind', '')})",
            "num_devices": jax.device_count(), "platform": platform.platform(),
            "load_avg_1min_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


# --------------------------------------------------------------------------------------------- measuring
def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _memory(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
        mem = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("temp", "argument", "output")}
    except Exception:  # noqa: BLE001 - backends may not implement it
        return {}
    mem["total"] = sum(mem.values())
    return mem


def compile_and_time(learner, keys, repeats: int):
    """(compiled, compile seconds, call times, last output) of ``learner.train`` over ``keys`` as the driver
    compiles it (``jax.jit(jax.vmap(train))``; one seed unbatched, ``run.run_axis.over_runs``): compiled ahead of
    time, then called ``repeats`` (at least 1) times, each blocked until ready."""
    import jax

    from plasticine_jax.run.run_axis import over_runs

    t0 = time.perf_counter()
    compiled = jax.jit(over_runs(learner.train)).lower(keys).compile()
    compile_s = time.perf_counter() - t0
    times, out = [], None
    for _ in range(max(1, repeats)):
        del out
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(keys))
        times.append(time.perf_counter() - t0)
    return compiled, compile_s, times, out


def _final_return(metrics: dict) -> float | None:
    """Mean training episodic return over the last 10% of updates, all seeds (NaN-free updates only)."""
    import numpy as np

    if "charts/episodic_return" not in metrics:
        return None
    r = np.asarray(metrics["charts/episodic_return"])  # [seeds, updates]
    tail = r[:, -max(1, r.shape[1] // 10):]
    finite = tail[np.isfinite(tail)]
    return float(finite.mean()) if finite.size else None


class Bench:
    """Memoised measurements keyed by (algo, preset, env, seeds, timesteps, metrics_every, interventions)."""

    def __init__(self, args):
        self.args = args
        self.cache: dict[tuple, dict] = {}

    def measure(self, env: str, seeds: int, timesteps: int, metrics_every: int,
                iv_names: tuple[str, ...] = (), iv_options: dict | None = None, algo: str = "ppo",
                preset: str | None = None) -> dict:
        """Compile ``learner.train`` (``compile_and_time``) for ``seeds`` seeds of ``algo`` (``make_train`` of its
        registry module; ``preset`` defaults to ``--preset`` for PPO and to ``default_preset(env)`` otherwise) and
        time the compiled call."""
        from plasticine_jax.algos import registry

        cfg_mod = registry.config_module(algo)
        if preset is None:
            preset = self.args.preset if algo == "ppo" else cfg_mod.default_preset(env)
        key = (algo, preset, env, seeds, timesteps, metrics_every, iv_names)
        if key in self.cache:
            return self.cache[key]
        import jax

        from plasticine_jax.interventions.registry import resolve
        from plasticine_jax.metrics.config import MetricsConfig

        make_train = registry.learner_module(algo).make_train
        cfg = cfg_mod.PRESETS[preset]
        learner = make_train(cfg, env, timesteps, resolve(list(iv_names), iv_options),
                             MetricsConfig(every=metrics_every))
        keys = jax.random.split(jax.random.PRNGKey(0), seeds)
        compiled, compile_s, times, out = compile_and_time(learner, keys, self.args.repeats)
        steps_per_seed = learner.num_updates * learner.env_steps_per_update
        best = min(times)
        res = {"algo": algo, "preset": preset, "env": env, "seeds": seeds, "timesteps": timesteps,
               "steps_per_seed": steps_per_seed, "env_steps": steps_per_seed * seeds, "updates": learner.num_updates,
               "env_steps_per_update": learner.env_steps_per_update, "metrics_every": metrics_every,
               "interventions": list(iv_names), "compile_s": compile_s, "run_s": best, "run_s_all": times,
               "steps_per_s": steps_per_seed * seeds / best, "xla_bytes": _memory(compiled),
               "max_rss_mib": _max_rss_mib(), "final_return": _final_return(out[1]),
               "learning_starts": int(getattr(cfg, "learning_starts", 0)), "warnings": list(learner.warnings)}
        del out, compiled
        jax.clear_caches()
        self.cache[key] = res
        return res


# --------------------------------------------------------------------------------------------- sections
def _mib(b: dict) -> str:
    return f"{b['total'] / 2**20:,.1f}" if b else "n/a"


def _fmt_ret(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.1f}"


def run_scaling(bench: Bench, args, ui) -> list[dict]:
    rows = []
    for env in args.envs:
        for n in args.seeds:
            r = bench.measure(env, n, _timesteps(args, env), args.metrics_every)
            rows.append(r)
            ui.progress(f"scaling {env} {n} seed(s): compile {r['compile_s']:.1f}s, {r['steps_per_s']:,.0f} steps/s")
    ui.table("1. Scaling over vmapped seeds",
             f"preset '{args.preset}' for every env, heavy plasticity metrics every {args.metrics_every} updates; "
             "steps/s = env steps over all seeds / best wall time of the compiled call; XLA MiB = temp + argument "
             "+ output of compiled.memory_analysis(); max RSS is the process peak so far (cumulative); train "
             "return = mean episodic return over the last 10% of updates",
             ["env", "seeds", "steps/seed", "compile s", "steps/s", "steps/s/seed", "XLA MiB", "max RSS MiB",
              "train return"],
             [[r["env"], r["seeds"], f"{r['steps_per_seed']:,}", f"{r['compile_s']:.2f}", f"{r['steps_per_s']:,.0f}",
               f"{r['steps_per_s'] / r['seeds']:,.0f}", _mib(r["xla_bytes"]), f"{r['max_rss_mib']:,.0f}",
               _fmt_ret(r["final_return"])] for r in rows])
    return rows


def run_metrics_overhead(bench: Bench, args, ui) -> list[dict]:
    rows = []
    ts = _timesteps(args, CARTPOLE)
    for n in args.metrics_seeds:
        on = bench.measure(CARTPOLE, n, ts, args.metrics_every)
        off = bench.measure(CARTPOLE, n, ts, 0)
        rows.append({"env": CARTPOLE, "seeds": n, "timesteps": ts, "metrics_every": args.metrics_every,
                     "steps_per_s": on["steps_per_s"], "steps_per_s_no_metrics": off["steps_per_s"],
                     "compile_s": on["compile_s"], "compile_s_no_metrics": off["compile_s"],
                     "ratio_metrics_vs_off": on["steps_per_s"] / off["steps_per_s"]})
        ui.progress(f"metrics overhead {n} seed(s): {rows[-1]['ratio_metrics_vs_off']:.2f}x")
    ui.table(f"2. Plasticity-metrics overhead on {CARTPOLE}",
             f"heavy metrics (dormant, ranks, features) every {args.metrics_every} updates vs MetricsConfig(every=0); "
             "cheap ones (norms, gradient norm, entropy, returns) are always on",
             ["seeds", "steps/seed", "steps/s metrics", "steps/s off", "ratio on/off", "compile s on / off"],
             [[r["seeds"], f"{r['timesteps']:,}", f"{r['steps_per_s']:,.0f}", f"{r['steps_per_s_no_metrics']:,.0f}",
               f"{r['ratio_metrics_vs_off']:.3f}", f"{r['compile_s']:.1f} / {r['compile_s_no_metrics']:.1f}"]
              for r in rows])
    return rows


def intervention_options(name: str, num_updates: int) -> dict:
    """Options so that scheduled interventions fire at least once in a run of ``num_updates`` updates."""
    half = max(1, num_updates // 2)
    return {"redo": {"frequency": min(10, half)}, "reset_layers": {"frequency": min(50, half)},
            "plasticity_injection": {"at": 0.5}}.get(name, {})


def run_interventions(bench: Bench, args, ui) -> list[dict]:
    from plasticine_jax.interventions.registry import options_class

    names = args.iv_names
    n, ts = args.iv_seeds, args.iv_timesteps
    vanilla = bench.measure(args.iv_env, n, ts, args.metrics_every)
    num_updates = vanilla["updates"]
    rows = [{"name": "vanilla", "options": {}, **vanilla, "ratio_vs_vanilla": 1.0}]
    for name in names:
        opts = intervention_options(name, num_updates)
        try:
            r = bench.measure(args.iv_env, n, ts, args.metrics_every, (name,), {name: options_class(name)(**opts)})
            rows.append({"name": name, "options": opts, **r, "ratio_vs_vanilla": r["steps_per_s"]
                         / vanilla["steps_per_s"]})
            ui.progress(f"intervention {name}: {r['steps_per_s']:,.0f} steps/s ({rows[-1]['ratio_vs_vanilla']:.2f}x)")
        except Exception as e:  # noqa: BLE001 - one broken intervention must not end the benchmark
            rows.append({"name": name, "options": opts, "error": f"{type(e).__name__}: {e}"})
            ui.progress(f"intervention {name}: FAILED {type(e).__name__}: {e}")
    ui.table(f"3. Intervention overhead on {args.iv_env}",
             f"{n} seeds x {vanilla['steps_per_seed']:,} steps ({num_updates} updates), heavy metrics every "
             f"{args.metrics_every} updates; ratio = steps/s vs vanilla; options chosen so scheduled ones fire",
             ["intervention", "options", "compile s", "steps/s", "ratio", "XLA MiB", "train return"],
             [[r["name"], ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "-",
               *(["error", r["error"][:60], "", "", ""] if "error" in r else
                 [f"{r['compile_s']:.2f}", f"{r['steps_per_s']:,.0f}", f"{r['ratio_vs_vanilla']:.3f}",
                  _mib(r["xla_bytes"]), _fmt_ret(r["final_return"])])] for r in rows])
    return rows


def run_learners(bench: Bench, args, ui) -> list[dict]:
    """Every selected registry learner on its CPU preset env; a learner whose module is missing or whose build,
    compile or run fails becomes an error row (the benchmark goes on)."""
    rows = []
    for algo in args.learners:
        env = LEARNER_ENVS.get(algo, CARTPOLE)
        ts = _learner_timesteps(args, algo)
        for n in args.learner_seeds:
            try:
                r = bench.measure(env, n, ts, args.metrics_every, algo=algo)
                rows.append(r)
                ui.progress(f"learner {algo} on {env} {n} seed(s): compile {r['compile_s']:.1f}s, "
                            f"{r['steps_per_s']:,.0f} steps/s")
            except ModuleNotFoundError as e:
                if e.name != f"plasticine_jax.algos.{algo}":
                    err = f"{type(e).__name__}: {e}"
                else:  # the learner itself is not written yet: one row, not one per seed count
                    err = f"module {e.name} not found"
                rows.append({"algo": algo, "env": env, "seeds": n, "timesteps": ts, "error": err})
                ui.progress(f"learner {algo}: FAILED {err}")
                if err.startswith("module "):
                    break
            except Exception as e:  # noqa: BLE001 - one broken learner must not end the benchmark
                err = f"{type(e).__name__}: {e}".splitlines()[0]
                rows.append({"algo": algo, "env": env, "seeds": n, "timesteps": ts, "error": err})
                ui.progress(f"learner {algo} {n} seed(s): FAILED {err}")
    ui.table("4. Learners over vmapped seeds",
             f"each learner on its CPU preset env (preset = default_preset(env)), heavy plasticity metrics every "
             f"{args.metrics_every} updates, no interventions; steps/seed includes the off-policy learners' "
             "warm-up (learning_starts env steps of random actions, no gradient steps); other columns as in table 1",
             ["learner", "env", "preset", "seeds", "steps/seed", "warm-up", "updates", "compile s", "steps/s",
              "steps/s/seed", "XLA MiB", "train return"],
             [[r["algo"], r["env"], *(["error", r["seeds"], r["error"][:80], *[""] * 7] if "error" in r else
               [r["preset"], r["seeds"], f"{r['steps_per_seed']:,}", f"{r['learning_starts']:,}", r["updates"],
                f"{r['compile_s']:.2f}",
                f"{r['steps_per_s']:,.0f}", f"{r['steps_per_s'] / r['seeds']:,.0f}", _mib(r["xla_bytes"]),
                _fmt_ret(r["final_return"])])] for r in rows])
    return rows


# --------------------------------------------------------------------------------------------- rejax venv (parity.py)
def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _peer_versions(py: Path) -> dict | None:
    code = ("import json\nfrom importlib.metadata import version as v\nimport rejax, gymnax, jax\n"
            "print(json.dumps({'rejax': v('rejax'), 'gymnax': v('gymnax'), 'jax': v('jax'), 'jaxlib': v('jaxlib')}))")
    try:
        r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def ensure_peer_venv(venv: Path, ui) -> tuple[Path | None, dict | None, str]:
    """(python, versions, note). Reuses a venv that already holds rejax 0.1.3 + gymnax 0.0.9; else creates it,
    pinning jax/jaxlib to this interpreter's versions (falls back to pip's choice if that fails)."""
    from importlib.metadata import version

    jax_v, jaxlib_v = version("jax"), version("jaxlib")
    py = _venv_python(venv)
    if py.exists():
        got = _peer_versions(py)
        if got and got["rejax"] == "0.1.3" and got["gymnax"] == "0.0.9":
            note = "" if got["jax"] == jax_v else f"peer venv has jax {got['jax']} (ours {jax_v})"
            return py, got, note
    ui.progress(f"creating rejax venv at {venv} (one time, about a minute)")
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True,
                       text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        return None, None, f"could not create the venv {venv}: {type(e).__name__}"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    note = ""
    tail = ""
    for pins in ([*REJAX_PINS, f"jax=={jax_v}", f"jaxlib=={jaxlib_v}"], list(REJAX_PINS)):
        try:
            r = subprocess.run([*pip, *pins], capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.SubprocessError) as e:
            return None, None, f"pip install of rejax failed ({type(e).__name__}); offline?"
        if r.returncode == 0:
            break
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        tail = tail[0][:200]
        note = f"pinning jax=={jax_v} failed ({tail}); pip chose the jax version"
    else:
        return None, None, f"pip install of rejax failed: {tail} (offline?)"
    got = _peer_versions(py)
    if not got:
        return None, None, "rejax installed but does not import"
    if got["jax"] != jax_v:
        note = note or f"peer venv has jax {got['jax']} (ours {jax_v})"
    return py, got, note



class UI:
    """Rich tables on stdout, progress lines on stderr."""

    def __init__(self):
        from rich.console import Console

        probe = Console()
        self.console = probe if probe.is_terminal else Console(width=160)
        self.err = Console(stderr=True, highlight=False)

    def progress(self, msg: str) -> None:
        self.err.print(f"[dim]... {msg}[/dim]")

    def note(self, msg: str) -> None:
        self.console.print(f"NOTE: {msg}", highlight=False)

    def table(self, title: str, caption: str, cols: list[str], rows: list[list]) -> None:
        from rich.table import Table

        t = Table(title=title, title_justify="left", title_style="bold")
        for i, c in enumerate(cols):
            t.add_column(c, justify="left" if i == 0 else "right")
        for r in rows:
            t.add_row(*[str(x) for x in r])
        self.console.print()
        self.console.print(t)
        self.console.print(caption, highlight=False, style="dim")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        args = _resolve_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import jax

    from plasticine_jax.algos.ppo_config import PRESETS
    from plasticine_jax.envs import make_env
    from plasticine_jax.errors import ConfigError

    if args.preset not in PRESETS:
        print(f"error: unknown preset '{args.preset}'; known: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    envs = set()
    if "scaling" in args.sections:
        envs.update(args.envs)
    if "interventions" in args.sections:
        envs.add(args.iv_env)
    if "metrics" in args.sections:
        envs.add(CARTPOLE)
    if "learners" in args.sections:
        envs.update(LEARNER_ENVS.get(a, CARTPOLE) for a in args.learners)
    try:
        for env in sorted(envs):
            make_env(env, 1)  # fail fast on a bad env id, before minutes of measuring
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jax.config.update("jax_enable_compilation_cache", False)
    ui = UI()
    t_start = time.perf_counter()
    info = machine_info()
    load = info["load_avg_1min_at_start"]
    ui.console.print(f"machine: {info['cpu']} | {info['cores']} cores ({info['usable_cores']} usable) | "
                     f"jax {info['jax']} | device {info['device']} x{info['num_devices']} | Python {info['python']} | "
                     f"load avg {'n/a' if load is None else f'{load:.2f}'}", highlight=False)
    if load is not None and load > 0.5 * (info["usable_cores"] or 1) and info["device"].startswith("cpu"):
        ui.note(f"the machine is busy (1-min load {load:.1f} on {info['usable_cores']} cores): XLA's CPU thread pool "
                "stalls under contention, so timings can be several times too slow; run on a quiet machine")
    cfg = PRESETS[args.preset]
    ui.console.print(f"config: PPO preset '{args.preset}' for every env of tables 1-3: {cfg.num_envs} envs "
                     f"x {cfg.num_steps} steps, "
                     f"{cfg.update_epochs} epochs x {cfg.num_minibatches} minibatches, net {cfg.net.torso} "
                     f"{'-'.join(map(str, cfg.net.widths))} {cfg.net.activation} "
                     f"({'shared' if cfg.net.shared else 'separate actor/critic'}), lr {cfg.learning_rate:g} "
                     f"(anneal {cfg.anneal_lr}); repeats {args.repeats} (best kept){'; QUICK' if args.quick else ''}",
                     highlight=False)
    result: dict[str, Any] = {"machine": info, "args": {k: v for k, v in vars(args).items()},
                              "ppo_config": to_jsonable(asdict(cfg))}
    bench = Bench(args)
    try:
        if "scaling" in args.sections:
            result["scaling"] = run_scaling(bench, args, ui)
        if "metrics" in args.sections:
            result["metrics_overhead"] = run_metrics_overhead(bench, args, ui)
        if "interventions" in args.sections:
            result["interventions"] = run_interventions(bench, args, ui)
        if "learners" in args.sections:
            result["learners"] = run_learners(bench, args, ui)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["wall_s"] = time.perf_counter() - t_start
    ui.console.print(f"benchmark wall time {result['wall_s']:.0f}s; process max RSS {_max_rss_mib():,.0f} MiB",
                     highlight=False)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(to_jsonable(result), indent=2))
        ui.console.print(f"figures written to {out}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
