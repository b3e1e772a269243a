"""A BERT sequence classifier built from a config (random weights), LoRA by PEFT, and the
classification head trained in full through ``modules_to_save``.

    python -m lora_profiler.trace examples/bert_classifier_peft.py --batch-size 2 --seq-len 32

The lora mode trains exactly what PEFT marks trainable (``print_trainable_parameters()``): the
LoRA A/B of query and value, their biases (``bias="lora_only"``) and the copy of ``classifier``
PEFT makes for ``modules_to_save``. facts.json lists the biases and the copy under
``adapters.extra_trainable``; the original classifier, which PEFT never runs, trains in no mode.
The batch holds its own labels (one class per sequence), and the default loss uses them.
Needs: pip install transformers peft
"""

import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertForSequenceClassification

NUM_LABELS = 4


def build_model():
    config = BertConfig(vocab_size=2048, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=512, num_labels=NUM_LABELS)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["query", "value"],
                      bias="lora_only", modules_to_save=["classifier"])
    return get_peft_model(BertForSequenceClassification(config), lora)


def make_batch(batch_size, seq_len, device):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 2048, (batch_size, seq_len), generator=gen)  # (B, T) tokens
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)  # (B, T) no padding
    labels = torch.randint(0, NUM_LABELS, (batch_size,), generator=gen)  # (B,) classes
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
