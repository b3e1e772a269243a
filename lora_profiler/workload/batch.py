"""Batches and the default loss: the default batch, moving and casting a user's batch, checking
and describing it.

The default batch (no ``make_batch``) is ``{"input_ids": (B, T) int64}`` drawn from the model's
vocabulary, plus for a Hugging Face model the ``labels`` its head expects: the input ids for a
causal or masked LM, a second (B, T) token sequence for an encoder-decoder (T5, BART), one class
per sequence for ``...ForSequenceClassification`` (a float per sequence when ``num_labels`` is 1)
and one per token for ``...ForTokenClassification``.

The default loss (no ``loss_fn``): a Hugging Face model is called with the whole batch,
``model(**batch)`` (``labels=input_ids`` added when the batch has none), and its ``.loss`` is
the loss. Any other model is called ``model(batch["input_ids"])`` and its logits (the output,
its ``.logits`` or its first element) go into a cross-entropy: against the batch's ``labels``
(labels shaped like the input ids are next-token targets, shifted by one as Hugging Face's
causal LMs do; labels shaped like the logits without their last dimension are per-position
classes), else next-token prediction of the input ids. ``-100`` labels are ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import WorkloadError

LABEL_KEYS = frozenset({"labels", "label", "targets", "target", "y", "decoder_labels"})
MAIN_INPUT_KEYS = ("input_ids", "pixel_values", "input_values", "input_features", "inputs_embeds", "x")


def iter_tensors(obj: Any, where: str = "batch") -> Iterator[tuple[str, torch.Tensor]]:
    """(where, tensor) for every tensor in a (nested) batch or output: dicts and other mappings
    (``BatchEncoding``, ``ModelOutput``), lists, tuples, dataclasses."""
    if isinstance(obj, torch.Tensor):
        yield where, obj
    elif isinstance(obj, dict) or (hasattr(obj, "keys") and hasattr(obj, "__getitem__")):
        for key in list(obj.keys()):
            yield from iter_tensors(obj[key], f"{where}[{key!r}]")
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        for name, value in zip(obj._fields, obj):
            yield from iter_tensors(value, f"{where}.{name}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from iter_tensors(value, f"{where}[{i}]")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from iter_tensors(getattr(obj, f.name), f"{where}.{f.name}")


def map_tensors(obj: Any, fn: Callable[[str, torch.Tensor], torch.Tensor], where: str = "batch") -> Any:
    """A copy of a (nested) batch with ``fn(where, tensor)`` applied to every tensor; containers
    keep their type where they can (dict, namedtuple, tuple, list, dataclass, ``BatchEncoding``)."""
    if isinstance(obj, torch.Tensor):
        return fn(where, obj)
    if isinstance(obj, dict) or (hasattr(obj, "keys") and hasattr(obj, "__getitem__")):
        out = {k: map_tensors(obj[k], fn, f"{where}[{k!r}]") for k in list(obj.keys())}
        if type(obj) is dict:
            return out
        try:
            return type(obj)(out)
        except Exception:
            return out
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(map_tensors(v, fn, f"{where}.{n}") for n, v in zip(obj._fields, obj)))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn, f"{where}[{i}]") for i, v in enumerate(obj))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: map_tensors(getattr(obj, f.name), fn, f"{where}.{f.name}")
                   for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    return obj


def to_device(batch: Any, device: torch.device, dtype: Optional[torch.dtype] = None) -> Any:
    """The batch on ``device``; with ``dtype``, its floating-point tensors cast to it (integer
    tensors — token ids, labels, masks — keep their dtype)."""
    def move(_where, t):
        t = t.to(device)
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return map_tensors(batch, move)


def is_label(where: str) -> bool:
    """Is this batch location a label (``batch['labels']``, ``batch.y``, ...)?"""
    last = where.rsplit("[", 1)[-1].strip("]'\"") if where.endswith("]") else where.rsplit(".", 1)[-1]
    return last in LABEL_KEYS


def with_grad_inputs(batch: Any, only: Optional[set[str]] = None) -> Any:
    """A copy of the batch whose floating-point tensors (those at ``only``'s locations, when
    given) require grad: the frozen floor of a model without an embedding."""
    def mark(where, t):
        if t.is_floating_point() and (only is None or where in only):
            return t.detach().requires_grad_(True)
        return t
    return map_tensors(batch, mark)


def is_hf_model(model: nn.Module) -> bool:
    """A Hugging Face ``PreTrainedModel`` or a PEFT ``PeftModel`` (by class name, no import;
    under a DistributedDataParallel or FSDP wrapper, the model it wraps)."""
    if type(model).__name__ in ("DistributedDataParallel", "FullyShardedDataParallel"):
        model = model.module
    return any(c.__name__ in ("PreTrainedModel", "PeftModel") for c in type(model).__mro__)


def _hf_core(model: nn.Module) -> nn.Module:
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) and "PeftModel" in {c.__name__ for c in type(model).__mro__} else model


def vocab_size_of(model: nn.Module) -> Optional[int]:
    """``config.vocab_size`` if present, else the first ``nn.Embedding``'s size, else None."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(vocab, int) and vocab > 0:
        return vocab
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return module.num_embeddings
    return None


