"""Link columns stay inside their tables when several files are loaded together, and when a
trace is cut to one step: ``parent`` of a scope is a scope, ``parent`` of an op an op."""

import json

import numpy as np

from lora_profiler.events import load_trace


def _file(tmp_path, name, t0):
    events = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "ts": t0, "dur": 100, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "user_annotation", "name": "lp/adapter/a", "ts": t0 + 10, "dur": 50, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "user_annotation", "name": "lp/adapter/a#lora_A", "ts": t0 + 20, "dur": 20, "pid": 1, "tid": 1},
    ] + [{"ph": "X", "cat": "cpu_op", "name": f"aten::op{i}", "ts": t0 + 21 + i, "dur": 0.5, "pid": 1, "tid": 1}
         for i in range(10)]
    path = tmp_path / name
    path.write_text(json.dumps({"traceEvents": events}))
    return str(path)


def test_scope_parents_point_into_scopes(tmp_path):
    trace = load_trace([_file(tmp_path, "a.json", 0), _file(tmp_path, "b.json", 1000)])
    sc = trace.scopes
    assert len(sc.name) == 4 and len(trace.ops.name) == 20
    names = [trace.names[i] for i in sc.name]
    for i, name in enumerate(names):
        if name.endswith("#lora_A"):
            assert names[sc.parent[i]] == "lp/adapter/a"
            assert sc.file[sc.parent[i]] == sc.file[i]
    assert sc.parent.max() < len(sc.name)
    one = trace.for_step(1)
    assert np.all(one.scopes.parent < len(one.scopes.name))
    assert np.all(one.ops.scope < len(one.scopes.name))
