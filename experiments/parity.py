"""Learning parity and speed against rejax, side by side, in one run.

For each workload (a learner on an env with hyperparameters set equal to rejax's), both libraries train the same
number of env steps with the same seeds count:

* **learning**: ``--seeds`` (>= 8) vmapped seeds; every seed's final policy is evaluated on 128 fresh episodes
  (PPO/SAC: sampled actions, PQN: epsilon 0.005, TD3: deterministic; rejax's evaluator for rejax, the same
  protocol in ``plasticine_jax.algos.evaluate`` for ours). Reported: mean over seeds with a 95 % bootstrap CI
  (scipy.stats.bootstrap, BCa, 10,000 resamples), the fraction of seeds stuck below a workload's plateau and the
  ratio ours / rejax (raw, and of the margins over a uniformly random policy, which also reads right for
  negative returns);
* **speed**: total env steps per second of the compiled ``jit(vmap(train))`` (``jit(train)`` at 1 seed, for both:
  the single-run program our driver compiles; compile excluded, best of ``--repeats``) at ``--speed-seeds``
  seeds, ours WITH plasticity metrics (heavy metrics every 10 updates, cheap ones every update), rejax with its
  evaluation switched off; compile time at 1 seed.

rejax 0.1.3 runs in its own venv (it needs gymnax 0.0.9), driven by ``experiments/rejax_worker.py``. Machine,
versions and every figure go to ``--out`` (JSON) and are printed as two tables.

    python experiments/parity.py --out parity.json            # full run (about an hour on 2 CPU cores)
    python experiments/parity.py --quick                       # CI smoke: tiny budgets, 2 seeds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402  (experiments/bench.py: machine_info, ensure_peer_venv, _memory)

WORKER = Path(__file__).resolve().parent / "rejax_worker.py"


@dataclass(frozen=True)
class Workload:
    """One learner x env with both libraries' settings. ``ours``: overrides of our learner's config dataclass
    (``net`` a dict of NetConfig fields); ``rejax``: rejax ``create()`` kwargs."""

    algo: str
    env: str  # our env id; rejax's is the part after 'gymnax:'
    timesteps: int  # learning budget per seed
    speed_timesteps: int  # per seed, for the speed table
    ours: dict
    rejax: dict
    differs: str  # what still differs and why
    plateau: float | None = None  # a final return below this counts as stuck on the task's plateau
    quick_timesteps: int = 0


_MLP = dict(torso="mlp", init="lecun", head_init="lecun")
# rejax's optimizer semantics and GAE/targets in our options: its elementwise clip, Adam eps 1e-8 at a constant
# learning rate, every done ends the return (no truncation bootstrap)
_REJAX_OPT = dict(anneal_lr=False, clip="elementwise", adam_eps=1e-8, bootstrap_truncation=False)
_REJAX_PQN = dict(_REJAX_OPT, optimizer="adam", max_grad_norm=10.0, eps_start=1.0, eval_epsilon=0.005)

WORKLOADS: dict[str, Workload] = {
    # rejax configs/gymnax/cartpole.yaml (ppo), as shipped
    "ppo-cartpole": Workload(
        "ppo", "gymnax:CartPole-v1", 100_000, 50_000,
        ours=dict(_REJAX_OPT, num_envs=5, num_steps=100, update_epochs=5, num_minibatches=5, learning_rate=7.5e-4,
                  max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95, clip_coef=0.2, ent_coef=0.01, vf_coef=0.5,
                  net=dict(_MLP, widths=(64, 64), activation="tanh")),
        rejax=dict(env="CartPole-v1", agent_kwargs={"activation": "tanh"}, num_envs=5, num_steps=100, num_epochs=5,
                   num_minibatches=5, learning_rate=7.5e-4, max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95,
                   clip_eps=0.2, ent_coef=0.01, vf_coef=0.5),
        differs="advantage std: ours unbiased (torch), rejax biased (n=100: 0.5 %)",
        quick_timesteps=5_000),
    # the MinAtar setting: our minatar preset's shape with rejax's optimizer (rejax ships no MinAtar config)
    "ppo-breakout": Workload(
        "ppo", "gymnax:Breakout-MinAtar", 1_048_576, 32_768,
        ours=dict(_REJAX_OPT, num_envs=64, num_steps=128, update_epochs=4, num_minibatches=8, learning_rate=5e-4,
                  max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95, clip_coef=0.2, ent_coef=0.01, vf_coef=0.5,
                  net=dict(_MLP, widths=(256, 256), activation="relu")),
        rejax=dict(env="Breakout-MinAtar", agent_kwargs={"activation": "relu", "hidden_layer_sizes": [256, 256]},
                   num_envs=64, num_steps=128, num_epochs=4, num_minibatches=8, learning_rate=5e-4,
                   max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95, clip_eps=0.2, ent_coef=0.01, vf_coef=0.5),
        differs="advantage std: unbiased vs biased (n=1024: 0.05 %)", plateau=10.0, quick_timesteps=16_384),
    # rejax configs/gymnax/cartpole.yaml (pqn), as shipped
    "pqn-cartpole": Workload(
        "pqn", "gymnax:CartPole-v1", 524_288, 65_536,
        ours=dict(_REJAX_PQN, num_envs=16, num_steps=128, update_epochs=5, num_minibatches=16, learning_rate=3e-4,
                  gamma=0.99, q_lambda=0.9, eps_end=0.05, eps_fraction=0.5,
                  net=dict(_MLP, widths=(64, 64), activation="relu", layer_norm=True, ln_eps=1e-6, shared=True)),
        rejax=dict(env="CartPole-v1", num_envs=16, num_steps=128, num_minibatches=16, max_grad_norm=10,
                   learning_rate=3e-4, num_epochs=5, eps_start=1, eps_end=0.05, exploration_fraction=0.5, gamma=0.99,
                   td_lambda=0.9, normalize_observations=False),
        differs="TD loss: ours mean (Q-G)^2 (CleanRL), rejax 0.5 mean (Q-G)^2 (Adam is scale-free; the "
                "elementwise clip at 10 sees 2x our gradients); epsilon: ours per env step, rejax per rollout",
        quick_timesteps=16_384),
    # our PQN minatar preset's shape with rejax's optimizer and network (rejax ships no MinAtar config; its PQN
    # hard-codes 64-64 hidden layers)
    "pqn-breakout": Workload(
        "pqn", "gymnax:Breakout-MinAtar", 1_048_576, 32_768,
        ours=dict(_REJAX_PQN, num_envs=128, num_steps=32, update_epochs=2, num_minibatches=32, learning_rate=1e-4,
                  gamma=0.99, q_lambda=0.65, eps_end=0.01, eps_fraction=0.1,
                  net=dict(_MLP, widths=(64, 64), activation="relu", layer_norm=True, ln_eps=1e-6, shared=True)),
        rejax=dict(env="Breakout-MinAtar", num_envs=128,
                   num_steps=32, num_minibatches=32, max_grad_norm=10, learning_rate=1e-4, num_epochs=2, eps_start=1,
                   eps_end=0.01, exploration_fraction=0.1, gamma=0.99, td_lambda=0.65, normalize_observations=False),
        differs="as pqn-cartpole; 64-64 (rejax's PQN fixes its widths; our preset has 256-256)",
        plateau=None, quick_timesteps=16_384),
    # rejax configs/gymnax/pendulum.yaml (td3) without observation normalisation (ours has none for TD3 yet)
    "td3-pendulum": Workload(
        "td3", "gymnax:Pendulum-v1", 10_000, 5_000,
        ours=dict(num_envs=1, steps_per_update=100, actor_lr=1e-3, critic_lr=1e-3, adam_eps=1e-8, buffer_size=10_000,
                  gamma=0.99, tau=0.05, batch_size=100, policy_noise=0.1, noise_clip=0.25, exploration_noise=0.15,
                  learning_starts=1_000, policy_frequency=2, bootstrap_truncation=False, max_grad_norm=100.0,
                  clip="elementwise", net=dict(_MLP, widths=(64, 64), activation="swish")),
        rejax=dict(env="Pendulum-v1", actor_kwargs={"activation": "swish"}, critic_kwargs={"activation": "swish"},
                   num_envs=1, buffer_size=10_000, fill_buffer=1_000, batch_size=100, learning_rate=1e-3,
                   num_epochs=1, gamma=0.99, polyak=0.95, max_grad_norm=100, exploration_noise=0.3,
                   target_noise=0.2, target_noise_clip=0.5, policy_delay=2, normalize_observations=False),
        differs="noise: ours scales by the action range (0.15 x 2 = rejax's 0.3); observation normalisation off in "
                "both (rejax's config has it on; ours has none for TD3)", quick_timesteps=2_000),
    # rejax configs/gymnax/pendulum.yaml (sac) without observation normalisation
    "sac-pendulum": Workload(
        "sac", "gymnax:Pendulum-v1", 10_000, 5_000,
        ours=dict(num_envs=1, steps_per_update=100, actor_lr=1e-2, critic_lr=1e-2, alpha_lr=1e-2, adam_eps=1e-8,
                  buffer_size=10_000, gamma=0.99, tau=0.02, batch_size=256, learning_starts=256, policy_frequency=1,
                  alpha=1.0, autotune=True, bootstrap_truncation=False, max_grad_norm=0.0,
                  net=dict(_MLP, widths=(64, 64), activation="swish")),
        rejax=dict(env="Pendulum-v1", agent_kwargs={"activation": "swish"}, num_envs=1, buffer_size=10_000,
                   fill_buffer=256, batch_size=256, learning_rate=1e-2, num_epochs=1, gamma=0.99, polyak=0.98,
                   target_entropy_ratio=None, normalize_observations=False),
        differs="temperature: ours learns log alpha (CleanRL), rejax alpha itself (both start at 1); log-std "
                "bounds: ours tanh-rescaled to [-5, 2], rejax clipped to [-10, 2]; observation normalisation off "
                "in both", quick_timesteps=2_000),
}


# The options in which our earlier PPO defaults differed from rejax's (issue: "measure which of them matters").
# Each ablation row starts from the rejax-matched workload and puts ONE option back to our old default.
PPO_FACTORS: dict[str, tuple[str, dict]] = {
    "clip": ("clip global_norm (vs elementwise)", {"clip": "global_norm"}),
    "anneal": ("anneal_lr (vs constant)", {"anneal_lr": True}),
    "init": ("orthogonal init (vs lecun)", {"net": {"init": "orthogonal", "head_init": "orthogonal"}}),
    "eps": ("adam_eps 1e-5 (vs 1e-8)", {"adam_eps": 1e-5}),
    "bootstrap": ("bootstrap_truncation (vs off)", {"bootstrap_truncation": True}),
}
PPO_ALL_OLD = {"clip": "global_norm", "anneal_lr": True, "adam_eps": 1e-5, "bootstrap_truncation": True,
               "net": {"init": "orthogonal", "head_init": "orthogonal"}}


def with_options(w: Workload, change: dict) -> Workload:
    """The workload with some of our config options replaced (``net`` merged field by field)."""
    ours = {**w.ours, **{k: v for k, v in change.items() if k != "net"}}
    ours["net"] = {**w.ours.get("net", {}), **change.get("net", {})}
    return Workload(**{**w.__dict__, "ours": ours})


def run_ablation(name: str, seeds: int, timesteps: int, ui, factors: list[str] | None = None) -> list[dict]:
    """Learning of ``name`` (a PPO workload) with each of ``factors`` (keys of PPO_FACTORS, default all) put back
    alone, then all of them, ``seeds`` seeds each."""
    w = WORKLOADS[name]
    factors = list(PPO_FACTORS) if factors is None else factors
    variants = {"rejax-matched (all rejax settings)": {}, **dict(PPO_FACTORS[f] for f in factors),
                "all our old defaults": PPO_ALL_OLD}
    rows = []
    for label, change in variants.items():
        ui.progress(f"ablation {name}: {label}")
        r = run_ours(with_options(w, change), seeds, timesteps, 1, True)
        rets = r["eval_returns"]
        row = {"variant": label, "change": change, "returns": rets, "mean_ci": mean_ci(rets)}
        if w.plateau is not None:
            row["stuck"] = sum(x < w.plateau for x in rets) / len(rets)
        rows.append(row)
        ui.note(f"ablation {name}: {label}: {_ret(row['mean_ci'])}")
    return rows


# --------------------------------------------------------------------------------------------- statistics
def mean_ci(x: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): BCa bootstrap CI of the mean over seeds (scipy.stats.bootstrap, 10,000 resamples)."""
    import numpy as np
    from scipy.stats import bootstrap

    a = np.asarray(x, np.float64)
    if a.size < 2 or np.allclose(a, a[0]):
        return float(a.mean()), float(a.mean()), float(a.mean())
    res = bootstrap((a,), np.mean, confidence_level=confidence, n_resamples=10_000, method="BCa",
                    random_state=np.random.default_rng(0))
    return float(a.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def random_return(env_id: str, episodes: int = 1024) -> float:
    """Mean return of uniformly random actions on fresh episodes (the floor of the normalised ratio)."""
    import jax

    from plasticine_jax.algos.evaluate import make_episode_returns
    from plasticine_jax.envs import Box, make_env

    space = make_env(env_id, 1).action_space
    returns = make_episode_returns(env_id, episodes)

    def policy(obs, key):
        if isinstance(space, Box):
            return jax.random.uniform(key, (episodes, *space.shape), minval=space.low_array, maxval=space.high_array)
        return jax.random.randint(key, (episodes,), 0, space.n)

    return float(jax.jit(lambda k: returns(policy, k).mean())(jax.random.PRNGKey(123)))


def learning_summary(w: Workload, ours: list[float], rejax: list[float]) -> dict:
    """Mean and CI of both, the ratio of means (when rejax's is positive) and the ratio of the means' margins
    over a uniformly random policy (meaningful for negative-return tasks such as Pendulum too)."""
    a, b = mean_ci(ours), mean_ci(rejax)
    rand = random_return(w.env)
    out = {"seeds": len(ours), "ours": a, "rejax": b, "random": rand,
           "ratio": a[0] / b[0] if b[0] > 0 else None,
           "ratio_above_random": (a[0] - rand) / (b[0] - rand) if b[0] != rand else None,
           "ours_per_seed": ours, "rejax_per_seed": rejax}
    if w.plateau is not None:
        out["stuck_ours"] = sum(x < w.plateau for x in ours) / len(ours)
        out["stuck_rejax"] = sum(x < w.plateau for x in rejax) / len(rejax)
    return out


# --------------------------------------------------------------------------------------------- ours
def our_learner(w: Workload, timesteps: int, metrics_every: int = 10):
    from plasticine_jax.algos import registry
    from plasticine_jax.metrics.config import MetricsConfig
    from plasticine_jax.nets import NetConfig

    cfg_cls = registry.config_class(w.algo)
    over = dict(w.ours)
    net = dict(over.get("net", {}))
    over["net"] = NetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in net.items()})
    cfg = cfg_cls(**over)
    return registry.learner_module(w.algo).make_train(cfg, w.env, timesteps, (), MetricsConfig(every=metrics_every))


