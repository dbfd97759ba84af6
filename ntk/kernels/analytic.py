"""Analytic infinite-width NNGP and NTK kernels of fully-connected networks.

The network is `depth` hidden layers, each Dense -> activation, then a Dense readout, i.e.
neural-tangents' ``stax.serial(*[Dense(width, W_std, b_std), act] * depth, Dense(out, ...))``.
At infinite width its outputs are a Gaussian process with covariance Sigma (the NNGP kernel,
Neal 1996; Lee et al. 2018, arXiv:1711.00165) and gradient descent on it is kernel regression
with the neural tangent kernel Theta (Jacot et al. 2018, arXiv:1806.07572; Arora et al. 2019,
arXiv:1904.11955, eqs. (9)-(11)). With sigma_w = `weight_std`, sigma_b = `bias_std`, d the
input dimension and phi the activation, the layer-wise recursion is

    Sigma^1(x, x') = sigma_w^2 <x, x'> / d + sigma_b^2
    Lambda^l       = [[Sigma^l(x, x), Sigma^l(x, x')], [Sigma^l(x, x'), Sigma^l(x', x')]]
    K^l(x, x')     = E_{(u, v) ~ N(0, Lambda^l)} [phi(u) phi(v)]          (activation kernel)
    Kdot^l(x, x')  = E_{(u, v) ~ N(0, Lambda^l)} [phi'(u) phi'(v)]        (derivative kernel)
    Sigma^{l+1}    = sigma_w^2 K^l + sigma_b^2

and for the NTK ("ntk" parametrization, z = sigma_w W x / sqrt(fan_in) + sigma_b b):

    Theta^1     = Sigma^1
    Theta^{l+1} = Sigma^{l+1} + sigma_w^2 Kdot^l Theta^l

The readout gives NNGP = Sigma^{depth+1} and NTK = Theta^{depth+1}; depth = 0 is the linear
model. In the "sp" (standard) parametrization (z = W x + b, W ~ N(0, sigma_w^2 / fan_in),
b ~ N(0, sigma_b^2); Sohl-Dickstein et al. 2020, arXiv:2001.07301) the NNGP is the same, but
the weight gradients are not rescaled by 1/sqrt(fan_in), so the NTK grows with the width.
As in neural-tangents' ``stax.Dense`` kernel, we use

    Theta^1     = d * <x, x'> / d + [bias]                      = <x, x'> + [bias]
    Theta^{l+1} = n_l K^l + sigma_w^2 Kdot^l Theta^l + [bias]

with n_l = `width` (the fan-in of the layer) and [bias] = 1 when the layer has bias parameters
(`bias_std` is not None, even when it is 0: a zero-initialized bias still has gradient 1).
In the "ntk" parametrization `bias_std=None` and `bias_std=0` are the same network.

The expectations are in closed form for
  * ReLU, the arc-cosine kernel of degree 1 (Cho & Saul 2009): with cos(theta) = Sigma_12 /
    sqrt(Sigma_11 Sigma_22), K = sqrt(Sigma_11 Sigma_22) (sin theta + (pi - theta) cos theta)
    / (2 pi) and Kdot = (pi - theta) / (2 pi);
  * erf (Williams 1997): K = (2 / pi) arcsin(2 Sigma_12 / sqrt((1 + 2 Sigma_11)(1 + 2 Sigma_22)))
    and Kdot = (4 / pi) / sqrt((1 + 2 Sigma_11)(1 + 2 Sigma_22) - 4 Sigma_12^2), the root's
    argument formed as 1 + 2 (Sigma_11 + Sigma_22) + 4 (Sigma_11 Sigma_22 - Sigma_12^2) so that
    it stays >= 1 at identical points even for huge variances;
  * GELU (Tsuchida et al. 2020; see `_gelu`), exact like neural-tangents' ``stax.Gelu``;
  * identity: K = Sigma, Kdot = 1;
and for every other activation (a name in `ntk.activations` or any elementwise torch callable)
they use bivariate Gauss-Hermite quadrature of degree `quadrature_degree` (deg^2 nodes, the
scheme of neural-tangents' ``stax.ElementwiseNumerical(fn, deg)``, Han et al. 2022,
arXiv:2209.04121), with phi' from torch autograd. Cost and memory grow as deg^2 per entry.
The error falls with deg, fast only once the nodes resolve the activation's bends at the
scale of the pre-activations: measured max relative errors at depth 1-2, weight_std 1.3,
unit-scale inputs (NNGP / NTK; the derivative kernel converges more slowly):

    deg    gelu (vs closed form)    tanh (vs deg 250)
    25     2e-3 / 1e-2              4e-3 / 2e-2      (neural-tangents' suggested start)
    50     2e-5 / 3e-4              1e-4 / 1e-3      (our default)
    100    4e-9 / 1e-7              7e-7 / 2e-5

Kinked activations converge slowly, which is why ReLU has its closed form. The rule treats x1 and x2
asymmetrically (a Cholesky factor), so K(x1, x2) = K(x2, x1)^T only up to that error;
a symmetric call K(x) mirrors its upper triangle and is exactly symmetric.

Gram matrices are computed in row blocks, all layers at once per block, so the memory is the
outputs plus O(block x N2) temporaries; diagonals are computed in O(N) without the Gram.
Kernels are computed in float64 by default (inputs of any float dtype are cast) and are not
differentiable with respect to the inputs (in-place arithmetic). A kernel that overflows the
dtype (e.g. ReLU with weight_std = 1e100: Sigma ~ weight_std^(2 (depth + 1))) raises a
FloatingPointError instead of returning Inf or NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ntk._checks import (
    check_elementwise,
    check_float_dtype,
    check_inputs,
    check_parametrization,
    check_positive_int,
    check_std,
)
from ntk.activations import get_activation
from ntk.kernels.quadrature import (
    MAX_DEGREE,
    QUADRATURE_NODES,
    check_gauss_hermite,
    quadrature_block,
    quadrature_diag,
    snapped_sin_and_supplement,
)
from ntk.registry import select

CLOSED_FORM = ("relu", "erf", "gelu", "identity")
PARAMETRIZATIONS = select("ntk", "sp")
_TWO_PI = 2.0 * math.pi
# The sp NTK multiplies kernels by the width: an exactly representable float (2^53) is far
# beyond any network, and larger ints would overflow float arithmetic.
MAX_WIDTH = 2**53


class Kernels(NamedTuple):
    """NNGP and NTK matrices of the same inputs, shape (N1, N2) each (or (N,) for diagonals)."""

    nngp: Tensor
    ntk: Tensor


@dataclass(frozen=True)
class MLPKernel:
    """Infinite-width NNGP / NTK of a depth-`depth` MLP (see the module docstring).

    Args:
        depth: number of hidden layers (Dense -> activation); 0 is the linear readout alone.
        activation: "relu", "erf", "gelu" or "identity" (closed forms), another name in
            `ntk.activations.ACTIVATIONS`, or any elementwise torch callable (quadrature).
        weight_std: sigma_w >= 0.
        bias_std: sigma_b >= 0, or None for layers without bias (matters only for "sp").
        parametrization: "ntk" or "sp" ("standard" is read as "sp"); same NNGP, different NTK.
        width: hidden-layer width n; needed only by the "sp" NTK of depth >= 1.
        quadrature_degree: Gauss-Hermite nodes per dimension for non-closed-form activations.
        dtype: floating dtype of the computation and the outputs (float64 by default).
        block_size: rows per block of the Gram computation; None picks one from the sizes.

    Example:
        >>> k = MLPKernel(depth=3, activation="relu", weight_std=1.4, bias_std=0.1)
        >>> nngp, ntk = k.kernels(torch.randn(100, 8))   # (100, 100) each, float64
    """

    depth: int = 1
    activation: str | Callable[[Tensor], Tensor] = "relu"
    weight_std: float = 1.0
    bias_std: float | None = 0.0
    parametrization: str = "ntk"
    width: int | None = None
    quadrature_degree: int = 50
    dtype: torch.dtype = torch.float64
    block_size: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("depth", self.depth, minimum=0)
        get_activation(self.activation)  # raises on an unknown name
        if callable(self.activation):
            check_elementwise("activation", self.activation)
        object.__setattr__(self, "weight_std", check_std("weight_std", self.weight_std))
        if self.bias_std is not None:
            object.__setattr__(self, "bias_std", check_std("bias_std", self.bias_std))
        p = check_parametrization("parametrization", self.parametrization, PARAMETRIZATIONS)
        object.__setattr__(self, "parametrization", p)
        if self.width is not None:
            check_positive_int("width", self.width, maximum=MAX_WIDTH)
        if self.parametrization == "sp" and self.depth >= 1 and self.width is None:
            raise ValueError(
                "width must be given (a positive int, the hidden-layer width) when "
                "parametrization='sp' and depth >= 1: that NTK grows with the width"
            )
        check_positive_int("quadrature_degree", self.quadrature_degree, maximum=MAX_DEGREE)
        if self._kind == "quadrature":
            check_gauss_hermite(self.quadrature_degree)
        check_float_dtype("dtype", self.dtype)
        if self.block_size is not None:
            check_positive_int("block_size", self.block_size)

    # ---------------------------------------------------------------- public API
    def nngp(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        """NNGP Gram matrix Sigma(x1, x2), shape (N1, N2); x2=None means x1 (symmetric)."""
        return self._gram(x1, x2, want_ntk=False)[0]

    def ntk(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        """NTK Gram matrix Theta(x1, x2), shape (N1, N2)."""
        return self._gram(x1, x2, want_ntk=True)[1]

    def kernels(self, x1: Tensor, x2: Tensor | None = None) -> Kernels:
        """Both Gram matrices from one pass over the layers (cheaper than two calls)."""
        nngp, ntk = self._gram(x1, x2, want_ntk=True)
        return Kernels(nngp, ntk)

    def nngp_diag(self, x: Tensor) -> Tensor:
        """Sigma(x_i, x_i), shape (N,), in O(N depth) without the Gram matrix."""
        return self.diag(x).nngp

    def ntk_diag(self, x: Tensor) -> Tensor:
        """Theta(x_i, x_i), shape (N,), in O(N depth) without the Gram matrix."""
        return self.diag(x).ntk

    def diag(self, x: Tensor) -> Kernels:
        """Both diagonals, shape (N,) each."""
        x = check_inputs("x", x, dtype=self.dtype).detach()
        _, nngp, ntk = self._diag_recursion(x)
        self._check_finite(nngp, ntk)
        return Kernels(nngp, ntk)

    def _check_finite(self, *kernels: Tensor | None) -> None:
        """Raise instead of returning Inf/NaN when the kernel outgrows the dtype.

        Sigma grows like (weight_std^2 / 2)^depth |x|^2 / d for ReLU (and the "sp" NTK
        also like width), so e.g. weight_std = 1e100 overflows float64 at any depth.
        """
        for k in kernels:
            if k is not None and not torch.isfinite(k).all():
                raise FloatingPointError(
                    f"the NNGP/NTK overflowed {self.dtype} (Inf or NaN) with depth={self.depth}, "
                    f"weight_std={self.weight_std:g}, bias_std={self.bias_std}, "
                    f"width={self.width}, parametrization={self.parametrization!r}: the kernel "
                    "grows geometrically with depth in weight_std^2 (and with |x|^2, and with "
                    "width in the sp NTK); scale down weight_std or the inputs, or use "
                    "dtype=torch.float64"
                )

    # ---------------------------------------------------------------- the recursion
    @property
    def _kind(self) -> str:
        a = self.activation
        return a if isinstance(a, str) and a in CLOSED_FORM else "quadrature"

    def _affine(self, k: Tensor) -> Tensor:
        """Sigma = sigma_w^2 K + sigma_b^2, in place."""
        if self.weight_std != 1.0:  # a pass over the block saved in the common case
            k.mul_(self.weight_std**2)
        if self.bias_std:
            k.add_(self.bias_std**2)
        return k

    def _ntk_step(self, theta: Tensor, sigma: Tensor, k_act: Tensor | None, fan_in: int) -> Tensor:
        """Theta after a Dense layer from Theta before it (already times Kdot), in place.

        `sigma` is the layer's output NNGP; `k_act` its input kernel (before the affine map),
        needed only by "sp" (None means `sigma` was not yet computed from it).
        """
        w2 = self.weight_std**2
        if w2 != 1.0:
            theta.mul_(w2)
        if self.parametrization == "ntk":
            return theta.add_(sigma)
        theta.add_(k_act, alpha=float(fan_in))
        if self.bias_std is not None:
            theta.add_(1.0)
        return theta

    def _diag_recursion(self, x: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """Pre-activation variances Sigma^l(x, x) for l = 1..depth, and the output diagonals."""
        d = x.shape[1]
        k = x.pow(2).sum(1).div_(d)  # (N,) input kernel <x, x> / d
        qs = []
        theta = torch.zeros_like(k)
        fan_in = d
        for _ in range(self.depth + 1):
            sigma = self._affine(k.clone())
            theta = self._ntk_step(theta, sigma, k, fan_in)
            if len(qs) == self.depth:
                return qs, sigma, theta
            qs.append(sigma)
            k, kdot = self._act_diag(sigma)
            theta = theta * kdot
            fan_in = self.width or 0
        raise AssertionError("unreachable")

    def _act_diag(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """K(x, x) and Kdot(x, x) from the variance q = Sigma(x, x), shape (N,)."""
        kind = self._kind
        if kind == "relu":
            # Kdot(x, x) = 1/2 at cos = 1; at zero variance cos is taken as 0 (Kdot = 1/4), as
            # in the Gram blocks and in neural-tangents, so K(x) and K(x, x) agree there
            return q / 2, torch.where(q > 0, 0.5, 0.25).to(q.dtype)
        if kind == "erf":
            k = torch.asin(2 * q / (1 + 2 * q)).mul_(2 / math.pi)
            return k, torch.rsqrt(1 + 4 * q).mul_(4 / math.pi)
        if kind == "gelu":
            return _gelu(q.clone(), q * q, (q + 1) ** 2, 1 + 2 * q, want_kdot=True)
        if kind == "identity":
            return q.clone(), torch.ones_like(q)
        return quadrature_diag(self.activation, self.quadrature_degree, q)

    # ---------------------------------------------------------------- Gram matrices
    def _gram(self, x1: Tensor, x2: Tensor | None, want_ntk: bool) -> tuple[Tensor, Tensor | None]:
        x1 = check_inputs("x1", x1, dtype=self.dtype).detach()
        symmetric = x2 is None
        if symmetric:
            x2 = x1
        else:
            x2 = check_inputs("x2", x2, dtype=self.dtype).detach()
            if x2.shape[1] != x1.shape[1]:
                raise ValueError(
                    f"x1 and x2 must have the same number of features (dim 1), got "
                    f"{x1.shape[1]} and {x2.shape[1]}"
                )
            x2 = x2.to(x1.device)
        n1, n2 = x1.shape[0], x2.shape[0]
        q1, *diag = self._diag_recursion(x1)
        q2 = q1 if symmetric else self._diag_recursion(x2)[0]
        self._check_finite(*diag, *q1, *q2)
        # per-layer row/column factors, computed once in O(N): avoids sqrt/division per entry
        f1 = [self._row_factors(q) for q in q1]
        f2 = f1 if symmetric else [self._row_factors(q) for q in q2]

        nngp = torch.empty(n1, n2, dtype=self.dtype, device=x1.device)
        ntk = torch.empty_like(nngp) if want_ntk else None
        outs = (nngp, ntk) if want_ntk else (nngp,)

        def run(r0: int, r1: int) -> None:
            c0 = r0 if symmetric else 0  # symmetric: upper triangle only, then mirrored
            rows = slice(r0, r1)
            res = self._block(x1[rows], x2[c0:], f1, f2, rows, slice(c0, n2), want_ntk)
            self._check_finite(*res)
            for out, val, exact in zip(outs, res, diag, strict=False):
                out[rows, c0:] = val
                if symmetric:
                    # the diagonal from the O(N) recursion at cos = 1 exactly: arccos near 1
                    # would lose half the digits, and the matmul's rounding varies with blocks
                    out[rows, rows].diagonal().copy_(exact[rows])
                    out[r1:, rows] = out[rows, r1:].T
                    sq = out[rows, rows]
                    sq.copy_(torch.triu(sq) + torch.triu(sq, 1).T)

        blocks = self._blocks(n1, n2, symmetric, x1.device)
        if x1.device.type != "cpu":
            for r0, r1 in blocks:
                run(r0, r1)
            return nngp, ntk
        # On CPU, threads take whole blocks (they write disjoint parts of the outputs) and
        # each runs its torch ops on one thread: far fewer synchronizations than splitting
        # every small op across cores, which is slow when the cores are busy.
        threads = torch.get_num_threads()

        def run_single_threaded(block: tuple[int, int]) -> None:
            torch.set_num_threads(1)  # per worker thread with OpenMP; restored below anyway
            run(*block)

        try:
            with ThreadPoolExecutor(max_workers=min(threads, len(blocks))) as pool:
                list(pool.map(run_single_threaded, blocks))
        finally:
            torch.set_num_threads(threads)
        return nngp, ntk

    def _blocks(self, n1: int, n2: int, symmetric: bool, device: torch.device) -> list:
        """Row ranges [(r0, r1), ...] of at most `block_size` rows or ~`budget` entries each.

        The budget keeps a block's temporaries in cache (32K entries = 256 KB in float64);
        quadrature temporaries are deg^2 times larger than the block (1M nodes = 8 MB).
        """
        quadrature = self._kind == "quadrature"
        if quadrature:
            budget = max(1, QUADRATURE_NODES // self.quadrature_degree**2)
        else:
            budget = 1 << 15 if device.type == "cpu" else 1 << 24
        blocks, r0 = [], 0
        while r0 < n1:
            cols = n2 - r0 if symmetric else n2
            rows = self.block_size or max(1 if quadrature else 4, budget // max(cols, 1))
            blocks.append((r0, min(r0 + rows, n1)))
            r0 = blocks[-1][1]
        return blocks

    def _row_factors(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Per-point factors of the closed forms, from the variances q, shape (N,) each."""
        kind = self._kind
        if kind == "relu":
            root = q.sqrt()
            inv = torch.where(q > 0, 1 / root, torch.zeros_like(q))  # zero norm: cos = 0
            return root, inv
        if kind == "erf":
            return torch.rsqrt(1 + 2 * q), q
        if kind in ("gelu", "identity"):
            return q, q + 1
        root = q.sqrt()
        return root, torch.where(q > 0, 1 / root, torch.zeros_like(q))

    def _block(
        self,
        xa: Tensor,
        xb: Tensor,
        f1: list[tuple[Tensor, Tensor]],
        f2: list[tuple[Tensor, Tensor]],
        rows: slice,
        cols: slice,
        want_ntk: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """Run all layers on one (B, M) block of the Gram matrix."""
        d = xa.shape[1]
        k = (xa @ xb.T).div_(d)  # (B, M) input kernel
        sigma = self._affine(k.clone()) if self.parametrization == "sp" else self._affine(k)
        theta = None
        if want_ntk:
            theta = torch.zeros_like(sigma)
            theta = self._ntk_step(theta, sigma, k, d)
        del k
        for layer in range(self.depth):
            a1, b1 = (f[rows] for f in f1[layer])
            a2, b2 = (f[cols] for f in f2[layer])
            k, kdot = self._act_block(sigma, a1, b1, a2, b2, want_ntk)  # k may alias sigma
            if want_ntk:
                theta.mul_(kdot)
            del kdot
            if self.parametrization == "sp" and want_ntk:
                sigma = self._affine(k.clone())
                theta = self._ntk_step(theta, sigma, k, self.width)
            else:
                sigma = self._affine(k)
                if want_ntk:
                    theta = self._ntk_step(theta, sigma, None, 0)
        return sigma, theta

    def _act_block(
        self, s: Tensor, a1: Tensor, b1: Tensor, a2: Tensor, b2: Tensor, want_kdot: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Activation kernel K and derivative kernel Kdot of a (B, M) block of Sigma.

        (a, b) are the row/column factors from `_row_factors`. May overwrite `s`.
        """
        kind = self._kind
        if kind == "relu":
            # a = sqrt(q), b = 1/sqrt(q) (0 for q = 0)
            sin, u = snapped_sin_and_supplement((s * b1[:, None]).mul_(b2))  # u = pi - theta
            k = sin.mul_(a1[:, None] * (1 / _TWO_PI)).mul_(a2)
            kdot = u.mul_(1 / _TWO_PI)  # (pi - theta) / (2 pi)
            # K = sqrt(q1 q2) sin / (2 pi) + Kdot * Sigma
            return k.addcmul_(kdot, s), kdot
        if kind == "erf":
            # a = 1/sqrt(1 + 2 q), b = q
            kdot = None
            if want_kdot:
                # (1 + 2 q1)(1 + 2 q2) - 4 s^2 = 1 + 2 (q1 + q2) + 4 (q1 q2 - s^2): the last term
                # is >= 0 (Cauchy-Schwarz; clamped against round-off), so there is no
                # cancellation and no 1/sqrt(0) at identical points when q >> 1
                kdot = torch.addcmul(b1[:, None] * b2, s, s, value=-1.0).clamp_(min=0.0)
                kdot.mul_(4.0).add_(b1[:, None] + b2, alpha=2.0).add_(1.0)
                kdot.rsqrt_().mul_(4 / math.pi)
            u = (s * (2 * a1)[:, None]).mul_(a2).clamp_(-1.0, 1.0)
            return u.asin_().mul_(2 / math.pi), kdot
        if kind == "gelu":
            # a = q, b = q + 1
            return _gelu(s, a1[:, None] * a2, b1[:, None] * b2, b1[:, None] + a2, want_kdot)
        if kind == "identity":
            return s, torch.ones_like(s) if want_kdot else None
        return quadrature_block(
            self.activation, self.quadrature_degree, s, a1, b1, a2, b2, want_kdot
        )


def _gelu(
    s: Tensor, prod: Tensor, prod1: Tensor, lin: Tensor, want_kdot: bool
) -> tuple[Tensor, Tensor | None]:
    """GELU kernels (Tsuchida et al. 2020, arXiv:2002.08517; as neural-tangents' stax.Gelu).

    With s = Sigma_12, prod = Sigma_11 Sigma_22, prod1 = (1 + Sigma_11)(1 + Sigma_22),
    lin = prod1 - prod = 1 + Sigma_11 + Sigma_22 and
    delta^2 = prod1 - s^2 = lin + (prod - s^2) >= lin >= 1:
        K    = s / 4 + [s atan(s / delta) + (s^2 + prod delta^2) / (prod1 delta)] / (2 pi)
        Kdot = 1 / 4 + atan(s / delta) / (2 pi)
               + s / (2 pi delta) (1 / delta^2 + (1 + lin) / prod1)
    delta^2 and (1 - prod) / prod1 + 1 = (1 + lin) / prod1 are formed from lin, not as
    differences of O(Sigma^2) terms, which would cancel to 0 (then NaN) once Sigma >~ 1e8
    (e.g. weight_std = 1000 at depth 3); prod - s^2 >= 0 (Cauchy-Schwarz) is clamped at 0.
    """
    delta2 = torch.addcmul(prod, s, s, value=-1.0).clamp_(min=0.0).add_(lin)
    delta = delta2.sqrt()
    angle = torch.atan2(s, delta)
    k = torch.addcmul(s * s, prod, delta2).div_(prod1 * delta).addcmul_(s, angle)
    k.mul_(1 / _TWO_PI).add_(s, alpha=0.25)
    kdot = None
    if want_kdot:
        kdot = (lin + 1).div_(prod1).add_(delta2.reciprocal())
        kdot.mul_(s).div_(delta).mul_(1 / _TWO_PI).add_(angle, alpha=1 / _TWO_PI).add_(0.25)
    return k, kdot
