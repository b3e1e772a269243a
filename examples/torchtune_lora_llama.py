"""A torchtune Llama-style decoder with torchtune's own LoRA layers (random weights).

    python -m lora_profiler.trace examples/torchtune_lora_llama.py

lora_profiler finds torchtune's LoRALinear layers by their protocol (``lora_a``/``lora_b`` and
a ``disabled`` flag; adapters.source = "torchtune"), disables them for the other modes, and
batches random tokens from the model's token embedding. Needs: pip install torchtune torchao
(torchtune 0.6.1 works with torchao 0.10 or 0.11).
"""

from torchtune.models.llama2 import lora_llama2


def build_model():
    return lora_llama2(
        lora_attn_modules=["q_proj", "k_proj", "v_proj", "output_proj"],
        vocab_size=2048, num_layers=4, num_heads=4, num_kv_heads=4, embed_dim=256,
        max_seq_len=512, lora_rank=8, lora_alpha=16, lora_dropout=0.05,
    )
