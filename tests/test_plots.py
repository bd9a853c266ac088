"""``python -m plasticine_jax plot``: the expected PNGs for a run, a sweep and a continual run directory; the
aggregate statistics against independent numpy/scipy computations; TensorBoard event files read back equal
metrics.jsonl under the reference's tag names; bad input is one ``error:`` line, exit 2, nothing written."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rliable")
pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402
from scipy import stats as st  # noqa: E402

from plasticine_jax.analysis import plot_cli, plots, stats  # noqa: E402
from plasticine_jax.analysis import tensorboard as tb  # noqa: E402
from plasticine_jax.analysis.groups import label_runs  # noqa: E402
from plasticine_jax.analysis.table import load  # noqa: E402
from plasticine_jax.cli import main as cli_main  # noqa: E402
from plasticine_jax.run.driver import _final_returns  # noqa: E402

REPS = ["--reps", "200"]
PNG = b"\x89PNG\r\n\x1a\n"


def _rows(d: Path) -> list[dict]:
    return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def _logged(rows: list[dict], prefix: str = "plasticity/") -> set[str]:
    return {k for r in rows for k, v in r.items() if k.startswith(prefix) and _finite(v)}


def _pngs(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*.png")}


def _check_png(p: Path) -> None:
    assert p.stat().st_size > 0 and p.read_bytes()[:8] == PNG
    with Image.open(p) as im:
        im.verify()
    with Image.open(p) as im:
        assert im.size[0] > 100 and im.size[1] > 50


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real 2-seed x 2-learning-rate PPO CartPole run (the acceptance check's kind of directory)."""
    out = tmp_path_factory.mktemp("plots") / "run"
    assert cli_main(["train", "--num-seeds", "2", "--total-timesteps", "6000", "--ppo.num-envs", "4",
                     "--ppo.num-steps", "50", "--log-every", "2", "--no-wandb", "--no-progress",
                     "--sweep", "lr=1e-3,3e-4", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def sweep_dir(run_dir, tmp_path_factory) -> Path:
    """A sweep directory by hand: cell ``a`` = the run, cell ``b`` = its copy labelled ReDo with halved returns."""
    d = tmp_path_factory.mktemp("plots") / "sweep"
    for name, ivs, scale in (("a", [], 1.0), ("b", ["redo"], 0.5)):
        c = d / "cells" / name
        c.mkdir(parents=True)
        cfg = json.loads((run_dir / "config.json").read_text())
        cfg["interventions"] = ivs
        (c / "config.json").write_text(json.dumps(cfg))
        rows = _rows(run_dir)
        for r in rows:
            if _finite(r.get("charts/episodic_return")):
                r["charts/episodic_return"] *= scale
        (c / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "sweep.json").write_text(json.dumps({"cells": [{"name": "a", "axes": {"interventions": ""}},
                                                        {"name": "b", "axes": {"interventions": "redo"}}]}))
    return d


def _continual_dir(root: Path, seeds=(0, 1, 2), tasks: int = 3, span: int = 1000, every: int = 100) -> Path:
    """A continual run by hand: ``tasks`` tasks of ``span`` steps, a row every ``every`` steps, returns that
    climb within a task and drop at each switch, a dormant ratio every other row."""
    d = root / "cont"
    d.mkdir()
    cfg = {"run": {"algo": "ppo", "env": "gymnax:CartPole-v1"}, "interventions": [],
           "continual": {"num_tasks": tasks, "task_timesteps": span}}
    (d / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    rows = []
    for u, step in enumerate(range(every, tasks * span + 1, every), start=1):
        for s in seeds:
            task = (step - 1) // span
            ret = None if (u + s) % 7 == 0 else float(10 * (task + 1) + step % span / 10 + rng.normal())
            rows.append({"seed": s, "step": step, "update": u, "task": task, "charts/episodic_return": ret,
                         "plasticity/dormant_ratio": float(rng.uniform()) if u % 2 == 0 else None,
                         "plasticity/never_logged": None})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


# --- PNGs -------------------------------------------------------------------------------------------------------

def test_run_dir_writes_expected_pngs(run_dir, capsys):
    assert plot_cli.main([str(run_dir), *REPS]) == 0
    metrics = _logged(_rows(run_dir))
    assert metrics and "plasticity/dormant_ratio" in metrics
    expected = {"returns.png", "aggregate.png", "profile.png"} | {
        "metrics/" + k.removeprefix("plasticity/").replace("/", "_") + ".png" for k in metrics}
    assert _pngs(run_dir / "plots") == expected  # and no tasks.png: not a continual run
    for p in (run_dir / "plots").rglob("*.png"):
        _check_png(p)
    assert f"{len(expected)} figure(s)" in capsys.readouterr().out


def test_plot_command_and_out_and_metric_names(run_dir, tmp_path):
    """Through ``python -m plasticine_jax plot`` (cli dispatch): ``--out`` and ``--metric-names`` globs."""
    out = tmp_path / "figs"
    assert cli_main(["plot", str(run_dir), "--out", str(out), "--metric-names", "plasticity/*dormant*",
                     "losses/value_loss", *REPS]) == 0
    dormant = {k for k in _logged(_rows(run_dir)) if "dormant" in k}
    assert _pngs(out) == {"returns.png", "aggregate.png", "profile.png", "metrics/losses_value_loss.png"} | {
        "metrics/" + k.removeprefix("plasticity/").replace("/", "_") + ".png" for k in dormant}


def test_sweep_dir_groups_by_cell(sweep_dir, run_dir):
    assert plot_cli.main([str(sweep_dir), *REPS]) == 0
    for name in ("returns.png", "aggregate.png", "profile.png", "metrics/dormant_ratio.png"):
        _check_png(sweep_dir / "plots" / name)
    df = label_runs(load(sweep_dir))
    groups = {"a learning_rate=0.001", "a learning_rate=0.0003", "b learning_rate=0.001", "b learning_rate=0.0003"}
    assert set(df["group"]) == groups
    assert df.groupby("group")["run"].nunique().to_dict() == dict.fromkeys(groups, 2)
    # final scores: cell b is cell a halved, and cell a is summary.json's final_return, run for run
    fin = plots.final_scores(df).set_index(["group", "seed"])["final"]
    summary = json.loads((run_dir / "summary.json").read_text())["runs"]
    for r in summary:
        a = fin[(f"a learning_rate={r['learning_rate']:g}", r["seed"])]
        b = fin[(f"b learning_rate={r['learning_rate']:g}", r["seed"])]
        if r["final_return"] is None:
            assert math.isnan(a) and math.isnan(b)
        else:
            assert a == pytest.approx(r["final_return"], rel=1e-6) and b == pytest.approx(a / 2, rel=1e-6)


def test_continual_dir_tasks_png_and_per_task_results(tmp_path):
    d = _continual_dir(tmp_path)
    assert plot_cli.main([str(d), *REPS]) == 0
    assert _pngs(d / "plots") == {"returns.png", "tasks.png", "aggregate.png", "profile.png",
                                  "metrics/dormant_ratio.png"}  # never_logged (all null) skipped
    for p in (d / "plots").rglob("*.png"):
        _check_png(p)
    df = label_runs(load(d))
    assert plots.task_boundaries(df) == [1000, 2000]
    ends = plots.task_end_returns(df)
    rows = _rows(d)
    assert len(ends) == 3 * 3
    for _, e in ends.iterrows():
        seed = int(e["run"].rsplit("|", 1)[1])
        ret = [r["charts/episodic_return"] for r in rows if r["seed"] == seed and r["task"] == e["task"]
               and r["charts/episodic_return"] is not None]
        assert e["end_return"] == pytest.approx(np.mean(ret[-max(1, len(ret) // 10):]))


def _fake_run(d: Path, env: str, ivs: list[str], level: float, seeds=(0, 1, 2), updates: int = 20) -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"run": {"algo": "ppo", "env": env}, "interventions": ivs,
                                               "continual": {"num_tasks": 0, "task_timesteps": 0}}))
    rng = np.random.default_rng(len(env) + len(ivs))
    rows = [{"seed": s, "step": 100 * u, "update": u, "task": 0,
             "charts/episodic_return": level * u / updates + float(rng.normal()),
             "plasticity/dormant_ratio": float(rng.uniform())} for u in range(1, updates + 1) for s in seeds]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_sweep_over_envs_makes_envs_the_tasks(tmp_path):
    """Cells that differ in env and interventions: groups are the interventions, envs the aggregate's tasks."""
    d = tmp_path / "sw"
    cells = []
    for env, level in (("gymnax:CartPole-v1", 500.0), ("gymnax:Acrobot-v1", -100.0)):
        for ivs, gain in (([], 1.0), (["redo"], 0.8)):
            name = f"{env.split(':')[1]}__{ivs[0] if ivs else 'vanilla'}"
            _fake_run(d / "cells" / name, env, ivs, level * gain)
            cells.append({"name": name, "axes": {"env": env, "interventions": ",".join(ivs)}})
    (d / "sweep.json").write_text(json.dumps({"cells": cells}))
    assert plot_cli.main([str(d), *REPS]) == 0
    assert _pngs(d / "plots") == {"returns.png", "aggregate.png", "profile.png", "metrics/dormant_ratio.png"}
    df = label_runs(load(d))
    assert set(df["group"]) == {"vanilla", "redo"}
    ss = stats.score_matrix(plots.final_scores(df))
    assert ss.tasks == ["gymnax:Acrobot-v1", "gymnax:CartPole-v1"]
    assert {g: m.shape for g, m in ss.scores.items()} == {"vanilla": (3, 2), "redo": (3, 2)}
    for g, ivs in (("vanilla", ""), ("redo", "redo")):
        for j, env in enumerate(ss.tasks):
            sub = df[(df["run.env"] == env) & (df["interventions"] == ivs)]
            want = [stats.final_score(sub[sub["seed"] == s].sort_values("update")["charts/episodic_return"])
                    for s in (0, 1, 2)]
            np.testing.assert_allclose(ss.scores[g][:, j], want)


# --- statistics ---------------------------------------------------------------------------------------------------

def test_final_score_is_the_drivers_rule():
    """The driver's summary (``_final_returns``, which calls ``final_score``) and the plots share one rule: the mean
    of the finite returns in the last tenth (at least one) of a run's rows, checked against plain numpy."""
    rng = np.random.default_rng(1)
    for n in (1, 5, 9, 10, 31, 100):
        ret = rng.normal(size=n)
        ret[rng.uniform(size=n) < 0.3] = np.nan
        tail = ret[n - max(1, n // 10):]
        tail = tail[~np.isnan(tail)]
        want = float(np.mean(tail)) if tail.size else float("nan")
        rows = [{"seed": s, "charts/episodic_return": float(x)} for x in ret for s in (0, 1)]
        for got in (stats.final_score(ret), *_final_returns(rows, [{"seed": 0}, {"seed": 1}])):
            assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want)


def test_mean_band_is_a_t_interval_over_finite_runs():
    import pandas as pd

    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 5))
    x[rng.uniform(size=x.shape) < 0.3] = np.nan
    x[3] = np.nan  # a step without any finished episode: dropped
    steps, mean, lo, hi = plots.mean_band(pd.DataFrame(x, index=np.arange(30) * 10))
    assert 30 not in steps and len(steps) == 29
    for i, s in enumerate(steps):
        v = x[s // 10][np.isfinite(x[s // 10])]
        assert mean[i] == pytest.approx(v.mean())
        half = st.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0
        assert (lo[i], hi[i]) == pytest.approx((v.mean() - half, v.mean() + half))


def test_normalize_is_per_task_min_max():
    rng = np.random.default_rng(2)
    raw = {"x": rng.normal(size=(6, 3)) * [1, 10, 100], "y": rng.normal(size=(4, 3)) * [1, 10, 100] + 5}
    norm = stats.normalize(raw, ["t0", "t1", "t2"])
    allx = np.vstack([raw["x"], raw["y"]])
    for g in raw:
        np.testing.assert_allclose(norm[g], (raw[g] - allx.min(0)) / (allx.max(0) - allx.min(0)))
    known = stats.normalize(raw, ["t0", "t1", "t2"], low={"t1": -50.0}, high={"t1": 50.0})
    np.testing.assert_allclose(known["x"][:, 1], (raw["x"][:, 1] + 50) / 100)
    flat = stats.normalize({"x": np.full((3, 1), 7.0)}, ["t"])
    assert (flat["x"] == 1.0).all()


def test_interval_estimates_match_numpy_and_narrow_with_runs():
    rng = np.random.default_rng(3)
    scores = {"few": rng.uniform(size=(8, 2)), "many": rng.uniform(size=(200, 2))}
    point, ci = stats.interval_estimates(scores, reps=300)
    for g, x in scores.items():
        flat = x.ravel()
        want = [np.median(np.mean(x, axis=0)), st.trim_mean(flat, 0.25), flat.mean(), np.maximum(1 - flat, 0).mean()]
        np.testing.assert_allclose(point[g], want, rtol=1e-9)
        assert ci[g].shape == (2, 4)
        assert (ci[g][0] <= point[g] + 1e-12).all() and (point[g] <= ci[g][1] + 1e-12).all()
    width = {g: ci[g][1] - ci[g][0] for g in scores}
    assert (width["many"][1:] < width["few"][1:]).all()  # IQM, mean, optimality gap: more runs, tighter


def test_performance_profile_is_fraction_above_tau():
    rng = np.random.default_rng(4)
    scores = {"g": rng.uniform(size=(30, 2))}
    tau, prof, ci = stats.performance_profiles(scores, reps=100)
    np.testing.assert_allclose(prof["g"], [(scores["g"] > t).mean() for t in tau])
    assert ci["g"].shape == (2, len(tau))


def test_score_matrix_drops_runs_without_a_final_score():
    import pandas as pd

    finals = pd.DataFrame({"group": ["a"] * 3 + ["b"] * 3, "task_name": ["t"] * 6, "seed": [0, 1, 2] * 2,
                           "final": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0]})
    ss = stats.score_matrix(finals)
    assert ss.tasks == ["t"] and ss.dropped == [("a", 1)]
    np.testing.assert_array_equal(ss.scores["a"], [[1.0], [3.0]])
    np.testing.assert_array_equal(ss.scores["b"], [[4.0], [5.0], [6.0]])


# --- TensorBoard --------------------------------------------------------------------------------------------------

REFERENCE_TAGS = {
    "plasticity/dormant_ratio": "plasticity/dormant_units",
    "plasticity/active_fraction": "plasticity/active_units",
    "plasticity/weight_difference": "plasticity/l2_norm_difference",
    "plasticity/gradient_norm": "plasticity/grad_norm",
    "plasticity/stable_rank": "plasticity/stable_rank",
    "plasticity/critic/dormant_ratio": "plasticity/value_dormant_units",
    "plasticity/critic/feature_variance": "plasticity/value_feature_variance",
    "plasticity/actor/gradient_norm": "plasticity/policy_grad_norm",
    "plasticity/critic/gradient_norm": "plasticity/value_grad_norm",
    # no reference counterpart: our name stays
    "plasticity/actor/weight_magnitude": "plasticity/actor/weight_magnitude",
    "plasticity/critic/q2/dormant_ratio": "plasticity/critic/q2/dormant_ratio",
    "losses/value_loss": "losses/value_loss",
}


@pytest.mark.parametrize("ours", REFERENCE_TAGS)
def test_reference_tag_names(ours):
    assert tb.reference_tag(ours) == REFERENCE_TAGS[ours]


def test_tensorboard_round_trip(run_dir, tmp_path):
    d = tmp_path / "tb"
    assert plot_cli.main([str(run_dir), "--out", str(tmp_path / "p"), "--tensorboard-dir", str(d),
                          "--metric-names", "plasticity/dormant_ratio", *REPS]) == 0
    assert plot_cli.main([str(run_dir), "--out", str(tmp_path / "p"), "--tensorboard-dir", str(d),
                          "--metric-names", "plasticity/dormant_ratio", *REPS]) == 0  # a rerun replaces
    rows = _rows(run_dir)
    runs = sorted({(r["seed"], r["learning_rate"]) for r in rows})
    folders = sorted(p.name for p in d.iterdir())
    assert len(folders) == len(runs) == 4
    for seed, lr in runs:
        name = f"gymnax_CartPole-v1__vanilla_learning_rate={lr:g}__{seed}"
        assert name in folders and len(list((d / name).glob("events.out.tfevents.*"))) == 1
        scalars, texts = tb.read_scalars(d / name)
        mine = [r for r in rows if r["seed"] == seed and r["learning_rate"] == lr]
        want: dict[str, list] = {}
        for r in mine:
            for k, v in r.items():
                if "/" in k and _finite(v):
                    want.setdefault(tb.reference_tag(k), []).append((r["step"], float(np.float32(v))))
        assert "plasticity/dormant_units" in want and "plasticity/value_dormant_units" in want
        assert "plasticity/dormant_ratio" not in scalars
        assert {k: sorted(v) for k, v in scalars.items()} == {k: sorted(v) for k, v in want.items()}
        assert texts["hyperparameters"].startswith("|param|value|\n|-|-|\n")
        assert f"|learning_rate|{lr}|" in texts["hyperparameters"] and "|run.algo|ppo|" in texts["hyperparameters"]


# --- bad input ----------------------------------------------------------------------------------------------------

def _refused(capsys, argv: list[str], needle: str) -> None:
    capsys.readouterr()
    assert plot_cli.main(argv) == 2
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], cap.err
    assert "Traceback" not in cap.err and cap.out == ""


def _tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, run_dir):
    _refused(capsys, [str(tmp_path / "missing")], "does not exist")
    (tmp_path / "notarun").mkdir()
    _refused(capsys, [str(tmp_path / "notarun")], "neither a run directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(run_dir / "config.json", empty / "config.json")
    (empty / "metrics.jsonl").write_text("")
    _refused(capsys, [str(empty)], "no logged rows")
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "sweep.json").write_text(json.dumps({"cells": [{"name": "x", "axes": {}}]}))
    _refused(capsys, [str(tmp_path / "sw")], "no logged rows")
    before = _tree(run_dir)
    _refused(capsys, [str(run_dir), "--metric-names", "plasticity/nope"], "matches no logged metric")
    _refused(capsys, [str(run_dir), "--reps", "0"], "--reps")
    _refused(capsys, [str(run_dir), "--bogus"], "unrecognized arguments")
    assert _tree(run_dir) == before
    assert _tree(tmp_path / "notarun") == [] and _tree(empty) == ["config.json", "metrics.jsonl"]


def test_missing_plots_extra_names_the_install(run_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)  # import rliable -> ImportError
    _refused(capsys, [str(run_dir)], 'pip install -e ".[plots]"')
