"""``python experiments/host_envs_bench.py``: host environments (envpool) inside the compiled graph, measured.

Two tables, one run (machine and versions printed first, every figure also written as JSON to ``--out``):

1. **PPO on envpool Procgen** (StarpilotEasy-v0, the reference's IMPALA CNN agent and hyperparameters) in env
   steps/s, 1 and 2 vmapped seeds, at the reference's two shapes: the newest reference's continual Procgen PPO
   (1 env x 1000 steps, 8 minibatches, 3 epochs, lr 1e-3, gamma 0.99) -- the shape of the PyTorch reference's
   figure measured on this CPU, about 200 steps/s (``../shared/envs.md`` §8; the reference's code is not in this
   repository, so its figure is quoted, not re-run) -- and the standard scenario's 64 envs (3 epochs x 8
   minibatches) with a 32-step rollout: its 256-step one needs ~13 GiB of XLA temporaries on CPU (GPU-scale).
   Each row is one compiled ``jax.jit(jax.vmap(ppo.train))`` timed on its second call (compile time
   separate); plasticity metrics off so the figure is the learner's.
2. **envpool raw vs our pipeline** for Pong-v5 and CheetahRun-v1, random actions, 64 envs: envpool's own
   Python loop (``env.step`` on numpy actions), envpool's XLA step in ``jit(lax.scan)`` (Pong only: MuJoCo's XLA
   step needs float64 actions, i.e. x64 everywhere), and our ``envpool:`` env (reset/step primitives, in-step
   auto-reset, episode statistics) in ``jit(lax.scan)`` for 1 seed x 64 envs and 2 vmapped seeds x 32 envs.

``--quick`` (CI smoke): tiny shapes, seconds; its figures are not benchmarks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

if importlib.util.find_spec("plasticine_jax") is None:  # a clone whose package is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (experiments/bench.py: machine_info, compile_and_time)

REFERENCE_PROCGEN_SPS = 200  # envs.md §8: PyTorch reference, continual Procgen PPO, 1 env x 1000 steps, this CPU
PROCGEN = "envpool:StarpilotEasy-v0"


def _procgen_shapes(quick: bool) -> list[tuple[str, dict, int]]:
    """(label, PPO overrides, updates) rows of table 1."""
    if quick:
        return [("1 env x 64 steps (quick)", dict(num_envs=1, num_steps=64, num_minibatches=2, update_epochs=1), 1)]
    newest = dict(num_envs=1, num_steps=1000, num_minibatches=8, update_epochs=3, learning_rate=1e-3, gamma=0.99)
    # the reference's 64 envs with a 32-step rollout: its 256-step batch (16,384 IMPALA samples, minibatches of
    # 2048) needs ~13 GiB of XLA temporaries on CPU, a GPU-scale shape
    return [("1 env x 1000 steps (N continual)", newest, 2), ("64 envs x 32 steps (R envs)", dict(num_steps=32), 4)]


def bench_procgen(args, machine_seeds: list[int]) -> list[dict]:
    import jax

    from plasticine_jax.algos.ppo import make_train
    from plasticine_jax.algos.ppo_config import PRESETS
    from plasticine_jax.metrics.config import MetricsConfig

    rows = []
    for label, overrides, updates in _procgen_shapes(args.quick):
        cfg = replace(PRESETS["procgen"], **overrides)
        for seeds in machine_seeds:
            steps = cfg.num_envs * cfg.num_steps * updates
            learner = make_train(cfg, PROCGEN, steps, (), MetricsConfig(every=0))
            keys = jax.random.split(jax.random.PRNGKey(0), seeds)
            compiled, compile_s, times, _ = bench.compile_and_time(learner, keys, 2 if not args.quick else 1)
            best = min(times)
            row = {"shape": label, "seeds": seeds, "env_steps": steps * seeds, "compile_s": compile_s,
                   "run_s": best, "steps_per_s": steps * seeds / best, "xla_bytes": bench._memory(compiled)}
            del compiled
            print(f"... procgen {label}, {seeds} seed(s): {row['steps_per_s']:.0f} steps/s", file=sys.stderr)
            rows.append(row)
            jax.clear_caches()
    return rows


def _python_loop(task: str, num_envs: int, steps: int) -> float:
    import envpool
    import numpy as np

    env = envpool.make(task, env_type="gymnasium", num_envs=num_envs, seed=0)
    env.reset()
    space = env.action_space
    rng = np.random.default_rng(0)
    if hasattr(space, "n"):
        actions = [rng.integers(space.n, size=num_envs) for _ in range(steps)]
    else:
        actions = [rng.uniform(-1, 1, (num_envs, *space.shape)) for _ in range(steps)]
    for a in actions[:10]:
        env.step(a)
    t0 = time.perf_counter()
    for a in actions:
        env.step(a)
    return num_envs * steps / (time.perf_counter() - t0)


def _xla_raw(task: str, num_envs: int, steps: int) -> float:
    import envpool
    import jax
    import jax.numpy as jnp

    env = envpool.make(task, env_type="gymnasium", num_envs=num_envs, seed=0)
    handle, _recv, _send, step = env.xla()
    n = env.action_space.n

    def run(handle, key):
        def body(carry, _):
            h, k = carry
            k, sub = jax.random.split(k)
            h, _ = step(h, jax.random.randint(sub, (num_envs,), 0, n, dtype=jnp.int32))
            return (h, k), None
        return jax.lax.scan(body, (handle, key), None, length=steps)[0][0]

    f = jax.jit(run)
    handle = jax.block_until_ready(f(handle, jax.random.PRNGKey(0)))
    t0 = time.perf_counter()
    jax.block_until_ready(f(handle, jax.random.PRNGKey(1)))
    return num_envs * steps / (time.perf_counter() - t0)


def _pipeline(task: str, seeds: int, num_envs: int, steps: int) -> float:
    import jax

    from plasticine_jax.envs import make_env

    env = make_env(f"envpool:{task}", num_envs)
    space = env.action_space

    def run(key):
        obs, state = env.reset(key)

        def body(carry, _):
            state, k = carry
            k, ka, ks = jax.random.split(k, 3)
            if hasattr(space, "n"):
                action = jax.random.randint(ka, (num_envs,), 0, space.n)
            else:
                action = jax.random.uniform(ka, (num_envs, *space.shape), minval=-1.0, maxval=1.0)
            _, state, reward, *_ = env.step(ks, state, action)
            return (state, k), reward.sum()
        return jax.lax.scan(body, (state, key), None, length=steps)[1].sum()

    f = jax.jit(jax.vmap(run))
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    jax.block_until_ready(f(keys))
    t0 = time.perf_counter()
    jax.block_until_ready(f(keys))
    return seeds * num_envs * steps / (time.perf_counter() - t0)


def bench_raw_vs_pipeline(args) -> list[dict]:
    steps = 50 if args.quick else 1000
    rows = []
    for task in args.raw_tasks.split(","):
        row = {"task": task, "num_envs": 64, "steps": steps, "python_loop": _python_loop(task, 64, steps),
               "xla_raw": _xla_raw(task, 64, steps) if task == "Pong-v5" else None,
               "ours_1x64": _pipeline(task, 1, 64, steps), "ours_2x32": _pipeline(task, 2, 32, steps)}
        print(f"... {task}: {row}", file=sys.stderr)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes for a smoke run (figures not meaningful)")
    p.add_argument("--seeds", default="1,2", help="vmapped seed counts for the Procgen PPO table")
    p.add_argument("--sections", default="procgen,raw", help="procgen,raw")
    p.add_argument("--raw-tasks", default="Pong-v5,CheetahRun-v1", help="envpool tasks of the raw-vs-pipeline table")
    p.add_argument("--out", default="experiments/results/host_envs_bench.json")
    args = p.parse_args(argv)
    info = bench.machine_info()
    import envpool

    info["envpool"] = envpool.__version__
    print("machine:", json.dumps(info))
    result = {"machine": info, "quick": args.quick}
    sections = args.sections.split(",")
    if "procgen" in sections:
        rows = bench_procgen(args, [int(s) for s in args.seeds.split(",")])
        result["procgen_ppo"] = rows
        print("\nPPO on envpool StarpilotEasy-v0 (IMPALA CNN, reference hyperparameters), env steps/s")
        print(f"{'shape':<36} {'seeds':>5} {'steps/s':>9} {'compile s':>9} {'XLA GiB':>7}  vs PyTorch reference")
        for r in rows:
            ref = (f"{r['steps_per_s'] / REFERENCE_PROCGEN_SPS:.2f}x of ~{REFERENCE_PROCGEN_SPS}"
                   if r["shape"].startswith("1 env x 1000") else "not measured (reference not runnable here)")
            mem = r["xla_bytes"].get("total", float("nan")) / 2**30
            print(f"{r['shape']:<36} {r['seeds']:>5} {r['steps_per_s']:>9.0f} {r['compile_s']:>9.1f} {mem:>7.2f}  "
                  f"{ref}")
    if "raw" in sections:
        rows = bench_raw_vs_pipeline(args)
        result["raw_vs_pipeline"] = rows
        print("\nenvpool raw vs through plasticine-jax (random actions, 64 envs in all), env steps/s")
        print(f"{'task':<14} {'python loop':>11} {'XLA raw':>9} {'ours 1x64':>10} {'ours 2x32':>10}")
        for r in rows:
            xla = f"{r['xla_raw']:.0f}" if r["xla_raw"] else "n/a (x64)"
            print(f"{r['task']:<14} {r['python_loop']:>11.0f} {xla:>9} {r['ours_1x64']:>10.0f} "
                  f"{r['ours_2x32']:>10.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
