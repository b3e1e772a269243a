"""Sweep figures (e, f) from small inline sweep records."""

import pytest

from lora_profiler.report.sweep_figures import naive_speedup, rank_targets_figure, speedup_tokens_figure

from conftest import suptitle  # noqa: E402

ENV = {"device": "cuda", "device_name": "Test GPU", "gpu_name": "Test GPU", "torch": "2.13.0"}


def _point(width, batch, seq, full, lora, frozen, rank=8, targets="attention"):
    def mode(t):
        return {"status": "ok", "step_time_s": {"median": t, "q1": t * 0.98, "q3": t * 1.02}}
    return {"params": {"n_embd": width, "n_layer": 2, "batch_size": batch, "seq_len": seq, "rank": rank,
                       "targets": targets},
            "tokens_per_step": batch * seq, "total_params": 1_000_000, "linear_params": 900_000,
            "adapter_params": 9_000 * rank // 8,
            "modes": {"full": mode(full), "lora": mode(lora), "frozen": mode(frozen)}, "environment": ENV}


def test_naive_speedup():
    assert naive_speedup(1000, 0) == pytest.approx(1.5)
    assert naive_speedup(1000, 100) == pytest.approx(6000 / 4600)


def test_speedup_tokens_figure():
    pts = [_point(w, b, 64, 1.0 * b, 0.8 * b, 0.6 * b) for w in (128, 256) for b in (1, 4)]
    pts.append(dict(_point(512, 1, 64, 1, 1, 1), modes={"full": {"status": "failed"}}))  # left out
    fig = speedup_tokens_figure(pts)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_ylabel() == "speedup over full FT (×)"
    assert all(ax.get_xlabel() == "tokens per step (batch × seq)" for ax in fig.axes)
    assert fig.axes[0].get_title().startswith("width 128")
    lora = fig.axes[0].lines[1]  # axhline(1), then the measured LoRA speedup
    assert list(lora.get_ydata()) == pytest.approx([1.25, 1.25])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("6L / (4L + 6A)" in t for t in legend) and any("T_full / T_frozen" in t for t in legend)
    assert "Test GPU" in suptitle(fig)


def test_speedup_tokens_figure_rejects_mixed_devices():
    a, b = _point(128, 1, 64, 1, 1, 1), _point(128, 4, 64, 1, 1, 1)
    b["environment"] = dict(ENV, device_name="Other GPU")
    with pytest.raises(ValueError, match="different devices"):
        speedup_tokens_figure([a, b])
    with pytest.raises(ValueError, match="no sweep point"):
        speedup_tokens_figure([])


def test_rank_targets_figure():
    ranks = [_point(256, 8, 128, 0.1, 0.08 + r / 1e4, 0.06, rank=r) for r in (1, 4, 16)]
    targets = [_point(256, 8, 128, 0.1, 0.09, 0.06, targets=t) for t in ("attention", "mlp", "all")]
    fig = rank_targets_figure(ranks, targets)
    left, right = fig.axes
    assert left.get_xlabel() == "LoRA rank r (adapter width)" and left.get_ylabel() == "time per step (ms)"
    assert right.get_ylabel() == "time per step (ms)"
    assert [t.get_text().split("\n")[0] for t in right.get_xticklabels()] == ["attention", "MLP", "all linear"]
    assert [t.get_text() for t in left.get_xticklabels()] == ["1", "4", "16"]
    assert "Test GPU" in suptitle(fig)
    assert len(rank_targets_figure([], targets).axes) == 2  # one side may be empty
