"""Run figures: each function returns a labelled Figure; draw_run_figures writes PNG + PDF."""

import json

import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from lora_profiler.report import figures as F
from lora_profiler.report.style import MODE_COLORS, device_text

from conftest import suptitle  # noqa: E402

DEVICE = "Test CPU 9000"


def _texts(fig: Figure) -> str:
    """Every piece of text in the figure, joined (titles, labels, ticks, legends, annotations)."""
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))


def _check(fig, xlabel_has, ylabel_has):
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert xlabel_has in ax.get_xlabel() or any(xlabel_has in a.get_xlabel() for a in fig.axes)
    assert ylabel_has in ax.get_ylabel()
    assert DEVICE in suptitle(fig)  # the device labels every figure


def test_step_time(report):
    fig = F.step_time_figure(report)
    _check(fig, "speedup over full FT", "time per step (ms)")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["full FT", "LoRA", "frozen (floor)", "forward only"]
    # three stacked phases per mode, each in the mode's colour
    faces = {to_hex(p.get_facecolor(), keep_alpha=False) for p in ax.patches}
    assert {c.lower() for c in MODE_COLORS.values()} <= faces
    assert len(ax.patches) == 3 * 4
    text = _texts(fig)
    assert "1.24×" in text and "1.64×" in text  # T_full / T_lora, T_full / T_frozen
    for phase in ("forward", "backward", "optimizer"):
        assert phase in text


def test_step_time_folds_zero_grad_into_optimizer(report):
    lora = report["modes"]["lora"]["phase_time_s"]
    assert F._phases(lora)["optimizer"] == pytest.approx(lora["optimizer"] + lora["zero_grad"])


def test_step_time_failed_mode_is_named_not_drawn(report):
    report["modes"]["lora"] = {"status": "failed", "error": "out of memory"}
    fig = F.step_time_figure(report)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "LoRA" not in labels and "not shown: lora (failed)" in _texts(fig)


def test_overhead(report):
    fig = F.overhead_figure(report)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0].startswith("measured overhead") and labels[-1] == "residual (unexplained)"
    assert labels[1] == "dropout"  # the largest cause first
    text = _texts(fig)
    assert "2.5 (36%)" in text and "1 (14%)" in text  # dropout's and the residual's share
    # a negative cause is drawn left of zero, not hidden behind the others
    bars = {lab: p for lab, p in zip(labels, ax.patches)}
    assert bars["input gradients skipped"].get_width() < 0
    assert bars["dropout"].get_width() == pytest.approx(2.5)
    assert "min–max over 3 profiled rounds" in ax.get_xlabel()


def test_overhead_negative_residual(report):
    report["attribution"]["residual_s"] = -0.002
    ax = F.overhead_figure(report).axes[0]
    assert ax.patches[-1].get_width() == pytest.approx(-2.0)
    assert ax.get_xlim()[0] < -2.0  # the axis shows it


def test_validation_figure(report):
    fig = F.validation_figure(report)
    ax = fig.axes[0]
    text = _texts(fig)
    assert "no-dropout" in text and "rank-x4 (disagrees)" in text and "fold-scale" not in text
    assert ax.get_xlabel() == "predicted saving from the attribution (ms)"
    report["attribution"]["validation"] = None
    with pytest.raises(F.FigureDataError, match="validation"):
        F.validation_figure(report)


def test_vs_full_figure(report):
    ax = F.vs_full_figure(report).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dropout", "weight-gradient matmuls", "optimizer",
                                                            "residual (unexplained)"]
    widths = sorted(round(p.get_width(), 6) for p in ax.patches)
    assert 8.0 in widths and 2.5 in widths  # full's weight gradients, LoRA's dropout (ms)


def test_small_matmuls(report):
    fig = F.small_matmul_figure(report)
    _check(fig, "duration per matmul op (µs)", "matmul ops per step")
    assert fig.axes[0].get_xscale() == "log"
    text = _texts(fig)
    assert "dispatch cost\n5 µs" in text and "adapter path (n = 8" in text and "base layers (n = 4" in text


