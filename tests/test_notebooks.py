"""The three notebooks run top to bottom (nbclient) and are committed without outputs."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# 01 runs what a user runs (the default workload); 02 and 03 take smaller inputs to keep the
# suite short. 03 reads the real H100 trace from ../shared/traces.
ENV = {"01_quickstart.ipynb": {}, "02_attribution_deep_dive.ipynb": {"LORA_PROFILER_PRESET": "tiny"},
       "03_foreign_trace.ipynb": {}}


def test_three_notebooks_exist():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(ENV)


@pytest.mark.parametrize("name", sorted(ENV))
def test_committed_without_outputs(name):
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.parametrize("name", sorted(ENV))
def test_notebook_runs(name, monkeypatch, shared_traces):
    for key, value in ENV[name].items():
        monkeypatch.setenv(key, value)
    for key in ("LORA_PROFILER_RUN", "LORA_PROFILER_MODEL", "LORA_PROFILER_TRACE"):
        monkeypatch.delenv(key, raising=False)
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(book, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any failure
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if name != "03_foreign_trace.ipynb":
        images = [o for o in outputs if "image/png" in o.get("data", {})]
        assert images, "the notebook shows no figure"
