"""Causal self-attention over a sliding window: FlexAttention, or SDPA with an explicit mask.

Sliding-window attention (Beltagy et al. 2020, "Longformer", arXiv:2004.05150; Gemma 2,
arXiv:2408.00118) lets the query at position t attend to the keys s with

    t - window < s <= t                    (the `window` latest positions, itself included)

so window >= T is plain causal attention. The modded-nanogpt speedrun computes it with
FlexAttention (Dong et al. 2024, arXiv:2412.05496): a `BlockMask` built from this predicate
skips the key blocks that lie wholly outside the window, and the kernel never materializes
the (T, T) mask. The same attention is `F.scaled_dot_product_attention` with the boolean
(T, T) mask passed explicitly: the path where FlexAttention is unavailable. In torch 2.13
FlexAttention has no backward on the CPU, so "auto" takes FlexAttention on CUDA only; the two
paths agree to float32 rounding (tests: within 1e-5).

The speedrun grows the window during training (`window_at`: linearly from a short window to
the full one, rounded up to a multiple of the FlexAttention block size; record 2025-01-16 of
KellerJordan/modded-nanogpt: 128 -> 1792 tokens). Short windows early are cheaper, and the
model first learns local statistics.

Masks are built once per (T, window, device) and cached: a new window (at most one per
schedule step) costs one mask.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ntk._checks import check_choice, check_positive_int

IMPLS = ("auto", "flex", "sdpa")


def check_window(name: str, window: int | None, block_size: int) -> int | None:
    """A window in [1, block_size], or None (full causal attention)."""
    if window is None:
        return None
    check_positive_int(name, window)
    if window > block_size:
        raise ValueError(f"{name} ({window}) must be <= block_size ({block_size})")
    return window


def window_at(step: int, total: int, start: int, end: int, multiple: int = 1) -> int:
    """The window at training step `step` of `total`: start + (end - start) step / total,
    rounded up to a multiple of `multiple` and kept in [start, end] (the speedrun's schedule)."""
    check_positive_int("step", step, minimum=0)
    check_positive_int("total", total)
    check_positive_int("start", start)
    check_positive_int("multiple", multiple)
    if check_positive_int("end", end) < start:
        raise ValueError(f"window schedule: end ({end}) must be >= start ({start})")
    target = start + (end - start) * min(step / total, 1.0)
    return min(max(multiple * math.ceil(target / multiple - 1e-9), start), end)


@functools.cache
def window_mask(T: int, window: int, device: torch.device) -> Tensor:
    """keep[t, s] = s <= t < s + window: (T, T) bool, True where query t attends to key s."""
    # a plain tensor even when first built under inference_mode: autograd may save it later
    with torch.inference_mode(False), torch.no_grad():
        pos = torch.arange(T, device=device)
        gap = pos[:, None] - pos[None, :]  # t - s
        return (gap >= 0) & (gap < window)


@functools.cache
def _block_mask(T: int, window: int, device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    def keep(b, h, q_idx, kv_idx):  # the predicate of `window_mask`, per (query, key) index
        return (q_idx >= kv_idx) & (q_idx - kv_idx < window)

    block = min(128, T)  # FlexAttention's default block size, at most the sequence
    return create_block_mask(keep, None, None, T, T, device=device, BLOCK_SIZE=block)


def causal_attention(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float, window: int | None, impl: str = "auto"
) -> Tensor:
    """softmax(scale q k^T + mask) v for q, k, v of shape (B, H, T, D), causal within `window`.

    `window` None (or >= T) is full causal attention; "sdpa" then makes exactly the call of
    the plain GPT (`is_causal=True`). `impl` "flex" uses FlexAttention (no backward on the
    CPU in torch 2.13), "sdpa" the explicit mask, "auto" FlexAttention on CUDA with a window
    and SDPA otherwise.
    """
    check_choice("attn_impl", impl, IMPLS)
    T = q.shape[-2]
    full = window is None or window >= T
    flex = impl == "flex" or (impl == "auto" and q.is_cuda and not full)
    if not flex:
        if full:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        mask = window_mask(T, window, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
        raise ValueError(
            "attn_impl='flex' has no backward on the CPU in this torch; use attn_impl='sdpa' "
            "(or 'auto') to train on the CPU"
        )
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = _block_mask(T, T if full else window, q.device)
    return flex_attention(q, k, v, block_mask=block_mask, scale=scale)
