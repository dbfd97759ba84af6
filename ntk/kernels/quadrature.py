"""Bivariate Gauss-Hermite quadrature of the activation kernels, for any activation.

For an elementwise phi without a closed form, the analytic kernels (`ntk.kernels.analytic`)
need K = E[phi(u) phi(v)] and Kdot = E[phi'(u) phi'(v)] over (u, v) ~ N(0, Lambda). With
u = sqrt(q1) z1, v = sqrt(q2) (rho z1 + sqrt(1 - rho^2) z2), z ~ N(0, I), both are sums over
deg^2 Gauss-Hermite nodes (the scheme of neural-tangents' `stax.ElementwiseNumerical`),
phi' from torch autograd.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ntk.activations import get_activation

QUADRATURE_NODES = 1 << 20  # node evaluations per quadrature chunk (8 MB per float64 array)
# deg^2 nodes per kernel entry: beyond this the cost is absurd (and numpy's nodes fail anyway)
MAX_DEGREE = 500


@functools.lru_cache(maxsize=16)
def _hermgauss(degree: int) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):  # overflow at large degrees is reported by the check below
        return np.polynomial.hermite.hermgauss(degree)


def snap_unit(c: Tensor) -> Tensor:
    """A cosine (correlation) clamped to [-1, 1], with values within 8 eps of +-1 set to +-1.

    A Gram entry fixes the angle between two points only to ~sqrt(eps) (arccos(1 - delta) ~
    sqrt(2 delta)), so rounding alone puts identical points at an angle of ~1e-8 and makes
    their kernel rows differ in the 8th digit: a duplicated training point would then not give
    an exactly singular kernel. Closer to +-1 than the rounding of the entries, the angle is
    taken as 0 (or pi). In place; returns `c`.
    """
    c.clamp_(-1.0, 1.0)
    edge = 1.0 - 8 * torch.finfo(c.dtype).eps
    return c.masked_fill_(c > edge, 1.0).masked_fill_(c < -edge, -1.0)


def snapped_sin_and_supplement(c: Tensor) -> tuple[Tensor, Tensor]:
    """(sin(theta), pi - theta) with theta = arccos(c) for a cosine `c` (overwritten: clamped
    to [-1, 1]), with the same snapping as `snap_unit` applied to the angle: cosines within
    8 eps of 1 give exactly theta = 0 (so sin(theta) = 0), within 8 eps of -1 give
    pi - theta = 0. The ReLU kernels need just these: Kdot = (pi - theta) / (2 pi).

    Snapped with two in-place thresholds (x <= edge -> 0), one pass each: the comparisons and
    masked fills they replace cost four passes and two boolean temporaries, 28% of a ReLU
    Gram block's time (profiled 2026-12-08, N = 2000, depth 3, one thread)."""
    theta = torch.arccos(c.clamp_(-1.0, 1.0))
    edge = _snap_angle(c.dtype)
    torch.nn.functional.threshold_(theta, edge, 0.0)  # identical directions: theta = 0
    u = torch.nn.functional.threshold_(torch.rsub(theta, math.pi), edge, 0.0)  # opposite
    return theta.sin_(), u


@functools.lru_cache(maxsize=4)
def _snap_angle(dtype: torch.dtype) -> float:
    """arccos(1 - 8 eps): angles below it are the rounding of identical directions."""
    edge = 1.0 - 8 * torch.finfo(dtype).eps
    return float(torch.arccos(torch.tensor(edge, dtype=torch.float64)))


def check_gauss_hermite(degree: int) -> None:
    """Raise if numpy's Gauss-Hermite rule of this degree is not finite (NaN from ~372 on)."""
    x, w = _hermgauss(degree)
    if not (np.isfinite(x).all() and np.isfinite(w).all()):
        raise ValueError(
            f"quadrature_degree={degree} is too large: numpy's hermgauss({degree}) returns "
            "non-finite nodes or weights (they overflow from about degree 372); degree 100 is "
            "already accurate to ~1e-7"
        )


