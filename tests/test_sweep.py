"""``python -m plasticine_jax sweep``: experiment files expand into the right cells (numeric hyperparameters vmapped,
the rest looped), a re-run skips finished cells, a killed cell resumes, the tidy table equals the runs' logs, and
bad files are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from plasticine_jax.cli import main
from plasticine_jax.run import sweep

TINY = """
[train]
algo = "ppo"
env = "gymnax:CartPole-v1"
num-seeds = 2
total-timesteps = 4000
no-wandb = true
no-progress = true
"ppo.num-envs" = 4
"ppo.num-steps" = 50
log-every = 2
"""


def _write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_expand_vmaps_numeric_hparams_and_loops_the_rest(tmp_path):
    spec = sweep.read_experiment(_write(tmp_path, TINY + """
[grid]
interventions = ["", "snp"]
"snp.coef" = [0.9, 0.99]
"ppo.learning-rate" = [1e-3, 3e-4]
"ppo.num-minibatches" = [2, 4]
"""))
    cells = sweep.expand(spec)
    # interventions x num-minibatches looped (2 x 2 cells); learning rate always vmapped; snp.coef only with snp
    assert len(cells) == 4
    by = {(c.axes["interventions"], c.axes["ppo.num-minibatches"]): c for c in cells}
    assert set(by) == {("", 2), ("", 4), ("snp", 2), ("snp", 4)}
    assert by[("", 2)].vmapped == {"learning_rate": [1e-3, 3e-4]}
    assert by[("snp", 4)].vmapped == {"learning_rate": [1e-3, 3e-4], "shrink_perturb.coef": [0.9, 0.99]}
    assert by[("snp", 4)].num_runs == 4
    argv = by[("snp", 4)].argv
    assert argv[argv.index("--ppo.num-minibatches") + 1] == "4"
    assert set(argv[argv.index("--sweep") + 1:]) == {"learning_rate=0.001,0.0003", "shrink_perturb.coef=0.9,0.99"}
    assert len({c.name for c in cells}) == 4


def test_variants_and_set_override(tmp_path):
    spec = sweep.read_experiment(_write(tmp_path, TINY + """
[[variants]]
name = "vanilla"
[[variants]]
name = "redo"
interventions = "redo"
grid = { "redo.tau" = [0.025, 0.1] }
"""))
    spec = sweep.apply_sets(spec, ["num-seeds=3", "total-timesteps=2000"])
    cells = sweep.expand(spec)
    assert [c.name for c in cells] == ["vanilla", "redo"]
    assert cells[0].vmapped == {} and cells[1].vmapped == {"redo.tau": [0.025, 0.1]}
    for c in cells:
        assert c.argv[c.argv.index("--num-seeds") + 1] == "3"
        assert c.argv[c.argv.index("--total-timesteps") + 1] == "2000"


def test_two_cell_sweep_table_and_rerun_skips(tmp_path, monkeypatch, capsys):
    exp = _write(tmp_path, TINY + """
