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


def _taps(n: int, out: int, s: int, lo: int, d: int) -> tuple[slice, slice]:
    """Output positions i whose tap d lands inside the input (s i + d - lo in [0, n)), and
    those input positions: zero padding contributes nothing, so it is never materialized."""
    off = d - lo
    i0 = max(0, -(off // s) if off < 0 else 0)
    while s * i0 + off < 0:
        i0 += 1
    i1 = min(out - 1, (n - 1 - off) // s)
    if i1 < i0:
        return slice(0, 0), slice(0, 0)
    return slice(i0, i1 + 1), slice(s * i0 + off, s * i1 + off + 1, s)


def _index(ndim: int, axes_slices: dict[int, slice]) -> tuple:
    idx = [slice(None)] * ndim
    for a, sl in axes_slices.items():
        idx[a] = sl
    return tuple(idx)


def conv_pair(t: Tensor, a: int, f: int, s: int, out: int, lo: int, hi: int) -> Tensor:
    """The filter-tap SUM along spatial axes (a, a + 1), the same tap at both positions; the
    caller divides by f (folded into the layer's weight variance: one pass fewer)."""
    n = t.shape[a]
    taps = [_taps(n, out, s, lo, d) for d in range(f)]
    full = [d for d, (o, _) in enumerate(taps) if o == slice(0, out)]
    shape = list(t.shape)
    shape[a] = shape[a + 1] = out
    if full:  # a tap that covers every output starts the sum (no zero fill)
        first = full[0]
        i = taps[first][1]
        acc = t[_index(t.ndim, {a: i, a + 1: i})].clone()
    else:
        first, acc = -1, t.new_zeros(shape)
    for d, (o, i) in enumerate(taps):
        if d != first and o.stop > o.start:
            acc[_index(t.ndim, {a: o, a + 1: o})] += t[_index(t.ndim, {a: i, a + 1: i})]
    return acc


def pool_pair(t: Tensor, a: int, f: int, s: int, out: int, lo: int, hi: int) -> Tensor:
    """The window average along axis a and, independently, along axis a + 1."""
    for axis in (a, a + 1):
        n = t.shape[axis]
        shape = list(t.shape)
        shape[axis] = out
        acc = t.new_zeros(shape)
        for d in range(f):
            o, i = _taps(n, out, s, lo, d)
            acc[_index(t.ndim, {axis: o})] += t[_index(t.ndim, {axis: i})]
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
