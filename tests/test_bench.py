"""Smoke tests of the benchmark, ``experiments/bench.py --quick`` (imported by path: it is not part of the
package): every section runs and reports positive figures, every registry learner that exists is timed, and
``python -m plasticine_jax bench`` finds the file (or says where it lives)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

import plasticine_jax
from plasticine_jax import cli
from plasticine_jax.algos.ppo_config import PRESETS as PPO_PRESETS
from plasticine_jax.algos.registry import ALGOS

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("plasticine_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def _check_learner_rows(rows: list[dict], algo: str, seeds: list[int]) -> None:
    assert [(r["algo"], r["seeds"]) for r in rows] == [(algo, n) for n in seeds]
    for r in rows:
        assert "error" not in r, r
        assert r["env"] == bench.LEARNER_ENVS[algo]
        assert r["steps_per_seed"] == r["updates"] * r["env_steps_per_update"] > 0
        assert r["env_steps"] == r["seeds"] * r["steps_per_seed"]
        assert r["steps_per_s"] > 0 and r["compile_s"] > 0
        assert r["xla_bytes"] == {} or r["xla_bytes"]["total"] > 0


def test_bench_quick_writes_positive_figures(tmp_path, capsys):
    """Every section on the smallest workload: 3 compiles (PPO at 2 seeds with metrics, without, with redo); the
    intervention table's vanilla row and the learners table's ppo row reuse the first measurement."""
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--envs", "gymnax:CartPole-v1", "--seeds", "2", "--interventions",
                       "redo", "--learners", "ppo", "--learner-seeds", "2", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["machine"]["jax"] and res["machine"]["cores"] >= 1
    (scaling,) = res["scaling"]
    assert (scaling["env"], scaling["seeds"]) == ("gymnax:CartPole-v1", 2)
    assert scaling["steps_per_s"] > 0 and scaling["compile_s"] > 0
    batch = PPO_PRESETS["cartpole"].num_envs * PPO_PRESETS["cartpole"].num_steps
    assert scaling["env_steps"] == scaling["seeds"] * scaling["steps_per_seed"] == 2 * (8192 // batch * batch)
    (metrics,) = res["metrics_overhead"]
    assert metrics["steps_per_s"] > 0 and metrics["steps_per_s_no_metrics"] > 0 and metrics["ratio_metrics_vs_off"] > 0
    ivs = res["interventions"]
    assert [r["name"] for r in ivs] == ["vanilla", "redo"]
    for r in ivs:
        assert "error" not in r, r
        assert r["steps_per_s"] > 0 and r["ratio_vs_vanilla"] > 0
    _check_learner_rows(res["learners"], "ppo", [2])
    printed = capsys.readouterr().out
    assert "Scaling" in printed and "Intervention overhead" in printed and "Learners" in printed


@pytest.mark.parametrize("algo", [a for a in ALGOS if a != "ppo"])  # ppo: in the test above
def test_bench_learners_section(algo, tmp_path):
    """Every registry learner whose module exists is compiled and timed; a module that exists but fails to
    import, build, compile or run fails here (the benchmark itself turns it into an error row)."""
    if importlib.util.find_spec(f"plasticine_jax.algos.{algo}") is None:
        pytest.skip(f"plasticine_jax/algos/{algo}.py does not exist yet")
    importlib.import_module(f"plasticine_jax.algos.{algo}")  # an import error fails with its traceback
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--sections", "learners", "--learners", algo, "--learner-seeds", "2",
                       "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert "learners" in res and "scaling" not in res
    _check_learner_rows(res["learners"], algo, [2])


def test_bench_missing_learner_module_is_an_error_row(tmp_path, monkeypatch):
    """A learner module that cannot be imported is a row with the error, not a crash."""
    from plasticine_jax.algos import registry

    def missing(algo):
        raise ModuleNotFoundError(f"No module named 'plasticine_jax.algos.{algo}'", name=f"plasticine_jax.algos.{algo}")

    monkeypatch.setattr(registry, "learner_module", missing)
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--sections", "learners", "--learners", "pqn", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["learners"]
    assert row["algo"] == "pqn" and "not found" in row["error"]


def test_cli_bench_runs_the_repository_file(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--help"])
    assert e.value.code == 0
    assert "--learner-seeds" in capsys.readouterr().out


def test_cli_bench_without_the_repository_says_where_it_lives(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plasticine_jax, "__file__", str(tmp_path / "site-packages" / "plasticine_jax" / "__init__.py"))
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the benchmark lives in the repository's experiments/bench.py; run it from a clone "
                   "(python experiments/bench.py)"]
