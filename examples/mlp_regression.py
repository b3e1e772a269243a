"""A model that is not a language model: an MLP regressor with its own batch and loss.

    python -m lora_profiler.trace examples/mlp_regression.py --targets all-linear

``make_batch`` and ``loss_fn`` replace the token batch and next-token loss; ``LORA_TARGETS``
says which layers the built-in LoRA adapts (``--targets`` overrides it).
"""

import torch
from torch import nn

LORA_TARGETS = ["net.0", "net.2"]


class Regressor(nn.Module):
    def __init__(self, d_in=256, d_hidden=1024, d_out=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_hidden),
                                 nn.GELU(), nn.Linear(d_hidden, d_out))

    def forward(self, x):
        return self.net(x)


def build_model():
    return Regressor()


def make_batch(batch_size, seq_len, device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size * seq_len, 256, generator=gen)  # (rows, features)
    y = torch.randn(batch_size * seq_len, 16, generator=gen)  # (rows, targets)
    return x.to(device), y.to(device)


def loss_fn(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)
