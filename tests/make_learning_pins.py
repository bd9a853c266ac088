"""Regenerates tests/data/learning_pins.npz for tests/test_learning_pins.py (only when a change is intended)."""

# python tests/make_learning_pins.py              all learners
# python tests/make_learning_pins.py ppo sac      only these (the others' pins are kept)
# python tests/make_learning_pins.py --check      writes nothing: how far a 1% change of each learning rate and a
#                                                 differently batched run (seeds one at a time) move each pin

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # as tests/conftest.py: the pins are CPU numbers
sys.path.insert(0, str(Path(__file__).parent))

from test_learning_pins import ATOL_CURVE, ATOL_PARAMS, CONFIGS, PINS, RTOL_CURVE, RTOL_PARAMS, record  # noqa: E402

LR_FIELDS = {"ppo": ("learning_rate",), "pqn": ("learning_rate",), "c51": ("learning_rate",),
             "td3": ("actor_lr", "critic_lr"), "sac": ("actor_lr", "critic_lr", "alpha_lr")}


def worst(got: dict, ref: dict) -> tuple[float, str]:
    """The largest |got - ref| / (atol + rtol |ref|) over the pinned arrays, with the test's tolerances (> 1 fails)."""
    out, where = 0.0, ""
    for k, r in ref.items():
        g = got[k]
        params = k.endswith(("param_sums", "param_abs"))
        rtol, atol = (RTOL_PARAMS, ATOL_PARAMS) if params else (RTOL_CURVE, ATOL_CURVE)
        both = np.isfinite(r) & np.isfinite(g)
        if not np.array_equal(np.isfinite(r), np.isfinite(g)):
            return float("inf"), k + " (NaN pattern)"
        if both.any():
            x = float((np.abs(g[both] - r[both]) / (atol + rtol * np.abs(r[both]))).max())
            if x > out:
                out, where = x, k
    return out, where


def check(algos: list[str]) -> None:
    for algo in algos:
        ref = record(algo)
        cfg = CONFIGS[algo][0]
        for field in LR_FIELDS[algo.split("-")[0]]:
            r, k = worst(record(algo, replace(cfg, **{field: getattr(cfg, field) * 1.01})), ref)
            print(f"{algo}: {field} x1.01 moves the pin by {r:.3g} x its tolerance (worst: {k})")
        r, k = worst(record(algo, vmap=False), ref)
        print(f"{algo}: seeds run one at a time (not vmapped): {r:.3g} x tolerance (worst: {k or 'identical'})")


def main(argv: list[str]) -> None:
    if "--check" in argv:
        check([a for a in argv if a != "--check"] or list(CONFIGS))
        return
    algos = argv or list(CONFIGS)
    unknown = set(algos) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown learner(s) {', '.join(sorted(unknown))}; pinned: {', '.join(CONFIGS)}")
    out = {k: v for k, v in np.load(PINS).items() if k.split("/")[0] not in algos} if PINS.exists() else {}
    for algo in algos:
        rec = record(algo)
        out.update(rec)
        for k, v in rec.items():
            what = (f"{v.shape[0]} leaves, total per seed {np.array2string(v.sum(0), precision=6)}"
                    if k.endswith(("param_sums", "param_abs")) else f"seed 0: {np.array2string(v[0], precision=4)}")
            print(f"{k:40s} {str(v.shape):8s} {what}")
    PINS.parent.mkdir(parents=True, exist_ok=True)
    np.savez(PINS, **out)
    print(f"wrote {len(out)} arrays for {', '.join(sorted({k.split('/')[0] for k in out}))} to {PINS}")


if __name__ == "__main__":
    main(sys.argv[1:])
