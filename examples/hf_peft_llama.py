"""A Hugging Face Llama built from a config (random weights, nothing downloaded), wrapped by PEFT.

    python -m lora_profiler.trace examples/hf_peft_llama.py

lora_profiler finds PEFT's adapters (adapters.source = "peft") instead of injecting its own,
disables them for the full/frozen/forward modes, and batches random tokens from the vocabulary.
Needs: pip install transformers peft
"""

from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def build_model():
    config = LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=688,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=512)
    model = LlamaForCausalLM(config)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return get_peft_model(model, lora)
