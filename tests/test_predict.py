"""The cost model: FLOPs and bytes per op, sums against hand-computed answers, a real census."""

import pytest

from lora_profiler.predict import advise, gpu_device, op_bytes, op_class, op_flops, predict


def mm(m, k, n, count=1, phase="forward", dtype="float32"):
    return {"op": "mm", "phase": phase, "view": False, "count": count,
            "inputs": [[[m, k], [k, 1], dtype], [[k, n], [n, 1], dtype]], "outputs": [[[m, n], [n, 1], dtype]]}


def ew(op, numel, count=1, phase="forward", broadcast=False):
    b = [[numel], [0 if broadcast else 1], "float32"]
    return {"op": op, "phase": phase, "view": False, "count": count,
            "inputs": [[[numel], [1], "float32"], b], "outputs": [[[numel], [1], "float32"]]}


def test_flops_and_bytes():
    assert op_flops(mm(64, 32, 8)) == 2 * 64 * 32 * 8
    bmm = {"op": "bmm", "inputs": [[[4, 16, 8], [128, 8, 1], "float32"], [[4, 8, 2], [16, 2, 1], "float32"]],
           "outputs": [[[4, 16, 2], [32, 2, 1], "float32"]]}
    assert op_flops(bmm) == 2 * 4 * 16 * 8 * 2
    addmm = {"op": "addmm", "inputs": [[[8], [1], "float32"], [[4, 6], [6, 1], "float32"], [[6, 8], [1, 6], "float32"]],
             "outputs": [[[4, 8], [8, 1], "float32"]]}
    assert op_flops(addmm) == 2 * 4 * 6 * 8
    assert op_bytes(ew("add", 100)) == 3 * 100 * 4
    assert op_bytes(ew("add", 100, broadcast=True)) == (100 + 1 + 100) * 4  # a broadcast input is read once
    assert op_class("bernoulli_") == "random" and op_class("_foreach_mul_") == "foreach" and op_class("mm") == "matmul"


DEVICE = {"dispatch_us": 2.0, "view_us": 0.5, "module_call_us": 3.0, "node_us": 4.0,
          "classes": {"elementwise": {"gbs": 1.2}, "random": {"gbs": 0.4}},
          "matmul": [{"key": repr(("mm", [[[64, 32], [32, 1], "float32"], [[32, 8], [8, 1], "float32"]])),
                      "us": 50.0, "flops": 2 * 64 * 32 * 8}]}


def test_predict_adds_up_by_hand():
    census = {"module_calls": 10, "nodes": 5, "ops": [
        mm(64, 32, 8, count=2),                             # measured shape: 2 x 50 us
        mm(64, 32, 16, phase="backward"),                   # not measured: 50 us x 2 (FLOPs)
        ew("add", 300, count=4),                            # 3600 B at 1.2 GB/s = 3 us each
        ew("bernoulli_", 400),                              # 4800 B at 0.4 GB/s (random) = 12 us
        {"op": "view", "phase": "forward", "view": True, "count": 6, "inputs": [], "outputs": []},
    ]}
    got = predict(dict(census), dict(DEVICE))
    parts = {k: v * 1e6 for k, v in got["parts"].items()}
    assert parts["matmul_s"] == pytest.approx(2 * 50 + 100)
    assert parts["memory_s"] == pytest.approx(4 * 3 + 12)
    assert parts["dispatch_s"] == pytest.approx((2 + 1 + 4 + 1) * 2.0 + 6 * 0.5)
    assert parts["modules_s"] == pytest.approx(30) and parts["nodes_s"] == pytest.approx(20)
    assert got["step_s"] * 1e6 == pytest.approx(sum(parts.values()))
    assert got["by_phase"]["backward"] * 1e6 == pytest.approx(100 + 2.0 + 20)


def test_gpu_small_ops_are_launch_bound():
    g = gpu_device("A100")
    tiny = {"module_calls": 0, "nodes": 0, "ops": [ew("add", 64, count=100)]}
    got = predict(tiny, g)
    assert got["step_s"] * 1e6 == pytest.approx(100 * (g["dispatch_us"] + g["gpu"]["launch_us"]))
    big = {"module_calls": 0, "nodes": 0, "ops": [mm(8192, 8192, 8192, dtype="bfloat16")]}
    t = predict(big, gpu_device("A100"))["step_s"]
    flops = 2 * 8192 ** 3
    assert flops / 312e12 < t < flops / (0.5 * 312e12)  # near the datasheet peak, not above it
    assert predict(big, gpu_device("H100"))["step_s"] < t


def test_advice_names_the_fastest_strategy():
    rows = [{"mode": "lora", "measured_s": 1.0, "predicted_s": 1.1},
            {"mode": "fused-lora", "measured_s": 0.5, "predicted_s": 0.6},
            {"mode": "lora-top:2", "measured_s": None, "predicted_s": 0.8}]
    assert advise(rows).startswith("fused-lora is 2.00x faster than LoRA (measured)")
    rows[1]["measured_s"] = 0.995
    rows[2]["predicted_s"] = 1.09  # against LoRA's prediction (1.1), not its measurement
    assert advise(rows).startswith("no strategy beats LoRA")
    # a strategy not run is compared with LoRA's prediction, not with its measurement
    rows = [{"mode": "lora", "measured_s": 0.5, "predicted_s": 0.004},
            {"mode": "lora-top:1", "measured_s": None, "predicted_s": 0.002}]
    assert advise(rows).startswith("lora-top:1 is 2.00x faster than LoRA (predicted)")


def test_census_of_a_real_step_and_on_meta():
    import torch

    from lora_profiler.capture.census import op_census
    from lora_profiler.workload.presets import get_preset
    from lora_profiler.workload.spec import LoraOptions, build_preset_workload

    wl = build_preset_workload(get_preset("tiny"), torch.device("cpu"), LoraOptions(dropout=0.1))
    lora, frozen = op_census(wl, "lora"), op_census(wl, "frozen")
    n_adapters = len(wl.adapters.layers)

    def count(c, op, phase):
        return sum(e["count"] for e in c["ops"] if e["op"] == op and e["phase"] == phase)
    # LoRA's forward: two adapter matmuls per adapted layer more than the floor
    assert count(lora, "mm", "forward") - count(frozen, "mm", "forward") == 2 * n_adapters
    assert count(lora, "bernoulli_", "forward") == n_adapters and count(frozen, "bernoulli_", "forward") == 0
    assert any(e["phase"] == "optimizer" for e in lora["ops"]) and not any(e["phase"] == "optimizer" for e in frozen["ops"])
    assert lora["nodes"] > frozen["nodes"] > 0 and lora["module_calls"] > frozen["module_calls"]
    # on the meta device nothing runs, the shapes are the same
    with torch.device("meta"):
        meta = build_preset_workload(get_preset("tiny"), torch.device("meta"), LoraOptions(dropout=0.1))
    got = op_census(meta, "frozen")
    assert sorted((e["op"], e["count"]) for e in got["ops"] if e["op"] == "mm") == \
        sorted((e["op"], e["count"]) for e in frozen["ops"] if e["op"] == "mm")
