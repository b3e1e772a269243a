"""The library API as a script or notebook uses it: profile a model built in the same script, open a
run folder, read its tables; bad settings are one clear error."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lora_profiler as lp
from lora_profiler.api import SettingsError

torch = pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[1]
FAST = dict(steps=2, block=1, warmup=0, profile_steps=2, calibrate=False, device="cpu", progress=False)


class TinyLM(torch.nn.Module):
    """An embedding, two projections named like attention's, and a head: what LoRA adapts by default."""

    def __init__(self, vocab=50, width=16):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.q_proj = torch.nn.Linear(width, width)
        self.v_proj = torch.nn.Linear(width, width)
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, ids):
        x = self.embed(ids)
        return self.head(torch.tanh(self.q_proj(x)) + self.v_proj(x))


@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    batch = {"input_ids": torch.randint(0, 50, (2, 8))}
    return lp.profile(TinyLM(), batch, figures=False, **FAST)


def test_profile_a_model_in_memory(run):
    assert isinstance(run, lp.Run) and run.temporary and run.failed == {}
    assert run.modes == ["full", "lora", "frozen", "forward"]
    facts = run.facts
    assert facts["workload"]["source"] == "model" and facts["workload"]["batch_size"] == 2
    assert facts["workload"]["seq_len"] == 8  # read from the batch's shape
    assert sorted(facts["adapters"]["modules"]) == ["q_proj", "v_proj"]  # the model-file default targets
    assert all(facts["modes"][m]["step_time_s"]["n"] == 2 for m in run.modes)
    assert {"report.json", "report.md", "report.html", "facts.json"} <= {p.name for p in run.path.iterdir()}
    assert "LoRA" in repr(run) and "<table" in run._repr_html_()


def test_attribution_is_a_readable_table(run):
    att = run.attribution()
    text = repr(att)
    assert text.startswith("LoRA overhead over the frozen floor") and len(text) < 4000
    assert att.overhead_s == pytest.approx(run.report["attribution"]["overhead_s"])
    rows = att.table().to_dicts()
    assert rows[-1]["cause"] == "residual"
    # every cause row's seconds are the report's, and the share is seconds / overhead
    for row in rows[:-1]:
        assert row["seconds"] == run.report["attribution"]["causes"][row["cause"]]["seconds"]
        assert row["share"] == pytest.approx(row["seconds"] / att.overhead_s)
    html = att._repr_html_()
    assert html.count("<tr>") == len(rows) + 1  # the header and a row per cause
    assert att.largest(1)[0][2] == max(c["seconds"] for c in att.causes.values())


def test_tables_to_pandas(run):
    pd = pytest.importorskip("pandas")
    df = run.step_times().to_pandas()
    assert isinstance(df, pd.DataFrame) and list(df["mode"]) == run.modes
    assert df.loc[df["mode"] == "lora", "median_s"].item() == run.facts["modes"]["lora"]["step_time_s"]["median"]
    causes = run.attribution().to_pandas()
    assert "seconds" in causes and len(causes) == len(run.attribution().table())


def test_to_pandas_without_pandas_says_how_to_get_it(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"lora_profiler\[pandas\]"):
        run.step_times().to_pandas()


def test_traces_and_roles_of_a_run(run):
    trace = run.trace("lora")
    assert isinstance(trace, lp.Trace) and len(trace.steps) == 2  # one step per profiled round
    assert run.trace("lora") is trace  # loaded once
    mt = run.mode_trace("lora")
    assert mt.trace is trace and run.mode_trace("lora") is mt
    assert len(run.trace_files("frozen")) == 2
    with pytest.raises(lp.RunError, match="no traces of mode 'bogus'"):
        run.trace("bogus")
    rows = {r["name"]: r for r in run.compare("frozen", "lora", top=None).table().to_dicts()}
    # LoRA's dropout is an op the floor does not run: once per adapted layer (2) and step
    assert rows["aten::dropout"]["calls_a"] == 0 and rows["aten::dropout"]["calls_b"] == 2


def test_figures_drawn_in_memory(run):
    figs = run.figures()
    assert {"step_time", "overhead", "timeline"} <= set(figs)
    assert not (run.path / "figures").exists()  # profiled with figures=False; figures() writes nothing
    assert figs._repr_html_().count("data:image/png;base64,") == len(figs)