def gauss_hermite(degree: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Physicists' Gauss-Hermite nodes and weights: int e^{-x^2} g(x) dx ~ sum w_i g(x_i)."""
    x, w = _hermgauss(degree)
    return (
        torch.as_tensor(x, dtype=like.dtype, device=like.device),
        torch.as_tensor(w, dtype=like.dtype, device=like.device),
    )


def f_df(
    activation: str | Callable[[Tensor], Tensor], u: Tensor, want_df: bool
) -> tuple[Tensor, Tensor | None]:
    """phi(u) and phi'(u) (autograd of the elementwise callable)."""
    fn = get_activation(activation)
    if not want_df:
        with torch.no_grad():
            return fn(u), None
    with torch.enable_grad():
        u = u.detach().requires_grad_(True)
        f = fn(u)
        (df,) = torch.autograd.grad(f, u, torch.ones_like(f))
    return f.detach(), df


def quadrature_diag(
    activation: str | Callable[[Tensor], Tensor], degree: int, q: Tensor
) -> tuple[Tensor, Tensor]:
    """K(x, x) = E[phi(u)^2] and Kdot(x, x) = E[phi'(u)^2], u ~ N(0, q), shape (N,)."""
    nodes, weights = gauss_hermite(degree, q)
    # E[f(u)^2], u ~ N(0, q): sum_i w_i f(sqrt(2 q) x_i)^2 / sqrt(pi)
    u = torch.sqrt(2 * q)[:, None] * nodes  # (N, deg)
    f, df = f_df(activation, u, want_df=True)
    scale = 1 / math.sqrt(math.pi)
    return (f * f) @ weights * scale, (df * df) @ weights * scale


def quadrature_block(
    activation: str | Callable[[Tensor], Tensor],
    degree: int,
    s: Tensor,
    root1: Tensor,
    inv1: Tensor,
    root2: Tensor,
    inv2: Tensor,
    want_kdot: bool,
) -> tuple[Tensor, Tensor | None]:
    """E[phi(u) phi(v)] (and with phi') for a (B, M) block of Sigma by bivariate Gauss-Hermite.

    root = sqrt(q), inv = 1 / sqrt(q) of the rows (1) and columns (2); with `degree` nodes x_i:
    E[g(u) g(v)] ~ sum_ij w_i w_j g(sqrt(2 q1) x_i) g(sqrt(2 q2) (rho x_i + r x_j)) / pi.
    """
    x, w = gauss_hermite(degree, s)
    deg = x.shape[0]
    u = (math.sqrt(2.0) * root1)[:, None] * x  # (B, deg)
    fu, dfu = f_df(activation, u, want_kdot)
    fu, dfu = fu * (w / math.pi), None if dfu is None else dfu * (w / math.pi)
    k = torch.empty_like(s)
    kdot = torch.empty_like(s) if want_kdot else None
    # columns in chunks: the (B, m, deg, deg) node values stay within ~1M entries
    m = max(1, QUADRATURE_NODES // (s.shape[0] * deg * deg))
    for c0 in range(0, s.shape[1], m):
        cols = slice(c0, c0 + m)
        rho = snap_unit(s[:, cols] * inv1[:, None] * inv2[cols])  # (B, m)
        r = (1 - rho * rho).clamp_(min=0.0).sqrt_()
        s2 = math.sqrt(2.0) * root2[cols, None, None]  # (m, 1, 1)
        v = (rho[..., None, None] * x[:, None] + r[..., None, None] * x) * s2  # (B,m,i,j)
        fv, dfv = f_df(activation, v, want_kdot)
        # sum_i w_i g(u_i) sum_j w_j g(v_ij) / pi
        k[:, cols] = torch.einsum("bi,bmi->bm", fu, fv @ w)
        if want_kdot:
            kdot[:, cols] = torch.einsum("bi,bmi->bm", dfu, dfv @ w)
    return k, kdot
