"""Small models with the layers width scaling gets wrong when read layer by layer.

A decoder block in plain torch: token embedding (vocab -> C), attention with separate q, k, v,
o (C -> C) and a per-head layer (head_dim -> head_dim), an MLP C -> 4C -> C, and a
vocabulary-sized readout. The attention follows the `softmax_scale` protocol of
`ntk.scaling.attention` (int `head_dim`, float `softmax_scale` read in forward).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

VOCAB = 97


class Attention(nn.Module):
    def __init__(self, width: int, n_head: int | None = 4, head_dim: int | None = None) -> None:
        super().__init__()
        self.head_dim = head_dim if head_dim is not None else width // n_head
        self.n_head = width // self.head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.per_head = nn.Linear(self.head_dim, self.head_dim)  # a head-dimension layer
        self.softmax_scale = 1.0 / math.sqrt(self.head_dim)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (
            f(x).view(B, T, self.n_head, -1).transpose(1, 2) for f in (self.q, self.k, self.v)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.softmax_scale)
        return self.o(self.per_head(y).transpose(1, 2).reshape(B, T, C))


class TinyTransformer(nn.Module):
    """Token ids (B, T) -> logits (B, T, VOCAB); one pre-norm block."""

    def __init__(
        self, width: int, n_head: int | None = 4, head_dim: int | None = None, readout=None
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, n_head, head_dim)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.head = (readout or nn.Linear)(width, VOCAB, bias=False)

    def forward(self, tokens):
        h = self.embed(tokens)
        h = h + self.attn(self.ln_1(h))
        h = h + self.down(F.gelu(self.up(self.ln_2(h))))
        return self.head(h)


LAYERS = {
    "embed": "embedding",
    "attn.[qkvo]": "hidden",
    "attn.per_head": "hidden",
    "up": "hidden",
    "down": "hidden",
    "head": "readout",
}