def token_batch(vocab: int, batch_size: int, seq_len: int, device: torch.device, seed: int) -> dict:
    """A fixed random token batch: ``{"input_ids": (batch_size, seq_len) int64}``."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=gen)  # (B, T) tokens
    return {"input_ids": ids.to(device)}


def default_batch(model: nn.Module, vocab: int, batch_size: int, seq_len: int,
                  device: torch.device, seed: int) -> dict:
    """The default batch: random token ids, and for a Hugging Face model the labels its head
    expects (see the module docstring)."""
    batch = token_batch(vocab, batch_size, seq_len, device, seed)
    if not is_hf_model(model):
        return batch
    core = _hf_core(model)
    config = getattr(core, "config", None)
    name = type(core).__name__
    gen = torch.Generator().manual_seed(seed + 1)
    num_labels = int(getattr(config, "num_labels", 2) or 2)
    if name.endswith("ForSequenceClassification"):
        labels = (torch.randn(batch_size, generator=gen) if num_labels == 1 else
                  torch.randint(0, num_labels, (batch_size,), generator=gen))  # (B,) classes
    elif name.endswith("ForTokenClassification"):
        labels = torch.randint(0, num_labels, (batch_size, seq_len), generator=gen)  # (B, T) classes
    elif getattr(config, "is_encoder_decoder", False):
        labels = torch.randint(0, vocab, (batch_size, seq_len), generator=gen)  # (B, T) target tokens
    else:
        labels = batch["input_ids"]  # causal / masked LM: the model shifts them itself
    batch["labels"] = labels.to(device)
    return batch


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def structure(batch: Any, limit: int = 240) -> str:
    """A one-line sketch of a batch: ``dict(input_ids: int64[2, 32], labels: int64[2])``."""
    def sketch(obj, depth=0) -> str:
        if isinstance(obj, torch.Tensor):
            return f"{_dtype_name(obj)}{list(obj.shape)}"
        if depth > 3:
            return "..."
        if isinstance(obj, dict) or (hasattr(obj, "keys") and hasattr(obj, "__getitem__")):
            inner = ", ".join(f"{k}: {sketch(obj[k], depth + 1)}" for k in list(obj.keys()))
            return f"{type(obj).__name__}({inner})"
        if isinstance(obj, (list, tuple)):
            return f"{type(obj).__name__}({', '.join(sketch(v, depth + 1) for v in obj)})"
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            inner = ", ".join(f"{f.name}: {sketch(getattr(obj, f.name), depth + 1)}"
                              for f in dataclasses.fields(obj))
            return f"{type(obj).__name__}({inner})"
        return type(obj).__name__
    text = sketch(batch)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def main_input(batch: Any) -> Optional[tuple[str, torch.Tensor]]:
    """The batch's main input: ``input_ids``, ``pixel_values``, ... by key, else its first
    tensor that is not a label."""
    entries = list(iter_tensors(batch))
    for key in MAIN_INPUT_KEYS:
        for where, t in entries:
            if where.endswith((f"[{key!r}]", f".{key}")):
                return where, t
    entries = [e for e in entries if not is_label(e[0])] or entries
    return entries[0] if entries else None


def describe_batch(batch: Any) -> dict:
    """What the batch is, for facts and reports: ``kind`` (tokens | images | features),
    the main input's location, shape and dtype, a ``description`` ("batch 2 x seq 32",
    "batch 2 x 3x32x32 images"), the batch's ``structure``, and ``tokens`` (token batches)."""
    found = main_input(batch)
    if found is None:
        return {"kind": "other", "input": None, "shape": None, "dtype": None,
                "description": structure(batch), "structure": structure(batch), "tokens": None}
    where, t = found
    shape = list(t.shape)
    rest = "x".join(str(s) for s in shape[1:])
    if not t.is_floating_point() and not t.is_complex():
        kind = "tokens"
        desc = (f"batch {shape[0]} x seq {shape[1]}" if t.dim() == 2 else
                f"{shape[0]} token ids" if t.dim() == 1 else f"batch {shape[0]} x {rest} tokens")
    elif t.dim() == 4:
        kind = "images"
        desc = f"batch {shape[0]} x {rest} images"
    else:
        kind = "features"
        desc = (f"{shape[0]} values" if t.dim() == 1 else
                f"batch {shape[0]} x {shape[1]} features" if t.dim() == 2 else
                f"batch {shape[0]} x seq {shape[1]} x {'x'.join(str(s) for s in shape[2:])} features"
                if t.dim() == 3 else f"batch {shape[0]} x {rest} features")
    return {"kind": kind, "input": where, "shape": shape, "dtype": _dtype_name(t), "description": desc,
            "structure": structure(batch), "tokens": int(t.numel()) if kind == "tokens" else None}


