"""The quality task: a known entropy rate, faithful samples, and a fine-tuning that learns."""

import numpy as np
import pytest
import torch

from lora_profiler.workload.quality import MarkovLanguage, TaskSpec, fine_tune, pretrain


def test_entropy_rate_known_answer():
    # every token's successors: `branching` tokens with equal weight -> log(branching) nats
    vocab, k = 12, 3
    t = np.zeros((vocab, vocab))
    for i in range(vocab):
        t[i, [(i + j) % vocab for j in range(1, k + 1)]] = 1 / k
    assert MarkovLanguage(t).entropy_rate() == pytest.approx(np.log(k))
    lang = MarkovLanguage.random(16, 4, seed=0)
    assert np.allclose(lang.transition.sum(axis=1), 1.0) and ((lang.transition > 0).sum(axis=1) == 4).all()
    assert 0 < lang.entropy_rate() < np.log(4) + 1e-9


def test_samples_follow_the_transitions():
    lang = MarkovLanguage.random(8, 3, seed=1)
    ids = lang.sample(400, 50, np.random.default_rng(0)).numpy()
    counts = np.zeros((8, 8))
    np.add.at(counts, (ids[:, :-1].ravel(), ids[:, 1:].ravel()), 1)
    freq = counts / counts.sum(axis=1, keepdims=True)
    assert np.abs(freq - lang.transition).max() < 0.03  # 20k transitions
    assert (counts[lang.transition == 0] == 0).all()  # never an impossible transition


def test_shift_redraws_a_fraction_of_rows():
    src = MarkovLanguage.random(20, 4, seed=0)
    tgt = src.shifted(0.5, 4, seed=7)
    changed = (np.abs(src.transition - tgt.transition).sum(axis=1) > 1e-12).sum()
    assert 8 <= changed <= 10  # 10 rows redrawn (a redraw can, rarely, repeat a row)


def test_fine_tuning_learns_the_target():
    from lora_profiler.workload.models import ModelConfig
    from lora_profiler.workload.presets import Preset
    from lora_profiler.workload.spec import LoraOptions, build_preset_workload

    spec = TaskSpec(vocab=16, batch=8, seq=16, pretrain_steps=40, finetune_steps=30, eval_every=30)
    preset = Preset("q", "test", ModelConfig(arch="llama", vocab_size=16, n_layer=2, n_embd=32, n_head=2,
                                             max_seq_len=16), batch_size=8, seq_len=16)
    wl = build_preset_workload(preset, torch.device("cpu"), LoraOptions(rank=4, alpha=8, dropout=0.0), seed=0)
    src = MarkovLanguage.random(16, 2, seed=0)
    tgt = src.shifted(1.0, 2, seed=1)
    state = pretrain(wl, src, spec, seed=0)
    held = [tgt.sample(8, 16, np.random.default_rng(5)) for _ in range(2)]
    none = fine_tune(wl, state, "none", tgt, spec, 0, held)
    full = fine_tune(wl, state, "full", tgt, spec, 0, held)
    lora = fine_tune(wl, state, "lora", tgt, spec, 0, held)
    assert full.status == lora.status == "ok", (full.error, lora.error)
    assert full.held_out_loss < none.held_out_loss - 0.3  # learned the shifted language
    assert lora.held_out_loss < none.held_out_loss
    assert len(full.step_s) == 30 and full.trainable_params > lora.trainable_params > 0
    # each strategy starts from the same pre-trained weights: the pre-trained loss is restored
    again = fine_tune(wl, state, "none", tgt, spec, 0, held)
    assert again.held_out_loss == pytest.approx(none.held_out_loss)
