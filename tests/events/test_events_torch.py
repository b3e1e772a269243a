"""A real CPU trace recorded here with torch.profiler: scopes, backward links, shapes, steps."""

from __future__ import annotations

import pytest

from lora_profiler.events import effective_scope, load_trace, parse_dims

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # profiler schedule notes


def record(tmp_path):
    from torch.profiler import ProfilerActivity, profile, record_function, schedule
    torch.manual_seed(0)
    base = torch.nn.Linear(8, 8)
    lora_a = torch.nn.Linear(8, 2, bias=False)
    lora_b = torch.nn.Linear(2, 8, bias=False)
    x = torch.randn(4, 8)
    out_dir = tmp_path / "tb"
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, profile_memory=True,
                 schedule=schedule(wait=0, warmup=1, active=2),
                 on_trace_ready=torch.profiler.tensorboard_trace_handler(str(out_dir))) as prof:
        for _ in range(3):
            with record_function("lp/adapter/x"):
                y = base(x)
                with record_function("lp/adapter/x#lora_A"):
                    h = lora_a(x)
                with record_function("lp/adapter/x#lora_B"):
                    z = lora_b(h)
                out = y + z
            out.sum().backward()
            prof.step()
    return out_dir


def test_scope_and_fwd_op_links_on_a_real_trace(tmp_path):
    out_dir = record(tmp_path)
    t = load_trace(out_dir)
    assert t.device == "cpu" and len(t.steps) >= 1 and len(t.ops) > 50
    names = t.names_of(t.ops.name)
    scopes = t.names_of(t.scopes.name)
    assert {"lp/adapter/x", "lp/adapter/x#lora_A", "lp/adapter/x#lora_B"} <= set(scopes)
    eff = effective_scope(t)
    eff_name = ["" if s < 0 else scopes[s] for s in eff]
    o = t.ops
    # backward matmul nodes of the adapter map to forward ops inside the adapter's scopes
    mm_bw = [i for i, n in enumerate(names) if n == "MmBackward0"]
    assert mm_bw and all(o.fwd_op[i] >= 0 for i in mm_bw)
    assert {eff_name[i] for i in mm_bw} == {"lp/adapter/x#lora_A", "lp/adapter/x#lora_B"}
    assert all(names[o.fwd_op[i]] in ("aten::matmul", "aten::mm") for i in mm_bw)
    # the base layer's AddmmBackward0 belongs to the outer adapter scope
    addmm_bw = [i for i, n in enumerate(names) if n == "AddmmBackward0"]
    assert addmm_bw and {eff_name[i] for i in addmm_bw} == {"lp/adapter/x"}
    assert all(names[o.fwd_op[i]] == "aten::addmm" for i in addmm_bw)
    # ops nested under a backward node inherit its forward op
    for i in range(len(o)):
        if o.is_backward[i] and o.seq[i] < 0 and o.parent[i] >= 0 and o.fwd_op[o.parent[i]] >= 0:
            assert o.fwd_op[i] == o.fwd_op[o.parent[i]]
    # record_shapes: the lora_A matmul saw a (4, 8) input
    lin_a = [i for i, n in enumerate(names) if n == "aten::linear"
             and eff_name[i] == "lp/adapter/x#lora_A"]
    assert lin_a and parse_dims(t, lin_a[0])[0] == [4, 8]
    assert len(t.memory) > 0 and (t.memory.device_type == 0).all()
