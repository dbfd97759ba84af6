"""Multi-head latent attention (MLA): queries, keys and values through a low-rank latent.

DeepSeek-AI 2024 ("DeepSeek-V2", arXiv:2405.04434, sec. 2.1). With width C, n_h heads of
size d_h, latent rank r (fixed as C grows) and a decoupled RoPE part of size d_R:

    c_q  = W_DQ x                (r)         c_kv = W_DKV x             (r)
    q_C  = W_UQ c_q              (n_h d_h)   k_C  = W_UK c_kv           (n_h d_h)
    q_R  = rope(W_QR c_q)        (n_h d_R)   v    = W_UV c_kv           (n_h d_h)
    k_R  = rope(W_KR x)          (d_R, one key shared by every head)
    logit_h(t, s) = s_C q_C,h(t).k_C,h(s) + s_R q_R,h(t).k_R(s)

RoPE is applied only to the decoupled part, so the content key k_C = W_UK c_kv is a fixed
linear map of the cached latent (the point of MLA: a KV cache of r + d_R numbers per token).
The two logit parts have their own scales: s_C = `softmax_scale` = 1/sqrt(d_h) (muP's
attention rule turns it into sqrt(d0)/d_h as the heads widen: `ntk.scaling.attention`), and
s_R = `rope_scale` = 1/sqrt(d_R), which no width rule touches: d_R is fixed, so q_R.k_R is
a sum of a fixed number of terms. (DeepSeek-V2 uses one 1/sqrt(d_h + d_R) for both; at a
fixed width the split only reweights the two parts.)

DeepSeek-V2 normalizes the latents (RMSNorm after each compression); this module does not.
A norm is scale-invariant, so after a readout-shaped projection it undoes muP's small
(1/n) init of the latent and multiplies the gradient into the residual stream by |c|^-1 ~
sqrt(n) at init: measured in the coordinate check (chapter 15: widths 64-512, 8 steps), with
the norms the residual stream's update grew like n^0.20 under muP, without them like n^0.06.

muP of the low-rank projections n -> r -> n with r fixed (`ntk.lm.parametrize`): the down
projections W_DQ, W_DKV (and W_KR, width -> d_R) have a growing fan-in and a fixed fan-out,
the shape of a readout; the up projections W_UQ, W_UK, W_UV (and W_QR) a fixed fan-in and a
growing fan-out, the shape of an embedding. The abc rules of those roles follow with no
special case: the latent is a finite-dimensional output of the width (readout: it stays O(1)
when W_D aligns with x only with effective init and Adam lr ~ 1/n), and the up projection
reads a finite-dimensional input (embedding: O(1) init and lr). `ntk.scaling.base_shapes`
reads exactly these roles off the base model (fan-in grows, fan-out not: readout; the
reverse: embedding) and refuses any other listing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntk.lm.rope import apply_rope

# The latent attention's layers by abc role (they replace the block's q, k, v rows of
# `ntk.lm.model.LAYERS`): n -> r -> n with r fixed, so the down projections are readouts (a
# finite output) and the up projections embeddings (a finite input).
LAYERS: dict[str, str] = {
    "blocks.*.attn.q_down": "readout",  # muP: width -> r, a finite output
    "blocks.*.attn.kv_down": "readout",
    "blocks.*.attn.k_rope": "readout",  # width -> d_R
    "blocks.*.attn.[qkv]": "embedding",  # muP: r -> width, a finite input
    "blocks.*.attn.q_rope": "embedding",  # r -> n_head d_R
}


class LatentAttention(nn.Module):
    """Causal multi-head latent attention with a decoupled RoPE key (module docstring).

    Arguments as `GPTConfig`'s (which checks them): width n_embd = n_head * head_dim, latent
    rank, rope_dim d_R, bias (of the Linear layers).
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        head_dim: int,
        rank: int,
        rope_dim: int,
        bias: bool = False,
    ) -> None:
        super().__init__()
        C, r, R = n_embd, rank, rope_dim
        self.n_head, self.head_dim, self.rope_dim = n_head, head_dim, R
        # muP: down projections width -> r are readouts, up projections r -> width embeddings
        self.q_down = nn.Linear(C, r, bias=bias)
        self.q = nn.Linear(r, C, bias=bias)  # muP: the content query, zero-initialized by muP
        self.q_rope = nn.Linear(r, self.n_head * R, bias=bias)
        self.kv_down = nn.Linear(C, r, bias=bias)
        self.k = nn.Linear(r, C, bias=bias)
        self.v = nn.Linear(r, C, bias=bias)
        self.k_rope = nn.Linear(C, R, bias=bias)  # muP: a readout (width -> d_R)
        self.o = nn.Linear(C, C, bias=bias)
        # muP: the content scale, a float the parametrization may overwrite (as in the GPT's
        # attention); the rope scale is width-independent and stays
        self.softmax_scale = 1.0 / math.sqrt(self.head_dim)
        self.rope_scale = 1.0 / math.sqrt(R)

    def forward(self, x: Tensor, rotation: Tensor) -> Tensor:
        B, T, C = x.shape
        H, D, R = self.n_head, self.head_dim, self.rope_dim
        c_q = self.q_down(x)  # (B, T, r)
        c_kv = self.kv_down(x)  # (B, T, r): with k_rope, all a KV cache needs
        q = self.q(c_q).view(B, T, H, D)
        k = self.k(c_kv).view(B, T, H, D)
        v = self.v(c_kv).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        q_rope = apply_rope(self.q_rope(c_q).view(B, T, H, R), rotation)
        k_rope = apply_rope(self.k_rope(x).view(B, T, 1, R), rotation).expand(B, T, H, R)
        # one attention call with scale s_C: the rope queries carry s_R / s_C
        q = torch.cat([q, q_rope * (self.rope_scale / self.softmax_scale)], -1).transpose(1, 2)
        k = torch.cat([k, k_rope], -1).transpose(1, 2)  # (B, H, T, D + R)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.softmax_scale)
        return self.o(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)
