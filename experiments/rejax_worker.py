"""Peer side of ``experiments/parity.py``: one rejax 0.1.3 learner timed and evaluated exactly like ours.

Runs inside rejax's own venv (rejax 0.1.3 needs gymnax 0.0.9, which cannot share a venv with gymnax 1.x), so it
imports nothing from plasticine_jax. Reads one JSON job (``--job FILE``)::

    {"algo": "ppo" | "pqn" | "td3" | "sac", "config": {rejax create() kwargs, without total_timesteps},
     "runs": [{"seeds": 8, "timesteps": 100000, "repeats": 1, "evaluate": true}, ...], "episodes": 128}

For each run it compiles ``jax.jit(jax.vmap(algo.train))`` (``jax.jit(algo.train)`` for one seed, as our driver
compiles a single run unbatched; ``.lower(keys).compile()``) with evaluation OFF
inside the timed call (no-op ``eval_callback``, ``eval_freq = total_timesteps``), times the compiled call
``repeats`` times (best kept), reads the env steps actually taken from the final ``global_step`` and, when
``evaluate``, evaluates every seed's final policy afterwards, untimed, with rejax's own evaluator (``episodes``
fresh episodes per seed). Prints ONE JSON object on the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job", required=True, help="JSON job file (see the module docstring)")
    args = p.parse_args(argv)
    with open(args.job) as f:
        job = json.load(f)

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_compilation_cache", False)
    from importlib.metadata import version

    import rejax
    from rejax.evaluate import evaluate

    cls = {"ppo": rejax.PPO, "pqn": rejax.PQN, "td3": rejax.TD3, "sac": rejax.SAC}[job["algo"]]
    episodes = int(job.get("episodes", 128))
    results = []
    for run in job["runs"]:
        n, total = int(run["seeds"]), int(run["timesteps"])
        algo = cls.create(**job["config"], total_timesteps=total, eval_freq=total, skip_initial_evaluation=True)
        timed = algo.replace(eval_callback=lambda a, ts, rng: jnp.zeros((), jnp.float32))
        keys = jax.random.split(jax.random.PRNGKey(int(run.get("seed", 0))), n)
        t0 = time.perf_counter()
        if n == 1:  # one seed: rejax's single-run program (jit(train)), as ours is (run_axis.over_runs)
            def train(k, timed=timed):
                return jax.tree.map(lambda a: jnp.asarray(a)[None], timed.train(k[0]))
        else:
            train = jax.vmap(timed.train)
        compiled = jax.jit(train).lower(keys).compile()
        compile_s = time.perf_counter() - t0
        times, out = [], None
        for _ in range(max(1, int(run.get("repeats", 1)))):
            del out
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(keys))
            times.append(time.perf_counter() - t0)
        ts = out[0]
        steps_per_seed = int(jax.device_get(ts.global_step)[0])
        best = min(times)
        res = {"seeds": n, "timesteps": total, "steps_per_seed": steps_per_seed, "compile_s": compile_s,
               "run_s": best, "run_s_all": times, "steps_per_s": steps_per_seed * n / best,
               "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if run.get("evaluate"):
            def one(t, k, algo=algo):
                act = algo.make_act(t)
                return evaluate(act, k, algo.env, algo.env_params, episodes,
                                      algo.env_params.max_steps_in_episode)[1]

            ekeys = jax.random.split(jax.random.PRNGKey(10_000), n)
            returns = jax.jit(jax.vmap(one))(ts, ekeys)
            res["eval_returns"] = [float(x) for x in jnp.mean(returns, axis=1)]
        results.append(res)
        msg = f"rejax {job['algo']}: {n} seed(s): compile {compile_s:.1f}s, {res['steps_per_s']:,.0f} steps/s"
        if "eval_returns" in res:
            msg += f", eval return {sum(res['eval_returns']) / n:.1f}"
        print(msg, file=sys.stderr, flush=True)
        del compiled, out, ts
        jax.clear_caches()
    print(json.dumps({
        "rejax_version": version("rejax"), "gymnax_version": version("gymnax"), "jax_version": jax.__version__,
        "device": str(jax.devices()[0]), "algo": job["algo"], "config": job["config"], "results": results,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
