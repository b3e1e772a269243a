"""Tables that show themselves (text, HTML, DataFrame), and the analyses' results shown as tables."""

import sys

import pytest

from lora_profiler.analyses.dispatch import dispatch_overhead
from lora_profiler.analyses.idle import gpu_idle
from lora_profiler.analyses.kernels import kernel_breakdown
from lora_profiler.analyses.launches import launch_stats
from lora_profiler.analyses.ops import op_table
from lora_profiler.table import Column, Table, fmt_us


def small():
    return Table([Column("name", "op"), Column("count"), Column("total_us", "total", fmt_us)],
                 [("aten::mm", 3, 1500.0), ("<x> & y", 12, 2.5), ("aten::add", None, None)],
                 title="three ops", notes=["a note"])


def test_text_aligns_text_left_and_numbers_right():
    lines = repr(small()).splitlines()
    assert lines[0] == "three ops" and lines[-1] == "a note"
    header, mm, x, add = lines[1:5]
    assert header.split() == ["op", "count", "total"]
    assert mm.startswith("aten::mm ") and mm.endswith("1.5 ms")
    assert x.index("12") + 2 == mm.index("3") + 1  # counts right-aligned in one column
    assert add.rstrip() == "aten::add"  # missing values are blank


def test_html_escapes_and_marks_numbers():
    html = small()._repr_html_()
    assert "<caption>three ops</caption>" in html and html.count("<tr>") == 4
    assert "&lt;x&gt; &amp; y" in html and "<x>" not in html
    assert '<td class="num">1.5 ms</td>' in html and "<td>aten::mm</td>" in html


def test_long_tables_are_cut_for_people_not_for_data():
    t = Table(["i"], [(i,) for i in range(100)], max_rows=10)
    assert "90 more rows" in repr(t) and t.to_html().count("<tr>") == 11
    assert len(t) == 100 and t[99] == {"i": 99} and t.column("i") == list(range(100))


def test_rows_must_fit_the_columns():
    with pytest.raises(ValueError, match="a row has 1 values for 2 columns"):
        Table(["a", "b"], [(1,)], title="bad")


def test_to_pandas_raw_values():
    pytest.importorskip("pandas")
    df = small().to_pandas()
    assert list(df.columns) == ["name", "count", "total_us"] and df.attrs["title"] == "three ops"
    assert df["total_us"].iloc[0] == 1500.0  # raw microseconds, not "1.5 ms"


def test_to_pandas_without_pandas(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'lora_profiler\[pandas\]'"):
        small().to_pandas()


@pytest.fixture
def gpu_trace(mk, ev):
    return mk([
        ev.step(1, 0, 250),
        ev.op("aten::linear", 0, 100), ev.op("aten::addmm", 10, 80),
        ev.launch(20, 10, 1), ev.kern("volta_sgemm_128x64_nn", 40, 20, 1),
        ev.op("aten::add", 120, 30), ev.launch(125, 8, 2),
        ev.kern("void at::native::vectorized_elementwise_kernel<4>", 135, 3, 2),
    ])


def test_analyses_show_short_tables(gpu_trace):
    results = [kernel_breakdown(gpu_trace), launch_stats(gpu_trace), op_table(gpu_trace),
               dispatch_overhead(gpu_trace), gpu_idle(gpu_trace)]
    for r in results:
        text = repr(r)
        assert len(text) < 2000 and "(" not in text.splitlines()[0][:3], text  # not a dataclass repr
        assert "<table" in r._repr_html_()
    kb = results[0]
    rows = kb.table().to_dicts()
    assert [r["name"] for r in rows] == [r.name for r in kb.by_name]
    assert rows[0]["total_us"] == kb.by_name[0].total_us == 20.0
    ls = results[1].table().to_dicts()
    assert {"figure": "launch-bound kernels (shorter than their launch call)", "value": 1, "unit": "kernels"} in ls
