"""An encoder-decoder: T5 built from a config (random weights), LoRA by PEFT on the attention.

    python -m lora_profiler.trace examples/t5_peft.py --batch-size 2 --seq-len 32

The encoder reads ``seq_len`` tokens and the decoder writes ``labels`` of half that length: the
default loss passes the batch's own labels (T5 shifts them into the decoder's input). The frozen
floor starts from the embeddings that run — the encoder's and the decoder's ``embed_tokens``,
which share the weight of ``shared`` (never called itself).
Needs: pip install transformers peft
"""

import torch
from peft import LoraConfig, get_peft_model
from transformers import T5Config, T5ForConditionalGeneration


def build_model():
    config = T5Config(vocab_size=2048, d_model=256, d_kv=32, d_ff=1024, num_layers=2,
                      num_decoder_layers=2, num_heads=8, decoder_start_token_id=0)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q", "k", "v", "o"])
    return get_peft_model(T5ForConditionalGeneration(config), lora)


def make_batch(batch_size, seq_len, device):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 2048, (batch_size, seq_len), generator=gen)  # (B, T) source tokens
    labels = torch.randint(2, 2048, (batch_size, max(seq_len // 2, 1)), generator=gen)  # (B, T/2) target
    return {"input_ids": ids, "labels": labels}
