"""A plain torch image classifier: a small CNN, then self-attention over the feature map
(``nn.MultiheadAttention``), then an MLP head. No adapters of its own: lora_profiler injects its
LoRA into every linear layer but the output layer.

    python -m lora_profiler.trace examples/cnn_mha.py --batch-size 2 --seq-len 32
    python -m lora_profiler.trace examples/cnn_mha.py --batch-size 2 --dtype bfloat16

``nn.MultiheadAttention`` reads ``out_proj.weight`` itself (``F.multi_head_attention_forward``)
and never calls ``out_proj``, so ``out_proj`` is skipped with a note; the classifier that
produces the logits is the output layer and is left alone. The batch is images (``seq_len`` is
not used) with their labels; with ``--dtype`` the images are cast with the model. The frozen
floor makes the images require grad, and since the convolutions before the first adapted layer
are not adapted, a note says LoRA can beat the floor.
"""

import torch
from torch import nn

NUM_CLASSES = 10


class ConvAttentionNet(nn.Module):
    def __init__(self, width=64, heads=4):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2), nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        )
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.head = nn.Linear(width, NUM_CLASSES)

    def forward(self, images):
        x = self.stem(images)  # (B, C, H/2, W/2)
        x = x.flatten(2).transpose(1, 2)  # (B, HW/4, C) one token per position
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(dim=1))  # (B, classes)


def build_model():
    return ConvAttentionNet()


def make_batch(batch_size, seq_len, device):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, 32, 32, generator=gen)  # (B, 3, 32, 32)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), generator=gen)  # (B,)
    return images, labels


def loss_fn(model, batch):
    images, labels = batch
    return nn.functional.cross_entropy(model(images).float(), labels)