def speed_program(w: Workload, seeds: int):
    """Our learner on ``w``'s speed budget, compiled as ``jit(vmap(train))`` at ``seeds`` seeds and called once:
    (compiled, keys, total env steps per call, compile seconds). For the in-process A/Bs (threefry_ab,
    shuffle_bench), which build one program per variant and time them with ``best_alternating``."""
    import jax

    learner = our_learner(w, w.speed_timesteps)
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    t0 = time.perf_counter()
    compiled = jax.jit(jax.vmap(learner.train)).lower(keys).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(keys))  # warm-up call
    return compiled, keys, learner.num_updates * learner.env_steps_per_update * seeds, compile_s


def best_alternating(calls: dict, rounds: int) -> dict:
    """``{name: (compiled, *args)}`` (e.g. ``(compiled, keys)``) called in turn ``rounds`` times; each name's fastest
    call in seconds, so the machine's drift hits every variant alike."""
    import jax

    best = dict.fromkeys(calls, float("inf"))
    for _ in range(max(1, rounds)):
        for name, (compiled, *args) in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def preset_workload(w: Workload) -> tuple[str, Workload]:
    """(preset name, ``w`` with our side replaced by the preset a new user meets on ``w.env``)."""
    from plasticine_jax.algos import registry

    mod = registry.config_module(w.algo)
    name = mod.default_preset(w.env)
    cfg = asdict(mod.PRESETS[name])
    return name, Workload(**{**w.__dict__, "ours": cfg})


