"""The trace command as a user meets it: good runs, and one clear line for every bad input."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lora_profiler.trace import main

REPO = Path(__file__).resolve().parents[1]
FAST = ["--steps", "1", "--warmup", "0", "--no-profile", "--no-figures", "--quiet"]


def run_main(capsys, *argv):
    """main(argv) -> (exit status, stdout, stderr); argparse's SystemExit becomes a status."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


BAD_FILES = {
    "syntax.py": ("def build_model(:\n", r"syntax\.py:1: syntax error"),
    "missing_pkg.py": ("import not_a_real_package_xyz\n", r"missing_pkg\.py:1: cannot import 'not_a_real_package_xyz'"),
    "raises_at_import.py": ("x = 1 / 0\n", r"raises_at_import\.py:1: failed while importing: ZeroDivisionError"),
    "nothing.py": ("x = 1\n", r"nothing\.py: defines neither build_model\(\) nor a module-level `model`"),
    "build_raises.py": ("def build_model():\n    raise RuntimeError('boom')\n",
                        r"build_raises\.py:2: build_model\(\) raised RuntimeError: boom"),
    "not_module.py": ("def build_model():\n    return 42\n", r"not_module\.py: build_model\(\) returned a int, expected a torch\.nn\.Module"),
    "no_linear.py": ("import torch\ndef build_model():\n    return torch.nn.Sequential(torch.nn.Embedding(10, 4))\n",
                     r"no_linear\.py: no linear layer .*no nn\.Linear"),
    "bad_batch.py": ("import torch\ndef build_model():\n    return torch.nn.Sequential(torch.nn.Linear(4, 4))\n"
                     "def make_batch(b, t, device):\n    return torch.randn(b, 4)\n",
                     r"bad_batch\.py: make_batch\(\) returned Tensor without 2-D integer 'input_ids'; define loss_fn"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_model_file_one_line_exit_2(capsys, tmp_path, name):
    body, pattern = BAD_FILES[name]
    path = write(tmp_path, name, body)
    code, out, err = run_main(capsys, str(path), *FAST)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    import re

    assert re.search(pattern, err), err
    assert str(tmp_path) in err  # the line names the file


@pytest.mark.parametrize("argv, pattern", [
    (["/no/such/model.py"], r"/no/such/model\.py: model file not found"),
    (["--rank", "0"], r"--rank: 0 must be a positive integer"),
    (["--dropout", "1.5"], r"--dropout: 1\.5 must be in \[0, 1\)"),
    (["--modes", "full,bogus"], r"unknown mode bogus"),
    (["--preset", "nope"], r"--preset 'nope' is unknown; choose from .*default"),
    (["--steps", "x"], r"--steps: 'x' is not an integer"),
    (["--width", "100", "--heads", "12"], r"100.*12"),
])
def test_bad_flags_one_line_exit_2(capsys, argv, pattern):
    import re

    code, _, err = run_main(capsys, *argv, *FAST)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert re.search(pattern, err), err


def test_cuda_requested_without_gpu(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run_main(capsys, "--device", "cuda", *FAST)
    assert code == 2 and "no CUDA device" in err


def test_out_folder_with_a_run_is_not_overwritten(capsys, tmp_path):
    (tmp_path / "facts.json").write_text("{}")
    code, _, err = run_main(capsys, "--out", str(tmp_path), *FAST)
    assert code == 2 and "not empty" in err
    assert (tmp_path / "facts.json").read_text() == "{}"


def test_subprocess_exit_status_and_no_traceback(tmp_path):
    path = write(tmp_path, "broken.py", "def build_model(:\n")
    proc = subprocess.run([sys.executable, "-m", "lora_profiler.trace", str(path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_tiny_preset_run_writes_report(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run_main(capsys, "--preset", "tiny", "--steps", "2", "--warmup", "1",
                               "--no-figures", "--out", str(out))
    assert code == 0
    headline = json.loads(stdout.strip().splitlines()[-1])
    assert headline["out"] == str(out) and headline["failed"] == []
    report = json.loads((out / "report.json").read_text())
    assert report["version"] == 2 and report["kind"] == "lora_profiler.report"
    for mode in ("full", "lora", "frozen", "forward"):
        assert report["modes"][mode]["status"] == "ok"
        assert report["modes"][mode]["step_time_s"]["n"] == 2
    t = {m: report["modes"][m]["step_time_s"]["median"] for m in ("full", "lora", "frozen")}
    assert report["speedup"]["lora_vs_full"] == pytest.approx(t["full"] / t["lora"])
    assert report["speedup"]["ideal_vs_full"] == pytest.approx(t["full"] / t["frozen"])
    assert "mode" in stdout and "speedup over full fine-tuning" in stdout
    assert "LoRA overhead over the frozen floor" in stdout
    assert (out / "report.md").read_text().startswith("# lora_profiler report")
    att = report["attribution"]
    assert att["median_difference_s"] == pytest.approx(t["lora"] - t["frozen"])
    pairs = sorted(a - b for a, b in zip(report["modes"]["lora"]["step_time_s"]["samples"],
                                         report["modes"]["frozen"]["step_time_s"]["samples"]))
    assert att["overhead_s"] == pytest.approx(sum(pairs) / len(pairs))  # 2 pairs: nothing trimmed

    # analyze reads the run folder again and finds the same attribution
    from lora_profiler.analyze import main as analyze_main

    assert analyze_main([str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["modes"]) == {"full", "lora", "frozen", "forward"}
    assert doc["attribution"]["components"] == pytest.approx(att["components"])
    # every profiled round is a step of its own: steps = rounds x recorded steps (1 each)
    rounds = report["settings"]["profile"]["active"]
    for mode in ("full", "lora", "frozen", "forward"):
        assert doc["modes"][mode]["steps"] == rounds == len(doc["modes"][mode]["per_step"])
        per = doc["modes"][mode]["per_step"]
        assert len({r["step"] for r in per}) == rounds
        # per-step figures are one step's: each row's wall time is one profiled step's window
        from lora_profiler.events import load_trace

        trace = load_trace([str(out / f) for f in report["modes"][mode]["trace_files"]])
        assert sorted(r["wall_us"] for r in per) == pytest.approx(sorted(trace.steps.dur_us.tolist()))


def test_peft_wrapped_hf_llama_file(capsys, tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("transformers")
    path = write(tmp_path, "hf_model.py", """
        from peft import LoraConfig, get_peft_model
        from transformers import LlamaConfig, LlamaForCausalLM

        def build_model():
            cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=2)
            return get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8,
                                  target_modules=["q_proj", "v_proj"]))
    """)
    out = tmp_path / "run"
    code, stdout, _ = run_main(capsys, str(path), "--batch-size", "2", "--seq-len", "8",
                               "--out", str(out), *FAST)
    assert code == 0, stdout
    report = json.loads((out / "report.json").read_text())
    assert report["adapters"]["source"] == "peft"
    assert report["adapters"]["count"] == 4 and report["adapters"]["rank"] == 4  # 2 layers x q, v
    assert all(e["status"] == "ok" for e in report["modes"].values())
    assert report["modes"]["lora"]["trainable_params"] == report["adapters"]["trainable_params"]


def test_torchtune_lora_model_file(capsys, tmp_path):
    pytest.importorskip("torchtune")
    out = tmp_path / "run"
    code, stdout, _ = run_main(capsys, str(REPO / "examples" / "torchtune_lora_llama.py"),
                               "--batch-size", "2", "--seq-len", "16", "--steps", "1", "--warmup", "0",
                               "--profile-steps", "1", "--no-figures", "--quiet", "--out", str(out))
    assert code == 0, stdout
    report = json.loads((out / "report.json").read_text())
    ad = report["adapters"]
    assert ad["source"] == "torchtune" and ad["count"] == 16 and ad["rank"] == 8  # 4 layers x q, k, v, out
    assert all(e["status"] == "ok" for e in report["modes"].values())
    assert report["modes"]["lora"]["trainable_params"] == ad["trainable_params"]
    # torchtune layers have no base module: their base matmul is found inside the layer's scope
    layers = report["attribution"]["serial_path"]["layers"]
    assert len(layers) == 16 and all(e["fwd_base_us"] > 0 and e["bwd_base_us"] > 0 for e in layers[4:])


def test_non_language_model_with_own_batch_and_loss(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run_main(capsys, str(REPO / "examples" / "mlp_regression.py"),
                               "--batch-size", "2", "--seq-len", "4", "--out", str(out), *FAST)
    assert code == 0, stdout
    report = json.loads((out / "report.json").read_text())
    assert report["adapters"]["source"] == "builtin"
    assert report["adapters"]["modules"] == ["net.0", "net.2"]  # the file's LORA_TARGETS
    assert all(e["status"] == "ok" for e in report["modes"].values())


def test_failed_mode_exit_1(capsys, tmp_path):
    path = write(tmp_path, "nan_loss.py", """
        import torch
        def build_model():
            return torch.nn.Sequential(torch.nn.Embedding(16, 8), torch.nn.Linear(8, 16))
        def loss_fn(model, batch):
            if model[1].disabled:
                return model(batch["input_ids"]).mean()
            raise ValueError("my loss broke")
    """)
    out = tmp_path / "run"
    code, stdout, _ = run_main(capsys, str(path), "--targets", "1", "--batch-size", "2", "--seq-len", "4",
                               "--out", str(out), *FAST)
    assert code == 1
    headline = json.loads(stdout.strip().splitlines()[-1])
    assert headline["failed"] == ["lora"]
    report = json.loads((out / "report.json").read_text())
    assert report["modes"]["lora"]["error"] == "ValueError: my loss broke"
    assert report["modes"]["full"]["status"] == "ok"


def test_dtype_flag_casts_the_model(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, _ = run_main(capsys, "--preset", "tiny", "--dtype", "bfloat16", "--out", str(out), *FAST)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["workload"]["dtype"] == "bfloat16"
    assert all(e["status"] == "ok" for e in report["modes"].values())
    # bf16 weights: 2 bytes per parameter
    assert report["modes"]["full"]["memory"]["param_bytes"] == 2 * report["workload"]["total_params"]