[grid]
interventions = ["", "l2n"]
"l2n.weight-decay" = [1e-4, 1e-3]
""")
    out = tmp_path / "sw"
    assert main(["sweep", str(exp), "--out", str(out)]) == 0
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    assert [c["name"] for c in cells] == ["vanilla", "l2n"]
    df = pd.read_parquet(out / "results.parquet")
    # the table is every cell's metrics.jsonl, row for row, with config columns beside
    for c in cells:
        logged = [json.loads(x) for x in (out / "cells" / c["name"] / "metrics.jsonl").read_text().splitlines()]
        mine = df[df["cell"] == c["name"]]
        assert len(mine) == len(logged) > 0
        assert list(mine["charts/episodic_return"].fillna(-1)) == [r["charts/episodic_return"] or -1 for r in logged]
        assert set(mine["run.algo"]) == {"ppo"} and set(mine["ppo.num_steps"]) == {50}
    l2 = df[df["cell"] == "l2n"]
    assert sorted(set(l2["l2.weight_decay"])) == [1e-4, 1e-3]  # the vmapped axis: 2 points x 2 seeds
    assert len(l2.groupby(["seed", "l2.weight_decay"])) == 4
    assert len(df[df["cell"] == "vanilla"].groupby("seed")) == 2
    assert "plasticity/dormant_ratio" in df.columns and "interventions" in df.columns

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/metrics.jsonl")}
    calls = []
    monkeypatch.setattr("plasticine_jax.cli.train_main", lambda argv: calls.append(argv) or 0)
    capsys.readouterr()
    assert main(["sweep", str(exp), "--out", str(out)]) == 0
    assert calls == []  # both cells finished: nothing trained again
    assert capsys.readouterr().out.count("finished, skipped") == 2
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("cells/*/metrics.jsonl")}


def test_killed_cell_resumes_and_changed_file_is_refused(tmp_path, capsys):
    exp = _write(tmp_path, TINY)
    out = tmp_path / "sw"
    cell = sweep.expand(sweep.read_experiment(exp))[0]
    # a cell killed after its first chunk (what a preempted sweep leaves behind)
    assert main(["train", *cell.argv, "--out", str(out / "cells" / cell.name), "--stop-after-chunks", "1"]) == 0
    assert sweep.cell_state(out / "cells" / cell.name, cell.argv) == "partial"
    capsys.readouterr()
    assert main(["sweep", str(exp), "--out", str(out)]) == 0
    assert "base: resuming" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "cells" / cell.name / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows if r["seed"] == 0] == list(range(2, 21, 2))  # 20 updates, none twice

    exp.write_text(TINY.replace("total-timesteps = 4000", "total-timesteps = 8000"))
    assert main(["sweep", str(exp), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another command line" in err[0] and "--overwrite" in err[0]


@pytest.mark.parametrize("text, needle", [
    ("[train]\nalgo = 'ppo'\n[grid]\nlr = 3\n", "non-empty list"),
    ("[train\n", "not valid TOML"),
    ("[train]\nalgo = 'ppo'\n[trian]\n", "unknown top-level"),
    ("[train]\nalgo = 'nope'\n", "nope"),
    ("[train]\nsweep = ['lr=1,2']\n", "[grid]"),
    ("[train]\nalgo = 'ppo'\n[grid]\n'compile-cache' = ['off', 'auto']\n", "compile-cache: set it for every cell"),
])
def test_bad_experiment_files_one_line(tmp_path, capsys, text, needle):
    exp = _write(tmp_path, text)
    assert main(["sweep", str(exp), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]
    assert not (tmp_path / "o").exists()


def test_missing_file_one_line(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "none.toml")]) == 2
    assert "not found" in capsys.readouterr().err


EXPERIMENTS = sorted(Path(__file__).resolve().parents[1].glob("experiments/**/*.toml"))


def test_experiment_files_are_shipped():
    names = {f"{f.parent.name}/{f.stem}" for f in EXPERIMENTS}
    assert {"cpu/cartpole_interventions", "cpu/continual_minatar", "reference/standard_procgen_ppo",
            "reference/open_craftax_ppo", "reference/continual_dmc_dynamics"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_experiment_file_resolves(path):
    """Every cell of every shipped experiment file resolves and builds its learner (no training): flags, presets
    and intervention combinations are valid, and every variant of a reference file is a distinct cell."""
    cells = sweep.expand(sweep.read_experiment(path))
    assert cells and len({c.name for c in cells}) == len(cells)
    if path.parent.name == "reference":
        assert [c.name for c in cells] == ["vanilla", "snp", "pi", "redo", "rl", "ln", "nap", "l2n", "rr", "pr", "ca",
                                           "dff", "trac", "kron"]


def test_dry_run_lists_cells_and_warnings_and_writes_nothing(tmp_path, capsys):
    exp = _write(tmp_path, TINY + '\n[[variants]]\nname = "vanilla"\n[[variants]]\nname = "rl"\ninterventions = "rl"\n')
    assert main(["sweep", str(exp), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "rl: new" in out and "--rl.frequency 1000 never fires in this run of 20 updates" in out
    assert out.count("python -m plasticine_jax train ") == 2
    assert not (tmp_path / "o").exists()


def test_only_runs_some_cells_and_the_table_grows(tmp_path, capsys):
    """Two hosts sharing one --out: each runs its own cells with --only; sweep.json always lists every cell and
    the table holds the finished ones."""
    exp = _write(tmp_path, TINY.replace("total-timesteps = 4000", "total-timesteps = 800") +
                 '\n[grid]\ninterventions = ["", "l2n"]\n')
    out = tmp_path / "sw"
    assert main(["sweep", str(exp), "--out", str(out), "--only", "l2n"]) == 0
    assert [c["name"] for c in json.loads((out / "sweep.json").read_text())["cells"]] == ["vanilla", "l2n"]
    assert set(pd.read_parquet(out / "results.parquet")["cell"]) == {"l2n"}
    assert not (out / "cells" / "vanilla").exists()
    assert main(["sweep", str(exp), "--out", str(out), "--only", "vanilla"]) == 0
    assert set(pd.read_parquet(out / "results.parquet")["cell"]) == {"vanilla", "l2n"}
    assert main(["sweep", str(exp), "--out", str(out), "--only", "nope"]) == 2
    assert "no cell named nope" in capsys.readouterr().err