def run_ours(w: Workload, seeds: int, timesteps: int, repeats: int, evaluate: bool) -> dict:
    import jax
    import numpy as np

    from plasticine_jax.algos.evaluate import make_evaluator

    learner = our_learner(w, timesteps)
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    compiled, compile_s, times, out = bench.compile_and_time(learner, keys, repeats)
    steps_per_seed = learner.num_updates * learner.env_steps_per_update
    best = min(times)
    res = {"seeds": seeds, "timesteps": timesteps, "steps_per_seed": steps_per_seed, "compile_s": compile_s,
           "run_s": best, "run_s_all": times, "steps_per_s": steps_per_seed * seeds / best,
           "xla_bytes": bench._memory(compiled)}
    if evaluate:
        ev = make_evaluator(learner, 128)
        ekeys = jax.random.split(jax.random.PRNGKey(10_000), seeds)
        returns = np.asarray(jax.jit(jax.vmap(ev))(out[0], ekeys))
        res["eval_returns"] = [float(r) for r in returns.mean(axis=1)]
    del out, compiled
    jax.clear_caches()
    return res


# --------------------------------------------------------------------------------------------- rejax
def run_rejax(py: Path, w: Workload, runs: list[dict], timeout: int) -> dict:
    job = {"algo": w.algo, "config": w.rejax, "runs": runs, "episodes": 128}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    try:
        r = subprocess.run([str(py), str(WORKER), "--job", f.name], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")})
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"rejax worker failed on {w.algo}: {' | '.join(tail)[:400]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- driver
def _faster(a: dict, b: dict) -> dict:
    """Of two timings of the same speed cell, the faster one, with every call's time kept in ``run_s_all``."""
    best = dict(min((a, b), key=lambda r: r["run_s"]))
    best["run_s_all"] = list(a["run_s_all"]) + list(b["run_s_all"])
    return best


def _ints(spec: str) -> list[int]:
    out = [int(s) for s in spec.split(",") if s.strip()]
    if not out or min(out) < 1:
        raise ValueError(f"expected a comma list of positive integers, got '{spec}'")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python experiments/parity.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI smoke: tiny budgets, 2 seeds, speed at 1 seed")
    p.add_argument("--workloads", default="all", help=f"comma list from {', '.join(WORKLOADS)}, all (default) or none")
    p.add_argument("--seeds", type=int, default=None, help="seeds of the learning table (default 8; quick 2)")
    p.add_argument("--speed-seeds", default=None, help="seed counts of the speed table (default 1,4,16,64)")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per speed measurement, best kept")
    p.add_argument("--rounds", type=int, default=1,
                   help="speed: run rejax then ours this many times in turn and keep each cell's fastest call, so "
                        "a shared machine's drift hits both libraries alike (default 1)")
    p.add_argument("--no-speed", action="store_true", help="learning table only")
    p.add_argument("--no-learning", action="store_true", help="speed table only")
    p.add_argument("--defaults", action="store_true",
                   help="also train the preset a new user meets on each PPO/PQN workload's env (its default "
                        "preset) on the same budget and seeds, compared with rejax's settings of that workload")
    p.add_argument("--ablation", default="", help="comma list of PPO workloads on which to put each of our old "
                   "defaults back one at a time (clip, lr anneal, init, Adam eps, truncation bootstrap)")
    p.add_argument("--ablation-timesteps", type=int, default=None, help="per seed (default: the workload's)")
    p.add_argument("--ablation-factors", default="all",
                   help=f"which options to put back alone, from {', '.join(PPO_FACTORS)} (default all)")
    p.add_argument("--peer-venv", default=None, help="venv for rejax (default ~/.cache/plasticine-jax/rejax-venv)")
    p.add_argument("--peer-timeout", type=int, default=7200, help="seconds allowed per rejax worker call")
    p.add_argument("--out", default=None, help="write every figure to this JSON file")
    p.add_argument("--report", nargs="+", default=None, metavar="JSON",
                   help="print the tables of earlier --out files (merged in order) and exit; no training")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.report:
        return report_from(args.report, args.out)
    try:
        spec = args.workloads.strip().lower()
        names = list(WORKLOADS) if spec == "all" else [] if spec in ("", "none") else \
            [s.strip() for s in spec.split(",") if s.strip()]
        bad = [n for n in names if n not in WORKLOADS]
        if bad:
            raise ValueError(f"unknown workload '{bad[0]}'; available: {', '.join(WORKLOADS)}")
        seeds = args.seeds or (2 if args.quick else 8)
        speed_seeds = _ints(args.speed_seeds or ("1" if args.quick else "1,4,16,64"))
        if args.rounds < 1 or args.repeats < 1:
            raise ValueError("--rounds and --repeats take positive integers")
        ablation = [a.strip() for a in args.ablation.split(",") if a.strip()]
        ppo = [k for k, v in WORKLOADS.items() if v.algo == "ppo"]
        if any(a not in ppo for a in ablation):
            raise ValueError(f"--ablation takes PPO workloads ({', '.join(ppo)})")
        factors = list(PPO_FACTORS) if args.ablation_factors == "all" else \
            [f.strip() for f in args.ablation_factors.split(",") if f.strip()]
        if any(f not in PPO_FACTORS for f in factors):
            raise ValueError(f"--ablation-factors takes {', '.join(PPO_FACTORS)} or all")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ui = bench.UI()
    venv = Path(args.peer_venv).expanduser() if args.peer_venv else \
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "plasticine-jax" / "rejax-venv"
    py, versions, note = bench.ensure_peer_venv(venv, ui)
    if py is None:
        print(f"error: rejax is needed for the comparison and could not be set up: {note}", file=sys.stderr)
        return 1
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": bench.machine_info(),
                              "rejax": versions, "peer_note": note, "quick": args.quick,
                              "speed_rounds": args.rounds, "speed_repeats": args.repeats, "workloads": {}}
    m = report["machine"]
    ui.note(f"machine: {m['cpu']}, {m['usable_cores']} usable cores, jax {m['jax']}; rejax {versions['rejax']} "
            f"(gymnax {versions['gymnax']}, jax {versions['jax']})")
    for name in names:
        w = WORKLOADS[name]
        total = w.quick_timesteps if args.quick else w.timesteps
        speed_total = w.quick_timesteps if args.quick else w.speed_timesteps
        entry: dict[str, Any] = {"algo": w.algo, "env": w.env, "timesteps": total, "speed_timesteps": speed_total,
                                 "ours_config": w.ours,
                                 "rejax_config": w.rejax, "differs": w.differs, "plateau": w.plateau}
        runs = []
        if not args.no_learning:
            runs.append({"seeds": seeds, "timesteps": total, "repeats": 1, "evaluate": True})
        if not args.no_speed:
            runs += [{"seeds": n, "timesteps": speed_total, "repeats": args.repeats} for n in speed_seeds]
        peer, mine = [], []
        for round_ in range(args.rounds if runs else 0):
            todo = runs if round_ == 0 else [r for r in runs if not r.get("evaluate")]
            ui.progress(f"{name}: rejax ({len(todo)} runs), round {round_ + 1}/{args.rounds}")
            peer_r = run_rejax(py, w, todo, args.peer_timeout)["results"]
            ui.progress(f"{name}: ours ({len(todo)} runs), round {round_ + 1}/{args.rounds}")
            mine_r = [run_ours(w, r["seeds"], r["timesteps"], r["repeats"], r.get("evaluate", False)) for r in todo]
            if round_ == 0:
                peer, mine = peer_r, mine_r
            else:  # later rounds: speed runs only, the faster call of the rounds kept per cell
                off = len(runs) - len(todo)
                for i, (a, b) in enumerate(zip(mine_r, peer_r, strict=True)):
                    mine[off + i] = _faster(mine[off + i], a)
                    peer[off + i] = _faster(peer[off + i], b)
        entry["runs"] = [{"ours": a, "rejax": b} for a, b in zip(mine, peer, strict=True)]
        if not args.no_learning:
            entry["learning"] = learning_summary(w, mine[0]["eval_returns"], peer[0]["eval_returns"])
        if args.defaults and w.algo in ("ppo", "pqn"):
            preset, pw = preset_workload(w)
            ui.progress(f"{name}: our default preset '{preset}'")
            r = run_ours(pw, seeds, total, 1, True)
            entry["defaults"] = {"preset": preset, "ours_per_seed": r["eval_returns"],
                                 "ours": mean_ci(r["eval_returns"])}
        report["workloads"][name] = entry
        _print_workload(ui, name, entry)
        if args.out:  # after every workload, so a long run cut short keeps what it measured
            Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    for name in ablation:
        w = WORKLOADS[name]
        total = args.ablation_timesteps or (w.quick_timesteps if args.quick else w.timesteps)
        report.setdefault("ablation", {})[name] = {"timesteps": total, "seeds": seeds,
                                                   "rows": run_ablation(name, seeds, total, ui, factors)}
    _print_tables(ui, report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
        ui.note(f"wrote {args.out}")
    return 0


def report_from(paths: list[str], out: str | None) -> int:
    """Merge earlier reports (later files win per workload / ablation), recompute the summaries, print."""
    merged: dict[str, Any] = {"workloads": {}, "ablation": {}}
    for path in paths:
        try:
            r = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            print(f"error: cannot read report {path}: {e}", file=sys.stderr)
            return 1
        for k, v in r.items():
            if k == "workloads":
                for name, e in v.items():  # later files add to (and override parts of) earlier entries
                    merged[k].setdefault(name, {}).update({f: x for f, x in e.items() if x != []})
            elif k == "ablation":
                merged[k].update(v)
            else:
                merged[k] = v
    for name, e in merged["workloads"].items():
        if "learning" in e and name in WORKLOADS:
            lr = e["learning"]
            e["learning"] = learning_summary(WORKLOADS[name], lr["ours_per_seed"], lr["rejax_per_seed"])
    ui = bench.UI()
    _print_tables(ui, merged)
    if out:
        Path(out).write_text(json.dumps(merged, indent=1, default=str))
    return 0


def _ret(m: tuple[float, float, float]) -> str:
    return f"{m[0]:.1f} [{m[1]:.1f}, {m[2]:.1f}]"


def _ratio(lr: dict) -> str:
    raw = "-" if lr.get("ratio") is None else f"{lr['ratio']:.2f}"
    above = "-" if lr.get("ratio_above_random") is None else f"{lr['ratio_above_random']:.2f}"
    return f"{raw} / {above}"


def _print_workload(ui, name: str, e: dict) -> None:
    if "learning" in e:
        lr = e["learning"]
        ui.note(f"{name}: ours {_ret(lr['ours'])} vs rejax {_ret(lr['rejax'])} ({_ratio(lr)})")


def _print_tables(ui, report: dict) -> None:
    rows = []
    for name, e in report["workloads"].items():
        d, lr = e.get("defaults"), e.get("learning")
        if d and lr:
            rej = mean_ci(lr["rejax_per_seed"])
            rows.append([name, d["preset"], f"{e['timesteps']:,}", _ret(mean_ci(d["ours_per_seed"])), _ret(rej)])
    if rows:
        ui.table("Defaults a new user meets: our env's default preset vs rejax's settings, same budget and seeds",
                 "final return, 128 fresh episodes per seed, mean [95% CI]",
                 ["workload", "our preset", "steps/seed", "our preset", "rejax"], rows)
    for name, ab in report.get("ablation", {}).items():
        rows = [[r["variant"], _ret(r["mean_ci"]), f"{r['stuck']:.0%}" if "stuck" in r else "-"] for r in ab["rows"]]
        ui.table(f"Ablation on {name}: our old PPO defaults put back one at a time ({ab['seeds']} seeds, "
                 f"{ab['timesteps']:,} steps each)", "final return, 128 fresh episodes per seed, mean [95% CI]",
                 ["variant", "return", "stuck"], rows)
    rows = []
    for name, e in report["workloads"].items():
        if "learning" not in e:
            continue
        lr = e["learning"]
        stuck = f"{lr['stuck_ours']:.0%} / {lr['stuck_rejax']:.0%}" if "stuck_ours" in lr else "-"
        rows.append([name, f"{e['timesteps']:,}", str(lr["seeds"]), _ret(lr["ours"]), _ret(lr["rejax"]),
                     _ratio(lr), f"{lr['random']:.1f}", stuck])
    if rows:
        ui.table("Learning parity: final return, 128 fresh episodes per seed, mean [95% bootstrap CI] over seeds",
                 "same hyperparameters, env and budget in both; 'stuck' = seeds below the task's plateau",
                 ["workload", "steps/seed", "seeds", "ours", "rejax", "ours/rejax raw / above random", "random",
                  "stuck ours / rejax"], rows)
        for name, e in report["workloads"].items():
            ui.note(f"{name}: still differs: {e['differs']}")
    rows = []
    for name, e in report["workloads"].items():
        for r in e.get("runs", []):
            a, b = r["ours"], r["rejax"]
            if a.get("eval_returns") is not None:
                continue
            rows.append([name, str(a["seeds"]), f"{a['steps_per_seed']:,}", f"{a['steps_per_s']:,.0f}",
                         f"{b['steps_per_s']:,.0f}", f"{a['steps_per_s'] / b['steps_per_s']:.2f}",
                         f"{a['compile_s']:.1f} / {b['compile_s']:.1f}"])
    if rows:
        ui.table("Speed: total env steps/s of jit(vmap(train)) (1 seed: jit(train)), compile excluded, best of "
                 "--repeats",
                 "ours with plasticity metrics (heavy every 10 updates); rejax evaluation off; same env steps",
                 ["workload", "seeds", "steps/seed", "ours", "rejax", "ours/rejax", "compile s ours / rejax"], rows)


if __name__ == "__main__":
    sys.exit(main())
