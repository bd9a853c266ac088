"""Smoke test of ``python -m plasticine_jax bench --quick``: every section runs and reports positive figures."""

from __future__ import annotations

import json

from plasticine_jax.bench import main


def test_bench_quick_writes_positive_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--no-peer", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["machine"]["jax"] and res["machine"]["cores"] >= 1
    scaling = res["scaling"]
    assert {(r["env"], r["seeds"]) for r in scaling} == {
        (e, n) for e in ("gymnax:CartPole-v1", "gymnax:Breakout-MinAtar") for n in (1, 2)}
    for r in scaling:
        assert r["steps_per_s"] > 0 and r["compile_s"] > 0 and r["env_steps"] == r["seeds"] * r["steps_per_seed"]
    for r in res["metrics_overhead"]:
        assert r["steps_per_s"] > 0 and r["steps_per_s_no_metrics"] > 0 and r["ratio_metrics_vs_off"] > 0
    ivs = res["interventions"]
    assert [r["name"] for r in ivs] == ["vanilla", "l2", "redo"]
    for r in ivs:
        assert "error" not in r, r
        assert r["steps_per_s"] > 0 and r["ratio_vs_vanilla"] > 0
    assert res["peer"]["status"] == "skipped"
    printed = capsys.readouterr().out
    assert "Scaling" in printed and "Intervention overhead" in printed
