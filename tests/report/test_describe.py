"""The workload, adapters and shares in words."""

from lora_profiler.report.describe import adapters_text, batch_text, extra_text, model_text
from lora_profiler.report.text import shares_note


def att(causes, residual, total, ci=None):
    return {"overhead_s": total, "overhead_ci_s": ci, "residual_s": residual,
            "causes": {k: {"seconds": v} for k, v in causes.items()}}


def test_shares_note_only_when_a_share_is_negative_or_above_100():
    assert shares_note(att({"a": 0.6, "b": 0.3}, 0.1, 1.0, ci=[0.8, 1.2])) is None
    note = shares_note(att({"a": 1.3, "b": -0.4}, 0.1, 1.0, ci=[0.8, 1.2]))
    assert "negative" in note and "100%" in note
    assert "within noise" in shares_note(att({"a": 0.6}, 0.1, 0.01, ci=[-0.2, 0.3]))
    assert shares_note(att({}, None, None)) is None


def test_images_are_not_described_as_sequences():
    wl = {"arch": "custom", "total_params": 1_234_567, "dtype": "bfloat16", "batch_size": 8, "seq_len": 1,
          "batch": {"kind": "images", "description": "batch 8 x 3x32x32 images", "tokens": None}}
    text = model_text(wl)
    assert "seq" not in text and "tokens" not in text and "1.23M parameters, bfloat16" in text
    tokens = {"batch": {"kind": "tokens", "description": "batch 2 x seq 32", "tokens": 64}}
    assert batch_text(tokens) == "batch 2 x seq 32 (64 tokens per step)"


def test_per_layer_ranks_are_a_distribution_and_extra_trainables_are_named():
    ad = {"count": 8, "source": "peft", "kinds": {"lora": 6, "dora": 2}, "rank": None, "alpha": 16.0,
          "dropout": 0.0, "trainable_params": 10_000,
          "rank_summary": {"min": 4, "max": 16, "uniform": False, "counts": {"4": 2, "8": 4, "16": 2}},
          "alpha_summary": {"min": 16.0, "max": 16.0, "uniform": True, "counts": {"16": 8}},
          "extra_trainable": {"classifier": 1538}}
    text = adapters_text(ad)
    assert "rank 4-16 (4 x2, 8 x4, 16 x2)" in text and "alpha 16" in text
    assert "lora x6, dora x2" in text and "1.54K in 1 module: classifier 1.54K" in text and "10,000 trainable" in text
    peft = {"base_model.model.bert.layer.0.query.base_layer": 256, "base_model.model.bert.layer.1.query.base_layer": 256,
            "base_model.model.classifier.modules_to_save.default": 1028}
    assert extra_text(peft) == "1.54K in 3 modules: classifier 1.03K; 2 x 256 (bert.layer.0.query, ...)"
