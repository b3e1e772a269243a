"""On a CUDA device: the API profiles a model, the traces hold kernels and launches, and the
attribution works on GPU kernels (skipped without a GPU)."""

import pytest

torch = pytest.importorskip("torch")

import lora_profiler as lp  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_profile_on_cuda(tmp_path):
    model, batch = lp.example_model("tiny")
    run = lp.profile(model, batch, device="cuda", steps=3, profile_steps=2, out=tmp_path / "run", progress=False)
    assert run.failed == {} and run.facts["environment"]["device"] == "cuda"
    trace = run.trace("lora")
    assert trace.device == "cuda" and len(trace.kernels) > 0 and len(trace.steps) == 2
    att = run.attribution()
    assert att.raw["unit"] == "kernel" and att.raw["method"] == "gpu kernels"
    assert att.raw["adapter_launches"] > 0 and att.raw["peak_memory_bytes"]["lora"] > 0
    launches = lp.launch_stats(trace)
    assert launches.linked > 0 and "GPU launches" in repr(launches)
    assert len(lp.kernel_breakdown(trace, top=5).table()) == 5
    est = lp.adapter_estimate(run.trace("frozen"))
    assert est.unit == "kernel" and est.rows and est.launch_us > 0
    assert (run.path / "report.html").read_text().count("data:image/png;base64,") >= 5
    assert run.advice()
