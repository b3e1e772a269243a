"""Fine-tune a tiny PEFT model with transformers.Trainer and profile its own loop.

    python examples/trainer_callback.py --out runs/trainer [--bf16] [--grad-accum 2]
        [--checkpointing] [--compile] [--full] [--steps 60]

The model is a small Llama built from a config (random weights, nothing downloaded), LoRA by
PEFT on the attention projections; the data set is made here: sequences that count up by a
fixed stride (mod the vocabulary), so the loss falls as LoRA learns the stride. The callback
lets the first steps pass, times the loop's own steps, profiles two of them, replays their
batches as the frozen floor and writes OUT/report.md, report.json, figures and tb/ as
``python -m lora_profiler.trace`` does, with the Trainer's settings and its own costs (data
wait, logging, clipping, micro-step bookkeeping) in ``facts.json["trainer"]``. Training is
exactly what it would be without the callback.

Needs: pip install transformers peft (the ``hf`` extra). The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from lora_profiler.integrations.hf import LoraProfilerCallback

VOCAB = 512


class Strides(torch.utils.data.Dataset):
    """Token sequences start, start + k, start + 2k, ... (mod VOCAB), k in 1..7: made in code."""

    def __init__(self, n: int = 512, seq_len: int = 64, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        start = torch.randint(0, VOCAB, (n, 1), generator=gen)
        stride = torch.randint(1, 8, (n, 1), generator=gen)
        self.ids = (start + stride * torch.arange(seq_len)) % VOCAB

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.ids[i]}


def build_model() -> torch.nn.Module:
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    return get_peft_model(LlamaForCausalLM(config), lora)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="run folder (default runs/<timestamp>; never overwritten)")
    p.add_argument("--steps", type=int, default=60, help="training steps (max_steps, default 60)")
    p.add_argument("--batch-size", type=int, default=8, help="per-device batch size (default 8)")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default 1)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (works on CPU)")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    p.add_argument("--compile", action="store_true", help="torch.compile through TrainingArguments (slow to start)")
    p.add_argument("--full", action="store_true", help="also replay the batches as full fine-tuning on a copy")
    p.add_argument("--workers", type=int, default=0, help="dataloader workers (default 0)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = build_model()
    callback = LoraProfilerCallback(out=args.out, start_step=5, steps=12, block=3, profile_steps=2,
                                    full=args.full)
    training = TrainingArguments(
        output_dir="/tmp/lora_profiler_trainer_example", max_steps=args.steps,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        learning_rate=1e-3, logging_steps=10, bf16=args.bf16, gradient_checkpointing=args.checkpointing,
        torch_compile=args.compile, dataloader_num_workers=args.workers,
        use_cpu=args.cpu or not torch.cuda.is_available(),
        report_to=[], save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=model, args=training, train_dataset=Strides(), callbacks=[callback])
    result = trainer.train()

    facts, report = callback.facts or {}, callback.report or {}
    modes = facts.get("modes") or {}
    att = report.get("attribution") or {}

    def median(mode):
        return ((modes.get(mode) or {}).get("step_time_s") or {}).get("median")

    print(json.dumps({"out": str(callback.out), "report": str(callback.out / "report.json") if report else None,
                      "train_loss": result.training_loss, "lora_step_s": median("lora"),
                      "frozen_step_s": median("frozen"), "full_step_s": median("full"),
                      "overhead_s": att.get("overhead_s"),
                      "trainer_step_s": ((facts.get("trainer") or {}).get("step_time_s") or {}).get("median")}))
    return 0 if report else 1


if __name__ == "__main__":
    sys.exit(main())
