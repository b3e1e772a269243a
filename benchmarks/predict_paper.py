"""The cost model on the paper's question: LoRA against full fine-tuning on an A100 (issue 9).

"LoRA Is Slower Than You Think" (arXiv 2507.08833) measured LoRA's forward + backward 26-36%
slower than full fine-tuning's on GPT2-xl and TinyLlama on an A100. Nothing here runs those
models: each is built from its published configuration on the meta device (no weights, no
memory), one training step per mode is censused op by op (shapes, dtypes, autograd nodes), and
the census is priced on the A100 table of ``lora_profiler.predict`` (peak matmul rates, memory
bandwidth, launch and dispatch costs). Forward + backward is compared, as in the paper.

    python benchmarks/predict_paper.py [--batch-size 4] [--seq-len 512] [--dtype float32]

LoRA: rank 8, alpha 16, dropout 0.05 on the architecture's default targets (GPT-2: c_attn;
Llama: q_proj, v_proj). The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER = {"GPT2-xl": "+26% to +36% (both models, A100)", "TinyLlama-1.1B": "+26% to +36% (both models, A100)"}


def models():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    yield "GPT2-xl", "gpt2", lambda: GPT2LMHeadModel(GPT2Config(n_layer=48, n_embd=1600, n_head=25,
                                                               n_positions=1024, vocab_size=50257))
    yield "TinyLlama-1.1B", "llama", lambda: LlamaForCausalLM(LlamaConfig(
        num_hidden_layers=22, hidden_size=2048, intermediate_size=5632, num_attention_heads=32,
        num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--gpu", default="A100")
    a = ap.parse_args(argv)
    from lora_profiler.capture.census import op_census
    from lora_profiler.predict import gpu_device, predict
    from lora_profiler.workload.spec import LoraOptions, build_workload

    dtype = getattr(torch, a.dtype)
    device = gpu_device(a.gpu, a.dtype)
    out = {"gpu": a.gpu, "dtype": a.dtype, "batch_size": a.batch_size, "seq_len": a.seq_len, "models": {}}
    print(f"{a.gpu}, {a.dtype}, batch {a.batch_size} x seq {a.seq_len}; forward + backward, predicted")
    for name, arch, make in models():
        t0 = time.perf_counter()
        with torch.device("meta"):
            wl = build_workload(make(), torch.device("meta"), LoraOptions(), a.batch_size, a.seq_len,
                                dtype=dtype, name=name)
        row = {}
        for mode in ("full", "lora", "frozen"):
            pred = predict(op_census(wl, mode), device)
            ph = pred["by_phase"]
            row[mode] = {"fwd_bwd_s": ph.get("forward", 0.0) + ph.get("backward", 0.0),
                         "parts": pred["parts"]}
        ratio = row["lora"]["fwd_bwd_s"] / row["full"]["fwd_bwd_s"]
        row["lora_vs_full"] = ratio
        row["params"] = sum(p.numel() for p in wl.model.parameters())
        row["adapters"] = len(wl.adapters.layers)
        out["models"][name] = row
        print(f"{name:15s} {row['params'] / 1e9:.2f}B params, {row['adapters']} adapters: full "
              f"{row['full']['fwd_bwd_s'] * 1e3:7.1f} ms, LoRA {row['lora']['fwd_bwd_s'] * 1e3:7.1f} ms, "
              f"frozen {row['frozen']['fwd_bwd_s'] * 1e3:7.1f} ms; LoRA / full {ratio:.2f} "
              f"({100 * (ratio - 1):+.0f}%; paper {PAPER[name]}) [{time.perf_counter() - t0:.0f} s]")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
