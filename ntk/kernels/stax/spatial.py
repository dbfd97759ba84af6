"""Convolution and pooling of position-position covariances, and the padding arithmetic.

For a convolution with a filter of size f, stride s and (zero) padding along one spatial dim,
weights shared across positions and i.i.d. over the filter taps, the pre-activation covariance
is the average of the input covariance over the filter taps, the same tap at both positions
(Novak et al. 2019, arXiv:1810.05148, eq. (7); Arora et al. 2019, arXiv:1904.11955, eq. (7)):

    Sigma_out(i, i') = (1 / f) sum_{d < f} Sigma_pad(s i + d, s i' + d)

Average pooling instead averages the two positions over independent window offsets:

    Sigma_out(i, i') = (1 / f^2) sum_{d, d' < f} Sigma_pad(s i + d, s i' + d')

Padding follows XLA's (and so neural-tangents'): "VALID" has out = floor((n - f) / s) + 1;
"SAME" has out = ceil(n / s) with max((out - 1) s + f - n, 0) zeros split low = total // 2,
high = the rest; padded positions have zero activations, hence zero covariance, and the
average still divides by f (neural-tangents' default `normalize_edges=False`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PADDINGS = ("SAME", "VALID")


def out_size_and_pads(
    n: int, f: int, s: int, padding: str, layer: str, dim: int
) -> tuple[int, int, int]:
    """(output size, low pad, high pad) of one spatial dim; ValueError if it does not fit."""
    if padding == "VALID":
        if f > n:
            raise ValueError(
                f"{layer}: window {f} does not fit spatial dim {dim} of size {n} with "
                "padding='VALID'; use padding='SAME' or a smaller window"
            )
        return (n - f) // s + 1, 0, 0
    out = math.ceil(n / s)
    total = max((out - 1) * s + f - n, 0)
    return out, total // 2, total - total // 2


def _pad_pair(t: Tensor, a: int, lo: int, hi: int) -> Tensor:
    """Zero-pad axes a and a + 1 by (lo, hi) each."""
    if not (lo or hi):
        return t
    shape = list(t.shape)
    shape[a] += lo + hi
    shape[a + 1] += lo + hi
    out = t.new_zeros(shape)
    idx = [slice(None)] * t.ndim
    idx[a] = slice(lo, lo + t.shape[a])
    idx[a + 1] = slice(lo, lo + t.shape[a + 1])
    out[tuple(idx)] = t
    return out


def _window(t: Tensor, axes: tuple[int, ...], start: int, stride: int, out: int) -> Tensor:
    idx = [slice(None)] * t.ndim
    for a in axes:
        idx[a] = slice(start, start + stride * (out - 1) + 1, stride)
    return t[tuple(idx)]


def conv_pair(t: Tensor, a: int, f: int, s: int, out: int, lo: int, hi: int) -> Tensor:
    """The filter-tap average along spatial axes (a, a + 1): the same tap at both positions."""
    t = _pad_pair(t, a, lo, hi)
    acc = _window(t, (a, a + 1), 0, s, out).clone()
    for d in range(1, f):
        acc.add_(_window(t, (a, a + 1), d, s, out))
    return acc.div_(f)


def pool_pair(t: Tensor, a: int, f: int, s: int, out: int, lo: int, hi: int) -> Tensor:
    """The window average along axis a and, independently, along axis a + 1."""
    t = _pad_pair(t, a, lo, hi)
    for axis in (a, a + 1):
        acc = _window(t, (axis,), 0, s, out).clone()
        for d in range(1, f):
            acc.add_(_window(t, (axis,), d, s, out))
        t = acc.div_(f)
    return t


def spatial_trace(t: Tensor, batch_ndim: int, spatial: int) -> Tensor:
    """Mean over positions of Sigma(p, p): the kernel after flattening (features C * prod n)."""
    for _ in range(spatial):
        t = torch.diagonal(t, dim1=batch_ndim, dim2=batch_ndim + 1).mean(-1)
    return t


def spatial_mean(t: Tensor, batch_ndim: int) -> Tensor:
    """Mean over all position pairs: the kernel after global average pooling."""
    dims = tuple(range(batch_ndim, t.ndim))
    return t.mean(dims) if dims else t