def test_open_a_run_folder_and_keep_a_temporary_one(run, tmp_path):
    kept = run.save(tmp_path / "kept")
    assert not kept.temporary and kept.report["attribution"] == run.report["attribution"]
    again = lp.Run(tmp_path / "kept")
    assert again.speedup == run.speedup
    with pytest.raises(lp.RunError, match="no facts.json"):
        lp.Run(tmp_path)


def test_temporary_folder_goes_with_the_run():
    r = lp.profile(TinyLM(), {"input_ids": torch.randint(0, 50, (2, 8))}, modes=("lora", "frozen"),
                   profile=False, figures=False, **{k: v for k, v in FAST.items() if k != "profile_steps"})
    path = r.path
    assert path.is_dir() and r.report["attribution"] is None
    with pytest.raises(lp.RunError, match="no attribution"):
        r.attribution()
    del r
    gc.collect()
    assert not path.exists()


def test_preset_model_with_the_default_batch(tmp_path):
    model, batch = lp.example_model("tiny")
    out = tmp_path / "run"
    r = lp.profile(model, None, out=out, modes=("lora", "frozen"), batch_size=2, seq_len=16, name="tiny",
                   figures=False, **FAST)
    assert r.path == out and not r.temporary
    wl = r.facts["workload"]
    assert wl["name"] == "tiny" and wl["batch"]["description"] == "batch 2 x seq 16"
    assert r.facts["adapters"]["count"] > 0 and r.attribution().overhead_s is not None
    # a preset by name runs what --preset runs
    by_name = lp.profile("tiny", modes=("forward",), profile=False, batch_size=2, seq_len=8,
                         **{k: v for k, v in FAST.items() if k != "profile_steps"})
    assert by_name.facts["workload"]["source"] == "preset"


@pytest.mark.parametrize("kwargs, words", [
    (dict(stepz=3), r"unknown setting\(s\) stepz; valid: .*steps"),
    (dict(steps=0), r"steps=0: must be a positive integer"),
    (dict(dropout=1.0), r"dropout=1.0: must be in \[0, 1\)"),
    (dict(modes=("full", "bogus")), r"modes=.*choose a subset of full, lora, frozen, forward"),
    (dict(variants="no-dropout"), r"variants= lists what validate=True times"),
    (dict(validate=True, modes=("full", "lora")), r"keep lora and frozen in modes"),
    (dict(device="tpu"), r"device='tpu'"),
    (dict(dtype="int8"), r"dtype='int8': choose float32, bfloat16 or float16"),
])
def test_bad_settings_are_one_clear_error(kwargs, words):
    with pytest.raises(SettingsError, match=words):
        lp.profile(TinyLM(), {"input_ids": torch.zeros(1, 4, dtype=torch.long)}, **kwargs)


def test_out_folder_with_files_is_refused(tmp_path):
    (tmp_path / "facts.json").write_text("{}")
    with pytest.raises(SettingsError, match="not empty"):
        lp.profile(TinyLM(), {"input_ids": torch.zeros(1, 4, dtype=torch.long)}, out=tmp_path)
    assert (tmp_path / "facts.json").read_text() == "{}"


def test_importing_the_package_does_not_import_torch():
    code = "import sys, lora_profiler as lp; lp.Run; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


@pytest.mark.slow
def test_done_when_a_script_profiles_its_own_model(tmp_path):
    """The issue's acceptance line, in a fresh interpreter, with the default settings."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import torch
        import lora_profiler as lp

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = torch.nn.Embedding(100, 32)
                self.q_proj = torch.nn.Linear(32, 32)
                self.v_proj = torch.nn.Linear(32, 32)
                self.lm_head = torch.nn.Linear(32, 100)

            def forward(self, ids):
                x = self.embed(ids)
                return self.lm_head(self.q_proj(x) + self.v_proj(x))

        model, batch = Net(), {"input_ids": torch.randint(0, 100, (4, 16))}
        r = lp.profile(model, batch)
        print(r.attribution())
        print("PATH", r.path)
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("LoRA overhead over the frozen floor")
    assert "residual (unexplained)" in proc.stdout and "lora_A matmul" in proc.stdout
    path = Path(proc.stdout.split("PATH ")[-1].strip())
    assert not path.exists()  # the temporary run folder went with the interpreter
    assert not (tmp_path / "runs").exists()  # and nothing was written where the script ran
