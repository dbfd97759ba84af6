"""Attention logits caught from SDPA and nn.MultiheadAttention: softmax(logits) is the attention
the layer itself computes."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ntk.scaling.attention_logits import AttentionLogitRecorder


def _capture(fn):
    seen = []
    with AttentionLogitRecorder(lambda logits, keep: seen.append((logits, keep))):
        out = fn()
    return out, seen


def _attention(logits, keep):
    """softmax over the allowed keys (the layer's own attention weights)."""
    if keep is not None:
        logits = logits.masked_fill(~torch.broadcast_to(keep, logits.shape), float("-inf"))
    return logits.softmax(-1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"is_causal": True},
        {"scale": 0.05},
        {"attn_mask": "bool"},
        {"attn_mask": "float"},
        {"enable_gqa": True},
    ],
)
def test_sdpa_logits_reproduce_its_output(kwargs):
    g = torch.Generator().manual_seed(0)
    n, h, seq, d = 2, 4, 5, 8
    q = torch.randn(n, h, seq, d, generator=g)
    k = torch.randn(n, h // 2 if kwargs.get("enable_gqa") else h, seq, d, generator=g)
    v = torch.randn(k.shape, generator=g)
    if kwargs.get("attn_mask") == "bool":
        kwargs["attn_mask"] = torch.rand(seq, seq, generator=g) > 0.3
        kwargs["attn_mask"][:, 0] = True  # every query attends somewhere
    elif kwargs.get("attn_mask") == "float":
        mask = torch.zeros(n, 1, seq, seq)
        mask[..., -2:] = torch.finfo(torch.float32).min  # Hugging Face's padding convention
        kwargs["attn_mask"] = mask
    out, seen = _capture(lambda: F.scaled_dot_product_attention(q, k, v, **kwargs))
    assert len(seen) == 1
    logits, keep = seen[0]
    assert logits.shape == (n, h, seq, seq) and not logits.requires_grad
    if kwargs.get("enable_gqa"):
        v = v.repeat_interleave(2, dim=1)
    torch.testing.assert_close(_attention(logits, keep) @ v, out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mask", [None, "causal", "padding", "float"])
def test_mha_logits_are_its_attention_weights(batch_first, mask):
    torch.manual_seed(0)
    e, h, n, seq = 12, 3, 2, 6
    mha = nn.MultiheadAttention(e, h, batch_first=batch_first)
    x = torch.randn((n, seq, e) if batch_first else (seq, n, e))
    kw = {}
    if mask == "causal":
        kw = dict(attn_mask=nn.Transformer.generate_square_subsequent_mask(seq), is_causal=True)
    elif mask == "padding":
        kw = dict(key_padding_mask=torch.tensor([[False] * seq, [False] * 4 + [True] * 2]))
    elif mask == "float":
        kw = dict(attn_mask=torch.triu(torch.full((seq, seq), float("-inf")), diagonal=1))
    (_, weights), seen = _capture(lambda: mha(x, x, x, average_attn_weights=False, **kw))
    assert len(seen) == 1  # the SDPA call inside is not counted twice
    logits, keep = seen[0]
    torch.testing.assert_close(_attention(logits, keep), weights, rtol=1e-5, atol=1e-6)


def test_mha_separate_projections():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, kdim=6, vdim=5)
    q, k, v = torch.randn(4, 3, 8), torch.randn(7, 3, 6), torch.randn(7, 3, 5)
    (_, weights), seen = _capture(lambda: mha(q, k, v, average_attn_weights=False))
    torch.testing.assert_close(_attention(*seen[0]), weights, rtol=1e-5, atol=1e-6)


def test_mha_with_extra_key_positions_is_refused():
    mha = nn.MultiheadAttention(8, 2, add_bias_kv=True)
    x = torch.randn(4, 3, 8)
    with pytest.raises(NotImplementedError, match="bias_k"):
        _capture(lambda: mha(x, x, x))
