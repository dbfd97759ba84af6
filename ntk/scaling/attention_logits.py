"""Attention logits s * q k^T, recorded where attention is computed, in any model.

Attention modules return their output (and often a tuple with cache or weights), never the
logits l = s * q k^T (s = 1/sqrt(d_head) in SP, 1/d_head in muP; Yang et al. 2022, "Tensor
Programs V", arXiv:2203.03466, section 4). To watch them across widths we catch the calls that
compute attention and rebuild l from their arguments:

* `F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale)`: used by
  Hugging Face attention with `attn_implementation="sdpa"` (their default), by
  `nn.TransformerEncoderLayer` in training, and by most hand-written GPTs. s = `scale` or
  1/sqrt(q.shape[-1]); grouped-query keys are repeated to the query heads.
* `F.multi_head_attention_forward`, the body of `nn.MultiheadAttention`: q and k are its input
  projections of `query` and `key`, split into heads, s = 1/sqrt(d_head).

The calls are caught by a `TorchFunctionMode`, which sees every torch function called during the
forward pass, however the modules are nested. Only the positions a query may attend to count:
the causal triangle, `attn_mask` (SDPA: True or a finite additive entry attends; MHA: True
forbids) and MHA's `key_padding_mask`. An additive mask's finite values (e.g. ALiBi biases) are
not added to l. Not seen: attention written out by hand (`softmax(q @ k.T * s)`), such as
Hugging Face's `attn_implementation="eager"`; `eager_attention_modules` names such modules so
callers can say so.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

# (logits (..., L, S), keep (broadcastable to logits, bool) or None for all) -> None
LogitSink = Callable[[Tensor, "Tensor | None"], None]


class AttentionLogitRecorder(TorchFunctionMode):
    """Inside `with AttentionLogitRecorder(sink):` every attention call passes its logits to
    `sink(logits, keep)` (detached, computed without grad) before it runs unchanged."""

    def __init__(self, sink: LogitSink) -> None:
        super().__init__()
        self.sink = sink

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            with torch.no_grad():
                self.sink(*sdpa_logits(*args, **kwargs))
        elif func is F.multi_head_attention_forward:
            with torch.no_grad():
                self.sink(*mha_logits(*args, **kwargs))
        return func(*args, **kwargs)


def sdpa_logits(
    query: Tensor,
    key: Tensor,
    value: Tensor | None = None,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The logits s q k^T (..., H, L, S) of a `F.scaled_dot_product_attention` call, and the
    positions that attend (None: all). Arguments as that function's."""
    q, k = query.detach(), key.detach()
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if q.ndim >= 3 and k.shape[-3] != q.shape[-3]:  # grouped-query attention: share k heads
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    logits = (q @ k.transpose(-2, -1)) * s
    keep = _causal(logits) if is_causal else None
    if attn_mask is not None:
        allowed = attn_mask if attn_mask.dtype == torch.bool else _finite(attn_mask)
        keep = allowed if keep is None else keep & allowed
    return logits, keep


def mha_logits(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    embed_dim_to_check: int,
    num_heads: int,
    in_proj_weight: Tensor | None,
    in_proj_bias: Tensor | None,
    *args: object,
    key_padding_mask: Tensor | None = None,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    use_separate_proj_weight: bool = False,
    q_proj_weight: Tensor | None = None,
    k_proj_weight: Tensor | None = None,
    **kwargs: object,
) -> tuple[Tensor, Tensor | None]:
    """The logits (N, H, L, S) of a `F.multi_head_attention_forward` call (sequence-first
    query (L, N, E), key (S, N, E), as `nn.MultiheadAttention` passes them) and the positions
    that attend. `bias_k` and `add_zero_attn` (extra key positions) are not supported."""
    bias_k, add_zero_attn = (args[0], args[2]) if len(args) >= 3 else (None, False)
    if bias_k is not None or add_zero_attn or kwargs.get("static_k") is not None:
        raise NotImplementedError(
            "attention logits of nn.MultiheadAttention with bias_k, add_zero_attn or static_k "
            "(extra key positions) are not supported; record without them (coord_check's "
            "attention_logits=False)"
        )
    e = query.shape[-1]
    if use_separate_proj_weight:
        w_q, w_k = q_proj_weight, k_proj_weight
    else:
        w_q, w_k = in_proj_weight[:e], in_proj_weight[e : 2 * e]
    b_q, b_k = (None, None) if in_proj_bias is None else (in_proj_bias[:e], in_proj_bias[e : 2 * e])
    unbatched = query.ndim == 2
    if unbatched:
        query, key = query.unsqueeze(1), key.unsqueeze(1)
    q = F.linear(query.detach(), w_q.detach(), None if b_q is None else b_q.detach())
    k = F.linear(key.detach(), w_k.detach(), None if b_k is None else b_k.detach())
    (seq_q, n, _), seq_k, head_dim = q.shape, k.shape[0], e // num_heads
    q = q.reshape(seq_q, n, num_heads, head_dim).permute(1, 2, 0, 3)  # (N, H, L, d)
    k = k.reshape(seq_k, n, num_heads, head_dim).permute(1, 2, 0, 3)
    logits = (q @ k.transpose(-2, -1)) / math.sqrt(head_dim)  # (N, H, L, S)
    keep = _causal(logits) if is_causal and attn_mask is None else None
    if attn_mask is not None:  # (L, S) or (N * H, L, S); True (or -inf) forbids
        mask = attn_mask.reshape(-1, num_heads, seq_q, seq_k) if attn_mask.ndim == 3 else attn_mask
        keep = ~mask if mask.dtype == torch.bool else _finite(mask)
    if key_padding_mask is not None:  # (N, S) or (S,); True (or -inf) is padding
        pad = key_padding_mask.reshape(-1, 1, 1, seq_k)
        allowed = ~pad if pad.dtype == torch.bool else _finite(pad)
        keep = allowed if keep is None else keep & allowed
    return logits, keep


def _causal(logits: Tensor) -> Tensor:
    """Query i attends to keys j <= i (torch's top-left aligned causal mask)."""
    seq_q, seq_k = logits.shape[-2:]
    return torch.ones(seq_q, seq_k, dtype=torch.bool, device=logits.device).tril()


def _finite(mask: Tensor) -> Tensor:
    """Positions of an additive float mask that attend: not -inf, nor the dtype's minimum
    (Hugging Face masks with finfo.min)."""
    return torch.isfinite(mask) & (mask > torch.finfo(mask.dtype).min / 2)


def eager_attention_modules(model: nn.Module) -> list[str]:
    """Names of Hugging Face attention modules that compute attention by hand (eager), whose
    logits `AttentionLogitRecorder` does not see."""
    names = []
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        if (
            "Attention" in type(module).__name__
            and getattr(config, "_attn_implementation", None) == "eager"
            and not any(isinstance(c, type(module)) for c in module.children())
        ):
            names.append(name)
    return names
