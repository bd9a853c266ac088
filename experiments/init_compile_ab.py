"""What a run's init program costs to build, with its key splits hashed once (``algos.rng.split``, now) vs hashed
inside every consumer kernel (plain ``jax.random.split``, as before 2026-12-02: PPO, PQN and C51 init and the
gymnax envs' reset; TD3 and SAC split their init key with ``rng.split`` before too).

Init derives a handful of keys (network, env, interventions, run) and every env's reset key from one seed key.
XLA:CPU fuses a threefry hash, nothing but cheap integer ops, into each kernel that reads its keys, so a split
feeding a dozen kernels was hashed a dozen times. ``rng.split`` gives the same keys bit for bit, computed once.
Built in ONE process, ``--rounds`` times in alternation (caches cleared before each build), best kept; also the
optimized program's instruction and ``xor`` counts (deterministic, unlike the seconds). Runs are the README's
command-line examples (``cli_compile_ab.RUNS``) at 1 seed, configured as the CLI configures them.

    python experiments/init_compile_ab.py
    python experiments/init_compile_ab.py --runs ppo-cartpole --rounds 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cli_compile_ab.py: RUNS


NEW_SPLITS = ("plasticine_jax.algos.ppo", "plasticine_jax.algos.pqn", "plasticine_jax.algos.c51",
              "plasticine_jax.envs.gymnax_env")  # modules whose init-time splits went through rng.split on 2026-12-02


def build(learner, keys, hp, split_once: bool) -> tuple[object, float]:
    """(compiled init over one run, trace + lower + XLA compile seconds); ``split_once=False`` builds it as before
    2026-12-02: the ``NEW_SPLITS`` modules' ``rng.split`` replaced by plain ``jax.random.split`` (TD3's and SAC's
    own init split already went through ``rng.split`` and is kept)."""
    import importlib
    import types

    import jax

    from plasticine_jax.run.run_axis import over_runs

    jax.clear_caches()
    modules = [importlib.import_module(m) for m in NEW_SPLITS]
    kept = [m.rng for m in modules]
    if not split_once:
        plain = types.SimpleNamespace(split=lambda key, num=2: jax.random.split(key, num))
        for m in modules:
            m.rng = plain
    try:
        t0 = time.perf_counter()
        compiled = jax.jit(over_runs(learner.init)).lower(keys, hp).compile()
        return compiled, time.perf_counter() - t0
    finally:
        for m, r in zip(modules, kept, strict=True):
            m.rng = r


def main(argv: list[str] | None = None) -> int:
    from cli_compile_ab import RUNS, one_seed_run

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma list from {','.join(RUNS)}")
    p.add_argument("--rounds", type=int, default=3, help="alternating builds per variant (best kept)")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_compilation_cache", False)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs, rounds {args.rounds}")
    print(f"{'run':<22} {'init s before':>14} {'now':>6} {'ratio':>6} {'HLO instr before':>17} {'now':>6}"
          f" {'xor before':>11} {'now':>5} {'same carry':>11}")
    for name in args.runs.split(","):
        if name not in RUNS:
            p.error(f"unknown run '{name}'; use some of {','.join(RUNS)}")
        _, learner, keys, hp = one_seed_run(name)
        best, progs = {"before": float("inf"), "now": float("inf")}, {}
        for _ in range(max(1, args.rounds)):
            for v in ("before", "now"):
                progs[v], t = build(learner, keys, hp, split_once=v == "now")
                best[v] = min(best[v], t)
        text = {v: c.as_text() for v, c in progs.items()}
        instr = {v: sum(" = " in line for line in t.splitlines()) for v, t in text.items()}
        xor = {v: t.count(" xor(") for v, t in text.items()}
        outs = {v: jax.tree.leaves(jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(
            x.dtype, jax.dtypes.prng_key) else x, c(keys, hp))) for v, c in progs.items()}
        inexact = lambda a: np.issubdtype(np.asarray(a).dtype, np.inexact)
        same = all(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=inexact(a))
                   for a, b in zip(outs["before"], outs["now"], strict=True))
        print(f"{name:<22} {best['before']:>14.2f} {best['now']:>6.2f} {best['now'] / best['before']:>6.2f}"
              f" {instr['before']:>17,} {instr['now']:>6,} {xor['before']:>11} {xor['now']:>5} {str(same):>11}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
