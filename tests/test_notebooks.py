"""Every notebook under notebooks/ runs top to bottom in a Jupyter kernel (nbclient), on the CPU, inside a temp
working directory, within 3 minutes. The notebooks hold their own asserts (a formula checked numerically, a
reset that zeroed the right units, metrics equal to the logged ones), so executing one is a real test.

The kernel is this interpreter's (jupyter_client starts the ``python3`` kernelspec with ``sys.executable``; a
prepended cell checks it), with JAX on the CPU and W&B offline. Notebooks are committed without outputs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 180  # the whole notebook; each is sized to about a minute on a 2-core CPU


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    check = nbformat.v4.new_code_cell(f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.executable")
    check["id"] = "test-kernel-check"
    nb.cells.insert(0, check)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.time()
    client.execute()
    elapsed = time.time() - t0
    assert elapsed < TIMEOUT_S, f"{path.name} took {elapsed:.0f} s (budget {TIMEOUT_S} s)"


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        first = nb.cells[0]
        assert first.cell_type == "markdown" and first.source.startswith("#"), f"{path.name}: title cell first"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear outputs"


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "interventions.ipynb", "metrics.ipynb",
                                           "continual.ipynb"}