def test_memory(report):
    fig = F.memory_figure(report)
    _check(fig, "", "memory (MiB)")
    ticks = [t.get_text().replace("\n", " ") for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["parameters", "gradients", "optimizer state", "base activations", "adapter activations", "total"]
    assert F.memory_values(report["modes"]["full"])["base activations"] == 420_000  # base + other


def test_timeline(report):
    fig = F.timeline_figure(report)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_xlabel() == "time from the layer's first forward op (µs)"
    assert fig.axes[1].get_xlabel() == "time from the layer's first backward op (µs)"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["CPU adapter", "CPU base", "CPU other"]
    text = _texts(fig)
    assert "forward: base 40 µs, adapter 29 µs" in text and "model.layers.0.self_attn.q_proj" in text
    assert DEVICE in suptitle(fig)


@pytest.mark.parametrize("fn", [F.overhead_figure, F.small_matmul_figure, F.timeline_figure])
def test_attribution_figures_need_attribution(report, fn):
    report["attribution"] = None
    with pytest.raises(F.FigureDataError, match="attribution"):
        fn(report)


def test_every_mode_failed(report):
    for m in report["modes"]:
        report["modes"][m] = {"status": "failed", "error": "boom"}
    with pytest.raises(F.FigureDataError, match="no mode"):
        F.step_time_figure(report)
    with pytest.raises(F.FigureDataError, match="no mode"):
        F.memory_figure(report)


def test_draw_run_figures_inline(report, tmp_path):
    paths = F.draw_run_figures(report, tmp_path)
    names = ["step_time", "overhead", "small_matmuls", "memory", "timeline", "validation", "vs_full", "prediction"]
    assert paths == [f"figures/{n}.{ext}" for n in names for ext in ("png", "pdf")]
    assert not (tmp_path / "figures" / "skipped.json").exists()


def test_draw_run_figures_skips_with_reasons(report, tmp_path):
    report["attribution"] = None
    paths = F.draw_run_figures(report, tmp_path)
    assert paths == [f"figures/{n}.{ext}" for n in ("step_time", "memory", "prediction") for ext in ("png", "pdf")]
    skipped = json.loads((tmp_path / "figures" / "skipped.json").read_text())
    assert set(skipped) == {"overhead", "small_matmuls", "timeline", "validation", "vs_full"}
    assert all("attribution" in why for why in skipped.values())


def test_draw_run_figures_removes_stale_skips(report, tmp_path):
    attribution = report["attribution"]
    report["attribution"] = None
    F.draw_run_figures(report, tmp_path)
    report["attribution"] = attribution  # e.g. the report rebuilt once attribution ran
    assert len(F.draw_run_figures(report, tmp_path)) == 16
    assert not (tmp_path / "figures" / "skipped.json").exists()


def test_draw_run_figures_real_run(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    paths = F.draw_run_figures(report, tiny_run)
    assert "figures/step_time.png" in paths and "figures/memory.pdf" in paths
    for rel in paths:
        data = (tiny_run / rel).read_bytes()
        assert data[:4] == (b"\x89PNG" if rel.endswith(".png") else b"%PDF")
    from matplotlib.image import imread

    height, width = imread(tiny_run / "figures" / "step_time.png").shape[:2]
    assert width > 800 and height > 500  # 300 dpi at one column (3.4 in)
    skipped_file = tiny_run / "figures" / "skipped.json"
    if report.get("attribution") is None:
        assert set(json.loads(skipped_file.read_text())) >= {"overhead", "small_matmuls", "timeline"}
    assert device_text(report["environment"]).startswith(report["environment"]["device_name"])


def test_figure_shows_itself_in_a_notebook(report):
    png = F.step_time_figure(report)._repr_png_()  # what IPython displays as image/png
    assert png[:4] == b"\x89PNG" and len(png) > 10_000


def test_sparse_attribution_still_draws(report):
    att = report["attribution"]
    att["overhead_s"], att["residual_s"] = 0.0, 0.0
    att["causes"] = {"dispatch": {"seconds": 0.0, "min": 0.0, "max": 0.0, "n": 3, "phases": {}}}
    att["small_matmuls"].update(base_us=[], launch_cost_us=None, adapter_intensity=None)
    att["timeline"]["events"] = [e for e in att["timeline"]["events"] if e["phase"] == "forward"]
    assert [t.get_text() for t in F.overhead_figure(report).axes[0].get_yticklabels()][-1] == "residual (unexplained)"
    assert "base layers" not in _texts(F.small_matmul_figure(report))
    assert len(F.timeline_figure(report).axes) == 1


def test_prediction_figure(report):
    """One point per mode with both numbers, at (measured, predicted); a strategy only predicted
    is a horizontal line; without --advise the figure is skipped with the reason."""
    ax = F.prediction_figure(report).axes[0]
    points = {tuple(round(v, 6) for v in (line.get_xdata()[0], line.get_ydata()[0]))
              for line in ax.get_lines() if line.get_marker() == "o"}
    assert points == {(40.0, 36.0), (30.0, 33.0), (20.0, 19.0)}  # ms
    assert any("not run" in t.get_text() for t in ax.get_legend().get_texts())
    report["prediction"] = None
    with pytest.raises(F.FigureDataError, match="--advise"):
        F.prediction_figure(report)
