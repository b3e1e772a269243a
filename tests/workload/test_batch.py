"""Batches: moved and cast whatever their container, described by what they are, checked with
one-line errors; the default loss uses the batch's own labels."""

from collections import namedtuple
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from lora_profiler.workload.batch import (check_batch, describe_batch, is_label, iter_tensors,
                                          next_token_loss, structure, to_device, with_grad_inputs)
from lora_profiler.workload.errors import WorkloadError

Pair = namedtuple("Pair", "x y")


@dataclass(frozen=True)
class Images:
    pixels: torch.Tensor
    labels: torch.Tensor
    name: str = "train"


def test_to_device_casts_floats_only_and_keeps_containers():
    batch = {"a": [torch.randn(2, 3), torch.arange(4)], "b": Pair(torch.randn(1), torch.ones(1, dtype=torch.long)),
             "c": Images(torch.randn(2, 3, 4, 4), torch.zeros(2, dtype=torch.long)), "d": "text"}
    out = to_device(batch, torch.device("cpu"), torch.bfloat16)
    assert out["a"][0].dtype == torch.bfloat16 and out["a"][1].dtype == torch.int64
    assert isinstance(out["b"], Pair) and out["b"].x.dtype == torch.bfloat16 and out["b"].y.dtype == torch.int64
    assert isinstance(out["c"], Images) and out["c"].pixels.dtype == torch.bfloat16 and out["c"].name == "train"
    assert out["d"] == "text"
    same = to_device(batch, torch.device("cpu"))  # no dtype: nothing cast
    assert same["a"][0].dtype == torch.float32


def test_iter_and_map_agree_on_locations():
    batch = {"p": Pair(torch.randn(2), torch.randn(2)), "l": [torch.randn(1)], "labels": torch.randn(2)}
    where = [w for w, _ in iter_tensors(batch)]
    assert where == ["batch['p'].x", "batch['p'].y", "batch['l'][0]", "batch['labels']"]
    marked = with_grad_inputs(batch, {"batch['p'].y"})
    assert marked["p"].y.requires_grad and not marked["p"].x.requires_grad
    assert is_label("batch['labels']") and is_label("batch.y") and not is_label("batch[1]")


@pytest.mark.parametrize("batch, kind, description", [
    ({"input_ids": torch.zeros(2, 32, dtype=torch.long)}, "tokens", "batch 2 x seq 32"),
    ((torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)), "images", "batch 2 x 3x32x32 images"),
    ((torch.randn(64, 256), torch.randn(64, 16)), "features", "batch 64 x 256 features"),
    ({"labels": torch.zeros(2, dtype=torch.long), "x": torch.randn(2, 10, 8)}, "features",
     "batch 2 x seq 10 x 8 features"),
])
def test_describe_batch(batch, kind, description):
    d = describe_batch(batch)
    assert (d["kind"], d["description"]) == (kind, description)
    assert d["tokens"] == (64 if kind == "tokens" else None)


def test_structure_is_one_short_line():
    assert structure({"input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": torch.zeros(2)}) == \
        "dict(input_ids: int64[2, 3], labels: float32[2])"
    assert structure((torch.zeros(1),)) == "tuple(float32[1])"
    long = {f"k{i}": torch.zeros(1) for i in range(100)}
    assert len(structure(long)) <= 240


def test_check_batch():
    ids = torch.zeros(2, 8, dtype=torch.long)
    assert check_batch(ids, "m.py", has_loss_fn=False)["input_ids"] is ids  # a bare tensor is token ids
    assert check_batch(ids, "m.py", has_loss_fn=True) is ids  # the user's loss_fn gets it as it is
    with pytest.raises(WorkloadError, match=r"m\.py: make_batch\(\) returned floating-point input_ids"):
        check_batch({"input_ids": torch.zeros(2, 8)}, "m.py", has_loss_fn=True)
    with pytest.raises(WorkloadError, match=r"without 2-D integer 'input_ids'; define loss_fn"):
        check_batch(torch.randn(2, 8), "m.py", has_loss_fn=False)


class TinyLM(nn.Module):
    def __init__(self, vocab=11, classes=None):
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.out = nn.Linear(8, classes or vocab)

    def forward(self, ids):
        return self.out(self.emb(ids))


def test_default_loss_uses_the_batch_labels():
    torch.manual_seed(0)
    model = TinyLM(classes=3)
    ids = torch.randint(0, 11, (2, 5))
    labels = torch.randint(0, 3, (2, 5))
    logits = model(ids)
    # labels shaped like the ids are next-token targets (shifted by one, Hugging Face's convention)
    expected = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 3), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(next_token_loss(model, {"input_ids": ids, "labels": labels}), expected)
    lm = TinyLM()
    logits = lm(ids)
    expected = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(next_token_loss(lm, {"input_ids": ids}), expected)