def check_batch(batch: Any, where: str, has_loss_fn: bool) -> Any:
    """Validate a ``make_batch`` result; a bare 2-D integer tensor becomes ``{"input_ids": t}``
    when the default loss will read it.

    Raises:
        WorkloadError: floating-point token ids; a batch the default loss cannot read.
    """
    ids = batch.get("input_ids") if isinstance(batch, dict) else None
    if isinstance(ids, torch.Tensor) and ids.is_floating_point():
        raise WorkloadError(f"{where}: make_batch() returned floating-point input_ids ({_dtype_name(ids)}"
                            f"{list(ids.shape)}); token ids must be integers (torch.long)")
    if has_loss_fn:
        return batch
    if isinstance(batch, torch.Tensor) and not batch.is_floating_point() and batch.dim() == 2:
        return {"input_ids": batch}  # a bare integer tensor is token ids
    if not (isinstance(ids, torch.Tensor) and not ids.is_floating_point() and ids.dim() == 2):
        raise WorkloadError(
            f"{where}: make_batch() returned {type(batch).__name__} without 2-D integer "
            f"'input_ids'; define loss_fn(model, batch) for it (batch: {structure(batch)})"
        )
    return batch


def _logits_of(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, (tuple, list)) and out:
        logits = out[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, not logits; define loss_fn(model, batch)")
    return logits


def _cross_entropy(logits: torch.Tensor, ids: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
    if labels is None or (labels.shape == ids.shape and logits.shape[:-1] == ids.shape):
        target = ids if labels is None else labels
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                               target[:, 1:].reshape(-1), ignore_index=-100)  # next token
    if logits.shape[:-1] == labels.shape:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                               ignore_index=-100)
    raise ValueError(f"cannot score logits {list(logits.shape)} against labels {list(labels.shape)}; "
                     "define loss_fn(model, batch)")


def next_token_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """The default loss (see the module docstring): a Hugging Face model's ``.loss`` given the
    batch (``labels=input_ids`` when it has none), else cross-entropy on the logits."""
    ids = batch["input_ids"]
    labels = batch.get("labels")
    if is_hf_model(model):
        kwargs = dict(batch)
        kwargs.setdefault("labels", ids)
        out = model(**kwargs)
        if getattr(out, "loss", None) is not None:
            return out.loss
        labels = kwargs["labels"]
    else:
        out = model(ids)
    return _cross_entropy(_logits_of(out), ids, labels)
