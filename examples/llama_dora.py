"""A Hugging Face Llama built from a config (random weights) with DoRA adapters by PEFT.

    python -m lora_profiler.trace examples/llama_dora.py --batch-size 2 --seq-len 32

DoRA (``use_dora=True``) adds a trainable magnitude vector per adapted layer and renormalises
the adapted weight every step; the lora mode trains A, B and the magnitudes, as PEFT does, and
facts.json records each layer's kind ("dora"), rank, alpha and scaling. The default batch is
random tokens and the default loss the model's own next-token loss.
Needs: pip install transformers peft
"""

from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def build_model():
    config = LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, use_dora=True,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return get_peft_model(LlamaForCausalLM(config), lora)
