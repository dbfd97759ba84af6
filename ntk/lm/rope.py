"""Rotary position embeddings (RoPE, Su et al. 2021, "RoFormer", arXiv:2104.09864).

The rotation tables and their application to queries and keys, shared by the GPT's attention
(`ntk.lm.model`) and its latent attention's decoupled RoPE part (`ntk.lm.mla`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_rotation(
    T: int, head_dim: int, base: float, device: torch.device | str | None = None
) -> Tensor:
    """exp(i t theta_k) for positions t < T, pairs k < head_dim / 2: (T, head_dim / 2), complex128.

    Su et al. 2021, eq. (15): coordinate pair k of a query or key at position t is rotated by
    the angle t * theta_k, theta_k = base^(-2k / head_dim). The product of a rotated query at
    t and a rotated key at s then depends on t - s only: attention sees relative positions.
    Computed in float64 (`cached_rotation` keeps the table it casts from this).
    """
    theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim)
    angles = torch.outer(torch.arange(T, dtype=torch.float64, device=device), theta)  # (T, D/2)
    return torch.polar(torch.ones_like(angles), angles)


_ROTATIONS: dict[tuple, Tensor] = {}


def cached_rotation(
    T: int, head_dim: int, base: float, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """`rope_rotation(T, ...)` cast to complex64 (complex128 for float64 activations) and
    viewed as real (cos, sin) pairs: (T, head_dim / 2, 2), float32 (float64).

    Built once per (T, head_dim, base, device, dtype) and reused: not a buffer, so it is never
    stored in a checkpoint, cast by `model.to(dtype)` or broadcast with the parameters. The
    cached values are those of a fresh computation.
    """
    key = (T, head_dim, base, torch.device(device), dtype)
    rotation = _ROTATIONS.get(key)
    if rotation is None:
        # a plain tensor even when first built under inference_mode: autograd saves it later
        with torch.inference_mode(False), torch.no_grad():
            complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
            rotation = torch.view_as_real(
                rope_rotation(T, head_dim, base, device).to(complex_dtype)
            )
        _ROTATIONS[key] = rotation
    return rotation


def apply_rope(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate consecutive coordinate pairs of x (B, T, H, D) by `rotation`: (T, D/2) complex,
    or its real view (T, D/2, 2) of (cos, sin) pairs.

    The pair (x_2i, x_2i+1), read as the complex number x_2i + i x_2i+1, is rotated by one
    complex multiplication: the form of Su et al. 2021, section 3.4.2. Compiled, the same
    product is written out in real numbers, (a cos - b sin, a sin + b cos): torch.compile's
    inductor generates no code for complex numbers, and fuses these.
    """
    B, T, H, D = x.shape
    real = x if x.dtype in (torch.float32, torch.float64) else x.float()
    if rotation.is_complex():
        rotation = torch.view_as_real(rotation)
    rotation = rotation[:T, None]  # (T, 1, D/2, 2), broadcast over heads
    if torch.compiler.is_compiling():
        a, b = real.unflatten(-1, (D // 2, 2)).unbind(-1)  # (B, T, H, D/2) each
        cos, sin = rotation.unbind(-1)
        return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).flatten(-2).type_as(x)
    pairs = torch.view_as_complex(real.reshape(B, T, H, D // 2, 2))  # (B, T, H, D/2)
    rotated = pairs * torch.view_as_complex(rotation)  # (B, T, H, D/2)
    return torch.view_as_real(rotated).reshape(B, T, H, D).type_as(x)
