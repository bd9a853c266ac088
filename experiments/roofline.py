"""How close a PPO/PQN parity workload runs to this CPU's matrix-multiply peak: an upper bound on any speed-up.

For a workload of ``parity.py`` this counts the dense-layer FLOPs one env step costs (rollout forward pass, then
every epoch's forward and backward pass over the batch: weight gradients for every layer, input gradients for
every layer but the first), times our compiled ``jit(vmap(train))`` (plasticity metrics on, as in the parity
table) and reports the FLOP rate it reaches against the rate XLA:CPU reaches on the workload's own matmul
shapes alone (forward, weight-gradient and input-gradient products of one minibatch, vmapped over the seeds)
and on a large square matmul. rejax's steps/s can be read from a ``parity.py --out`` JSON to give its rate for the
same FLOPs. A learner at ~100 % of the matmul rate cannot be made much faster by any program change that keeps
its arithmetic; only the overhead above that is left to win.

    python experiments/roofline.py --workloads ppo-cartpole,ppo-breakout --seeds 1,16 --parity parity.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import parity  # noqa: E402  (experiments/parity.py: WORKLOADS, speed_program, best_alternating)


def dense_layers(learner) -> list[tuple[int, int, bool]]:
    """(in, out, takes the observation) of every 2-D kernel of the learner's units."""
    import jax
    import numpy as np

    obs_dim = int(np.prod(learner.env.observation_space.shape))
    out = []
    for spec in learner.unit_specs().values():
        for leaf in jax.tree.leaves(spec.network.param_shapes):
            if len(leaf.shape) == 2:
                out.append((int(leaf.shape[0]), int(leaf.shape[1]), int(leaf.shape[0]) == obs_dim))
    return out


def flops_per_env_step(learner) -> float:
    """Dense-layer FLOPs per env step: forward in the rollout, then ``update_epochs`` x (forward + weight
    gradients + input gradients of all but the observation layers) per sample of the batch."""
    layers = dense_layers(learner)
    fwd = sum(2 * i * o for i, o, _ in layers)
    bwd = sum(2 * i * o * (1 if first else 2) for i, o, first in layers)
    return fwd + learner.cfg.update_epochs * (fwd + bwd)


def _best_time(fn, args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_rate(learner, seeds: int, repeats: int = 20) -> float:
    """FLOP/s XLA:CPU reaches on one minibatch's products alone (forward x@W, weight gradient x^T@g and input
    gradient g@W^T of every layer, vmapped over ``seeds``), each product 8 times in a scan per call so the call
    overhead does not count. Each iteration scales an input by the carry and sums the product into it, so no
    product is hoisted or folded; those two elementwise passes are counted as matmul time (a generous ceiling)."""
    import jax
    import jax.numpy as jnp

    mb = learner.env_steps_per_update // learner.cfg.num_minibatches
    total_flops, total_s = 0.0, 0.0
    for i, o, first in dense_layers(learner):
        k = jax.random.split(jax.random.PRNGKey(i * 1000 + o), 3)
        x = jax.random.normal(k[0], (seeds, mb, i))
        w = jax.random.normal(k[1], (seeds, i, o))
        g = jax.random.normal(k[2], (seeds, mb, o))
        products = [(lambda x, w, g: x @ w), (lambda x, w, g: jnp.swapaxes(x, 1, 2) @ g)]
        if not first:
            products.append(lambda x, w, g: g @ jnp.swapaxes(w, 1, 2))
        for p in products:
            def body(c, _, p=p, x=x, w=w, g=g):  # each product depends on the last: nothing hoisted or folded
                return c + 1e-30 * p(x * c, w, g).sum(), None

            fn = jax.jit(lambda x, w, g, body=body: jax.lax.scan(
                lambda c, _: body(c, _, x=x, w=w, g=g), jnp.float32(1.0), None, 8)[0])
            total_s += _best_time(fn, (x, w, g), repeats) / 8
            total_flops += 2 * seeds * mb * i * o
    return total_flops / total_s


def square_rate(n: int = 2048, repeats: int = 5) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    return 2 * n**3 / _best_time(jax.jit(jnp.dot), (a, a), repeats)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", default="ppo-cartpole,ppo-breakout,pqn-cartpole,pqn-breakout")
    p.add_argument("--seeds", default="1,16", help="comma list of seed counts")
    p.add_argument("--rounds", type=int, default=3, help="timed calls of our learner, fastest kept")
    p.add_argument("--parity", default=None, help="a parity.py --out JSON: rejax's steps/s at the same cells")
    args = p.parse_args(argv)
    from bench import machine_info

    rejax = {}
    if args.parity:
        for name, e in json.loads(Path(args.parity).read_text())["workloads"].items():
            for r in e.get("runs", []):
                if r["rejax"].get("eval_returns") is None:
                    rejax[(name, r["rejax"]["seeds"])] = r["rejax"]["steps_per_s"]
    print(f"# {machine_info()}")
    print(f"# square matmul 2048^3: {square_rate() / 1e9:.0f} GFLOP/s")
    print("| workload | seeds | MFLOP / env step | ours steps/s | ours GFLOP/s | rejax GFLOP/s | matmul-only GFLOP/s "
          "| ours / matmul-only |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.workloads.split(","):
        w = parity.WORKLOADS[name]
        if w.algo not in ("ppo", "pqn"):
            raise SystemExit(f"roofline counts PPO and PQN workloads only, not {name}")
        learner = parity.our_learner(w, w.speed_timesteps)
        f = flops_per_env_step(learner)
        for seeds in (int(s) for s in args.seeds.split(",")):
            compiled, keys, steps, _ = parity.speed_program(w, seeds)
            t = parity.best_alternating({name: (compiled, keys)}, args.rounds)[name]
            ours = steps / t
            peak = matmul_rate(learner, seeds)
            rj = rejax.get((name, seeds))
            rj_rate = f"{rj * f / 1e9:.0f}" if rj else "-"
            print(f"| {name} | {seeds} | {f / 1e6:.3f} | {ours:,.0f} | {ours * f / 1e9:.0f} | {rj_rate} "
                  f"| {peak / 1e9:.0f} | {ours * f / peak:.0%} |", flush=True)
            del compiled


if __name__ == "__main__":
    main()
