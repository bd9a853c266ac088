"""Peer side of ``experiments/bench.py`` (``python -m plasticine_jax bench``): rejax 0.1.3's PPO timed exactly like our

Runs inside rejax's own venv (rejax 0.1.3 needs gymnax 0.0.9, which cannot share a venv with gymnax 1.x), so
it imports nothing from plasticine_jax. For each seed count it compiles ``jax.jit(jax.vmap(algo.train))``
(``.lower(keys).compile()``), times the compiled call ``--repeats`` times (best kept) and prints ONE JSON
object on the last stdout line.

Workload (CleanRL / PureJaxRL CartPole PPO, the ``cartpole`` preset of plasticine_jax): 4 envs x 128 steps,
4 epochs x 4 minibatches, separate 64-64 tanh actor and critic, lr 2.5e-4, clip 0.2, ent 0.01, vf 0.5,
gamma 0.99, lambda 0.95, grad-norm clip 0.5. Evaluation is OFF in the timed call (rejax's eval_callback is
replaced by a no-op and ``eval_freq = total_timesteps``, so the train loop is one fori_loop over all
iterations); the final policy is evaluated afterwards, untimed, with rejax's own evaluator (128 episodes).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="CartPole-v1", help="gymnax env id as rejax spells it")
    p.add_argument("--timesteps", type=int, default=102_400, help="env steps per seed")
    p.add_argument("--seeds", default="1,4", help="comma list of vmapped seed counts")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per seed count (best kept)")
    p.add_argument("--eval-seeds", type=int, default=4, help="seeds whose final policy is evaluated (untimed)")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_compilation_cache", False)
    from importlib.metadata import version

    from rejax import PPO

    total = args.timesteps
    config = dict(
        env=args.env, num_envs=4, num_steps=128, num_epochs=4, num_minibatches=4, learning_rate=2.5e-4,
        max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95, clip_eps=0.2, ent_coef=0.01, vf_coef=0.5,
        normalize_observations=False, normalize_rewards=False, total_timesteps=total, eval_freq=total,
        skip_initial_evaluation=True, agent_kwargs={"hidden_layer_sizes": [64, 64], "activation": "tanh"},
    )
    algo = PPO.create(**config)
    timed = algo.replace(eval_callback=lambda a, ts, rng: jnp.zeros((), jnp.float32))  # evaluation off
    batch = algo.num_envs * algo.num_steps
    steps_per_seed = math.ceil(algo.eval_freq / batch) * math.ceil(total / algo.eval_freq) * batch

    evaluate = jax.jit(jax.vmap(lambda ts, k: algo.eval_callback(algo, ts, k)))
    results = []
    for n in [int(s) for s in args.seeds.split(",") if s.strip()]:
        keys = jax.random.split(jax.random.PRNGKey(0), n)
        t0 = time.perf_counter()
        compiled = jax.jit(jax.vmap(timed.train)).lower(keys).compile()
        compile_s = time.perf_counter() - t0
        mem = {}
        try:
            m = compiled.memory_analysis()
            mem = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("temp", "argument", "output")}
            mem["total"] = sum(mem.values())
        except Exception:  # noqa: BLE001 - not every backend reports it
            mem = {}
        times = []
        out = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(keys))
            times.append(time.perf_counter() - t0)
        ts = out[0]
        k = min(n, args.eval_seeds)
        sub = jax.tree.map(lambda x, k=k: x[:k], ts)
        _, returns = evaluate(sub, jax.random.split(jax.random.PRNGKey(1), k))
        final_return = float(jnp.mean(returns))
        best = min(times)
        results.append({
            "seeds": n, "steps_per_seed": steps_per_seed, "env_steps": steps_per_seed * n,
            "compile_s": compile_s, "run_s": best, "run_s_all": times,
            "steps_per_s": steps_per_seed * n / best, "xla_bytes": mem,
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "final_return": final_return, "final_return_seeds": k,
        })
        print(f"rejax: {n} seed(s): compile {compile_s:.1f}s, {steps_per_seed * n / best:,.0f} steps/s, "
              f"eval return {final_return:.1f}", file=sys.stderr, flush=True)
        del compiled, out, ts, sub
    cfg_out = {k: v for k, v in config.items()}
    print(json.dumps({
        "rejax_version": version("rejax"), "gymnax_version": version("gymnax"), "jax_version": jax.__version__,
        "device": str(jax.devices()[0]), "config": cfg_out,
        "notes": ["evaluation off in the timed call (no-op eval_callback, eval_freq = total_timesteps)",
                  "final_return: rejax's evaluator, 128 episodes per seed, final policy, untimed"],
        "results": results,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
