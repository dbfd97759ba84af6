"""Elementwise nonlinearities: the finite module and the activation kernels, entry by entry.

For a pre-activation pair (u, v) ~ N(0, [[q1, s], [s, q2]]) (q the variances of the two
examples at their two positions, s their covariance) the layer maps

    NNGP: s -> K = E[phi(u) phi(v)],    NTK: Theta -> Theta * Kdot,  Kdot = E[phi'(u) phi'(v)]

(Lee et al. 2018, arXiv:1711.00165; Jacot et al. 2018, arXiv:1806.07572; Arora et al. 2019,
arXiv:1904.11955, eq. (8) for the convolutional case: the same map at every position pair).
The closed forms are those of `ntk.kernels.analytic` (ReLU: arc-cosine kernel, Cho & Saul
2009; erf: Williams 1997; GELU: Tsuchida et al. 2020; identity); every other name in
`ntk.activations` and any elementwise torch callable use bivariate Gauss-Hermite
quadrature with deg^2 nodes (neural-tangents' `ElementwiseNumerical`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ntk._checks import check_positive_int
from ntk.activations import get_activation
from ntk.kernels.analytic import CLOSED_FORM, _gelu
from ntk.kernels.quadrature import (
    MAX_DEGREE,
    QUADRATURE_NODES,
    check_gauss_hermite,
    f_df,
    gauss_hermite,
    snap_unit,
)
from ntk.kernels.stax.base import Layer, State, VarianceTape, require_gaussian

_TWO_PI = 2 * math.pi


class _Elementwise(nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class Activation(Layer):
    """phi applied elementwise: "relu", "erf", "gelu", "identity" (closed forms), "tanh",
    "sigmoid" or any elementwise torch callable (Gauss-Hermite of `quadrature_degree`)."""

    def __init__(
        self, activation: str | Callable[[Tensor], Tensor], quadrature_degree: int = 50
    ) -> None:
        self.fn = get_activation(activation)  # raises on an unknown name
        self.activation = activation
        check_positive_int("quadrature_degree", quadrature_degree, maximum=MAX_DEGREE)
        self.kind = activation if isinstance(activation, str) and activation in CLOSED_FORM else ""
        if not self.kind:
            check_gauss_hermite(quadrature_degree)
        self.degree = quadrature_degree
        self.name = activation if isinstance(activation, str) else "Activation(callable)"

    def build(self, shape, parametrization):
        return _Elementwise(self.fn), shape

    def kernel(self, state: State, tape: VarianceTape, parametrization: str) -> State:
        if self.kind != "identity":  # the identity's kernel is exact for any input
            require_gaussian(f"activation {self.name!r}", state)
        q1, q2 = tape.variances(state)
        want = state.ntk is not None
        k, kdot = activation_kernels(self, state.nngp, q1, q2, want)
        ntk = state.ntk * kdot if want else None
        return state.with_(nngp=k, ntk=ntk, gaussian=self.kind == "identity" and state.gaussian)


def activation_kernels(
    act: Activation, s: Tensor, q1: Tensor, q2: Tensor, want_kdot: bool
) -> tuple[Tensor, Tensor | None]:
    """(K, Kdot) of covariances s, with row/column variances q1, q2 broadcastable to s."""
    kind = act.kind
    if kind == "relu":
        r1, r2 = q1.sqrt(), q2.sqrt()  # small: per example and position
        inv1 = torch.where(q1 > 0, 1 / r1, torch.zeros_like(r1))  # zero variance: cos = 0
        inv2 = torch.where(q2 > 0, 1 / r2, torch.zeros_like(r2))
        c = snap_unit((s * inv1).mul_(inv2))  # cos(theta)
        kdot = torch.arccos(c).mul_(-1 / _TWO_PI).add_(0.5)  # (pi - theta) / (2 pi)
        # K = sqrt(q1 q2) sin(theta) / (2 pi) + Kdot s
        k = c.square_().neg_().add_(1.0).sqrt_().mul_(r1 * (1 / _TWO_PI)).mul_(r2)
        return k.addcmul_(kdot, s), kdot
    if kind == "erf":
        kdot = None
        if want_kdot:  # formed without cancellation, as in ntk.kernels.analytic
            kdot = torch.addcmul(q1 * q2, s, s, value=-1.0).clamp_(min=0.0)
            kdot = kdot.mul_(4.0).add_(2 * (q1 + q2)).add_(1.0).rsqrt_().mul_(4 / math.pi)
        u = (2 * s * torch.rsqrt(1 + 2 * q1) * torch.rsqrt(1 + 2 * q2)).clamp_(-1.0, 1.0)
        return u.asin_().mul_(2 / math.pi), kdot
    if kind == "gelu":
        return _gelu(s.clone(), q1 * q2, (q1 + 1) * (q2 + 1), 1 + q1 + q2, want_kdot)
    if kind == "identity":
        return s, torch.ones_like(s) if want_kdot else None
    return _quadrature(act, s, q1, q2, want_kdot)


def _quadrature(
    act: Activation, s: Tensor, q1: Tensor, q2: Tensor, want_kdot: bool
) -> tuple[Tensor, Tensor | None]:
    """E[g(u) g(v)] ~ sum_ij w_i w_j g(sqrt(2 q1) x_i) g(sqrt(2 q2)(rho x_i + r x_j)) / pi,
    entry by entry, in chunks of at most QUADRATURE_NODES node evaluations."""
    x, w = gauss_hermite(act.degree, s)
    deg = x.shape[0]
    s_, q1_, q2_ = (t.reshape(-1) for t in torch.broadcast_tensors(s, q1, q2))
    k = torch.empty_like(s_)
    kdot = torch.empty_like(s_) if want_kdot else None
    m = max(1, QUADRATURE_NODES // (deg * deg))
    for c0 in range(0, s_.numel(), m):
        sl = slice(c0, c0 + m)
        r1, r2 = q1_[sl].sqrt(), q2_[sl].sqrt()
        inv = torch.where(r1 * r2 > 0, 1 / (r1 * r2), torch.zeros_like(r1))
        rho = snap_unit(s_[sl] * inv)
        r = (1 - rho * rho).clamp_(min=0.0).sqrt_()
        u = (math.sqrt(2.0) * r1)[:, None] * x  # (m, deg)
        v = (rho[:, None, None] * x[:, None] + r[:, None, None] * x) * (math.sqrt(2.0) * r2)[
            :, None, None
        ]  # (m, i, j)
        fu, dfu = f_df(act.activation, u, want_kdot)
        fv, dfv = f_df(act.activation, v, want_kdot)
        k[sl] = torch.einsum("ei,ei->e", fu * (w / math.pi), fv @ w)
        if want_kdot:
            kdot[sl] = torch.einsum("ei,ei->e", dfu * (w / math.pi), dfv @ w)
    shape = s.shape
    return k.reshape(shape), None if kdot is None else kdot.reshape(shape)


def Relu() -> Activation:
    return Activation("relu")


def Erf() -> Activation:
    return Activation("erf")


def Gelu() -> Activation:
    return Activation("gelu")


def Tanh(quadrature_degree: int = 50) -> Activation:
    return Activation("tanh", quadrature_degree)


def Sigmoid(quadrature_degree: int = 50) -> Activation:
    return Activation("sigmoid", quadrature_degree)
