"""What a LoRA adapter path would add to a trace without one: shapes read from the linear calls,
the estimate built from the trace's own launch and elementwise costs."""

import pytest

from lora_profiler.analyses.adapter_estimate import FORWARD_OPS, adapter_estimate


def gpu_step(ev, n, t0, linear_us=20.0):
    """One step: two 64->256 linear layers (16 tokens), each an addmm kernel, and one add kernel."""
    corr = 10 * n
    events = [ev.step(n, t0, 1000)]
    for i, at in enumerate((t0 + 10, t0 + 200)):
        events += [ev.op("aten::linear", at, 100, Input_Dims=[[2, 8, 64], [256, 64], [256]]),
                   ev.op("aten::addmm", at + 5, 80), ev.launch(at + 10, 6, corr + i),
                   ev.kern("sm90_gemm", at + 30, linear_us, corr + i)]
    events += [ev.op("aten::add", t0 + 400, 20, Input_Dims=[[2, 8, 256], [2, 8, 256]]), ev.launch(t0 + 405, 6, corr + 5),
               ev.kern("void at::native::vectorized_elementwise_kernel<4>", t0 + 420, 3, corr + 5)]
    return events


def test_gpu_trace(mk, ev):
    est = adapter_estimate(mk(gpu_step(ev, 1, 0) + gpu_step(ev, 2, 2000)), rank=8)
    assert est.unit == "kernel" and est.steps == 2 and est.launch_us == 6.0
    assert est.elementwise_us == 6.0  # the 3 us add kernel is shorter than a launch: a launch is the floor
    (row,) = est.rows
    assert (row.tokens, row.d_in, row.d_out, row.calls_per_step) == (16, 64, 256, 2)
    assert row.base_us == 20.0 and row.flop_share == pytest.approx(8 * (64 + 256) / (64 * 256))
    assert row.adapter_matmul_us == pytest.approx(20.0 * row.flop_share)
    assert row.launch_bound  # 1.6 us per adapter matmul < a 6 us launch
    assert row.estimate_us == pytest.approx(3 * 6.0 + 2 * 6.0)
    assert est.extra_ops_per_step == FORWARD_OPS * 2 and est.estimate_us_per_step == pytest.approx(2 * 30.0)
    assert est.fraction_of_step == pytest.approx(60.0 / 1000)
    assert "launch-bound" in repr(est) and "+10 kernels" in repr(est)


def test_cpu_trace_and_layers_narrower_than_the_rank(mk, ev):
    events = [ev.step(1, 0, 1000),
              ev.op("aten::linear", 10, 50, Input_Dims=[[4, 128], [128, 128], [128]]),
              ev.op("aten::linear", 100, 5, Input_Dims=[[4, 128], [1, 128], []]),  # a scalar head: no adapter
              ev.op("aten::mul", 200, 4), ev.op("aten::add", 300, 8)]
    est = adapter_estimate(mk(events), rank=4)
    assert est.unit == "op" and [r.d_out for r in est.rows] == [128]
    assert est.elementwise_us == 6.0  # the median forward elementwise op
    row = est.rows[0]
    assert row.estimate_us == pytest.approx(3 * 6.0 + 2 * max(est.launch_us, row.adapter_matmul_us / 2))
    with pytest.raises(ValueError, match="rank 0"):
        adapter_estimate(mk(events), rank=0)


def test_real_h100_trace(traces_dir):
    from lora_profiler.events import load_trace

    est = adapter_estimate(load_trace(traces_dir / "tracelens" / "h100"))
    assert est.unit == "kernel" and est.steps == 1
    assert sum(r.calls_per_step for r in est.rows) == 26  # BERT-small: 4 layers x 6 linears + the MLM head's 2
    assert all(r.launch_bound for r in est.rows)  # skinny adapter matmuls on an H100
