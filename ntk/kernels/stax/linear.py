"""Linear layers (Dense, Conv) and the parameter-free spatial layers, finite and infinite.

With sigma_w = `weight_std`, sigma_b = `bias_std`, fan-in n (channels, times the filter size
for a convolution), the "ntk" parametrization is z = sigma_w W x / sqrt(n) + sigma_b b with
W, b ~ N(0, 1), and "sp" is z = W x + b with W ~ N(0, sigma_w^2 / n), b ~ N(0, sigma_b^2)
(Sohl-Dickstein et al. 2020, arXiv:2001.07301). Their infinite-width kernels, with A the
filter-tap average of `ntk.kernels.stax.spatial` (the identity for Dense):

    NNGP:        Sigma' = sigma_w^2 A(Sigma) + sigma_b^2
    NTK, "ntk":  Theta' = Sigma' + sigma_w^2 A(Theta)
    NTK, "sp":   Theta' = n A(Sigma) + sigma_w^2 A(Theta) + [1 if the layer has a bias]

(Jacot et al. 2018; Novak et al. 2019, arXiv:1810.05148 for the CNN-GP; Arora et al. 2019,
arXiv:1904.11955 for the CNTK; Garriga-Alonso et al. 2019, arXiv:1808.05587). Pooling,
flattening and layer norm have no parameters: they map Sigma and Theta alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntk._checks import check_choice, check_int_list, check_positive_int, check_std
from ntk.kernels.stax.base import Layer, State, VarianceTape, new_tag, require_gaussian
from ntk.kernels.stax.spatial import (
    PADDINGS,
    conv_pair,
    out_size_and_pads,
    pool_pair,
    spatial_mean,
    spatial_trace,
)

# ------------------------------------------------------------------ shapes


def _spatial_plan(name, shape, window, strides, padding) -> tuple[tuple, list[tuple[int, int]]]:
    """Output spatial shape and per-dim (low, high) pads of a windowed layer on `shape`."""
    spatial = tuple(shape[1:])
    if len(spatial) != len(window):
        raise ValueError(
            f"{name}: a {len(window)}-D window needs inputs (C, {', '.join('n' * len(window))})"
            f" per example, got per-example shape {tuple(shape)}"
        )
    outs, pads = [], []
    for i, (n, f, s) in enumerate(zip(spatial, window, strides, strict=True)):
        out, lo, hi = out_size_and_pads(n, f, s, padding, name, i)
        outs.append(out)
        pads.append((lo, hi))
    return tuple(outs), pads


def _torch_pads(pads: list[tuple[int, int]]) -> list[int]:
    """F.pad's order: last dim first."""
    return [p for lo_hi in reversed(pads) for p in lo_hi]


def _ints(name: str, value, nd: int) -> tuple[int, ...]:
    """An int (the same in every spatial dim) or one int per spatial dim, each >= 1."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * nd
    out = tuple(check_int_list(name, value, 1))
    if len(out) != nd:
        raise ValueError(f"{name} must have one entry per spatial dim ({nd}), got {list(out)}")
    return out


class _Windowed:
    """Window, strides and padding of Conv and the pools, resolved against the input shape."""

    name = "windowed"

    def _set_window(self, window, strides, padding: str) -> None:
        for arg, v in (("window", window), ("strides", strides)):
            if v is not None and not isinstance(v, int):
                check_int_list(f"{self.name} {arg}", v, 1)  # type and range now, length later
            elif isinstance(v, int):
                check_positive_int(f"{self.name} {arg}", v)
        self._window, self._strides = window, strides
        self.padding = check_choice(f"{self.name} padding", str(padding).upper(), PADDINGS)

    def _geometry(self, shape) -> tuple[tuple, tuple, tuple, list]:
        """(window, strides, output spatial shape, per-dim pads) for per-example `shape`."""
        _needs_spatial(self.name, shape)
        nd = len(shape) - 1
        window = _ints(f"{self.name} window", self._window, nd)
        default = window if self.name in ("AvgPool", "MaxPool") else 1
        strides = _ints(
            f"{self.name} strides", default if self._strides is None else self._strides, nd
        )
        spatial, pads = _spatial_plan(self.name, shape, window, strides, self.padding)
        return window, strides, spatial, pads


# ------------------------------------------------------------------ Dense and Conv


class _Affine(nn.Module):
    """Dense (per position, on dim 1) or Conv with the two parametrizations' multipliers."""

    def __init__(self, c_in, c_out, window, strides, pads, w_std, b_std, parametrization):
        super().__init__()
        fan_in = c_in * math.prod(window)
        sp = parametrization == "sp"
        self.weight = nn.Parameter(
            torch.randn(c_out, c_in, *window) * (w_std / fan_in**0.5 if sp else 1.0)
        )
        self.bias = (
            None if b_std is None else nn.Parameter(torch.randn(c_out) * (b_std if sp else 1.0))
        )
        self.w_mult = 1.0 if sp else w_std / fan_in**0.5
        self.b_mult = 1.0 if sp else (b_std or 0.0)
        self.strides, self.pads = strides, _torch_pads(pads)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.w_mult
        b = None if self.bias is None else self.bias * self.b_mult
        if w.ndim == 2:  # Dense: on dim 1 of (N, C) or (N, C, *spatial)
            y = torch.einsum("nc...,oc->no...", x, w)
            return y if b is None else y + b.reshape(-1, *[1] * (x.ndim - 2))
        conv = F.conv1d if w.ndim == 3 else F.conv2d
        return conv(F.pad(x, self.pads), w, b, stride=self.strides)


class _WeightLayer(Layer):
    def __init__(self, width: int, weight_std: float, bias_std: float | None) -> None:
        self.width = check_positive_int(f"{self.name} width (output channels)", width)
        self.weight_std = check_std("weight_std", weight_std)
        self.bias_std = None if bias_std is None else check_std("bias_std", bias_std)

    def _geometry(self, shape):
        """Dense: no window (a 1 x 1 convolution); Conv overrides it via _Windowed."""
        return (), (), tuple(shape[1:]), []

    def build(self, shape, parametrization):
        window, strides, spatial, pads = self._geometry(shape)
        module = _Affine(
            shape[0],
            self.width,
            window,
            strides,
            pads,
            self.weight_std,
            self.bias_std,
            parametrization,
        )
        return module, (self.width, *spatial)

    def kernel(self, state: State, tape: VarianceTape, parametrization: str) -> State:
        shape = (state.channels, *state.spatial)
        window, strides, spatial, pads = self._geometry(shape)

        def taps(t: Tensor | None) -> Tensor | None:
            for i, (f, s, (lo, hi)) in enumerate(zip(window, strides, pads, strict=True)):
                if t is not None:
                    t = conv_pair(t, state.spatial_axes(i)[0], f, s, spatial[i], lo, hi)
            return t

        # taps() returns sums over the F = prod(window) taps: A(.) = taps(.) / F, and 1 / F is
        # folded into the multipliers below (one pass fewer over the largest tensors)
        w2 = self.weight_std**2 / math.prod(window)
        owned = bool(window)  # taps made new tensors: in-place is safe (no aliasing)
        nngp, ntk = taps(state.nngp), taps(state.ntk)  # F A(Sigma), F A(Theta)
        theta = None
        if parametrization == "sp":  # fan_in A(Sigma) = C F taps(Sigma) / F = C taps(Sigma)
            theta = nngp * state.channels
            if ntk is not None:
                theta.add_(ntk, alpha=w2)
            if self.bias_std is not None:
                theta.add_(1.0)
        sigma = nngp.mul_(w2) if owned else nngp * w2
        if self.bias_std:
            sigma.add_(self.bias_std**2)
        if parametrization == "ntk":
            if ntk is None:
                theta = sigma.clone()
            else:
                theta = (ntk.mul_(w2) if owned else ntk * w2).add_(sigma)
        return state.with_(
            nngp=sigma,
            ntk=theta,
            spatial=spatial,
            channels=self.width,
            gaussian=True,
            tag=frozenset({new_tag()}),
            averaged=False,
        )


class Dense(_WeightLayer):
    """Fully connected on the channel dim (dim 1), at every position of a spatial input."""

    name = "Dense"

    def __init__(self, width: int, weight_std: float = 1.0, bias_std: float | None = 0.0):
        super().__init__(width, weight_std, bias_std)


class Conv(_Windowed, _WeightLayer):
    """1-D or 2-D convolution, channels first, weights shared across positions.

    `window` an int (the same in every spatial dim) or one int per spatial dim; `strides`
    likewise (default 1); padding "SAME" or
    "VALID" (XLA's convention: SAME pads low = total // 2, high = the rest).
    """

    name = "Conv"

    def __init__(
        self,
        width: int,
        window: int | tuple[int, ...] = 3,
        strides: int | tuple[int, ...] | None = None,
        padding: str = "SAME",
        weight_std: float = 1.0,
        bias_std: float | None = 0.0,
    ) -> None:
        super().__init__(width, weight_std, bias_std)
        self._set_window(window, strides, padding)


# ------------------------------------------------------------------ parameter-free layers


class _Lambda(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def _needs_spatial(name: str, shape) -> None:
    if len(shape) < 2:
        raise ValueError(
            f"{name} needs inputs with spatial dims (C, L) or (C, H, W) per example, got "
            f"per-example shape {tuple(shape)}"
        )


class AvgPool(_Windowed, Layer):
    """Average pooling over windows (zero padding counted in the average, like
    neural-tangents' `AvgPool(normalize_edges=False)` and torch's count_include_pad).
    `strides` defaults to the window, as in torch (neural-tangents' default is 1)."""

    name = "AvgPool"

    def __init__(self, window=(2, 2), strides=None, padding: str = "VALID") -> None:
        self._set_window(window, strides, padding)

    def build(self, shape, parametrization):
        w, s, spatial, pads = self._geometry(shape)
        pool = F.avg_pool1d if len(w) == 1 else F.avg_pool2d
        p = _torch_pads(pads)
        return _Lambda(lambda x: pool(F.pad(x, p), w, s)), (shape[0], *spatial)

    def kernel(self, state, tape, parametrization):
        window, strides, spatial, pads = self._geometry((state.channels, *state.spatial))

        def pool(t):
            for i, (f, s, (lo, hi)) in enumerate(zip(window, strides, pads, strict=True)):
                if t is not None:
                    t = pool_pair(t, state.spatial_axes(i)[0], f, s, spatial[i], lo, hi)
            return t

        return state.with_(nngp=pool(state.nngp), ntk=pool(state.ntk), spatial=spatial)


class GlobalAvgPool(Layer):
    """Mean over all positions: (N, C, *spatial) -> (N, C); the kernel is the mean over all
    position pairs (Novak et al. 2019, sec. 3.2; Arora et al. 2019, CNTK-GAP)."""

    name = "GlobalAvgPool"

    def build(self, shape, parametrization):
        _needs_spatial(self.name, shape)
        return _Lambda(lambda x: x.mean(tuple(range(2, x.ndim)))), (shape[0],)

    def kernel(self, state, tape, parametrization):
        b = state.batch_ndim
        ntk = None if state.ntk is None else spatial_mean(state.ntk, b)
        return state.with_(nngp=spatial_mean(state.nngp, b), ntk=ntk, spatial=())


class Flatten(Layer):
    """(N, C, *spatial) -> (N, C * prod(spatial)). The kernel is the mean over positions of
    Sigma(p, p) (the vectorized CNN-GP of Novak et al. 2019): an average over features with
    different variances, exact for a following Dense, which is why a nonlinearity or layer
    norm directly after Flatten is refused."""

    name = "Flatten"

    def build(self, shape, parametrization):
        return _Lambda(lambda x: x.flatten(1)), (math.prod(shape),)

    def kernel(self, state, tape, parametrization):
        b, s = state.batch_ndim, len(state.spatial)
        ntk = None if state.ntk is None else spatial_trace(state.ntk, b, s)
        return state.with_(
            nngp=spatial_trace(state.nngp, b, s),
            ntk=ntk,
            spatial=(),
            channels=state.channels * math.prod(state.spatial),
            averaged=s > 0,
        )


class LayerNorm(Layer):
    """Normalization over channels at each position, no affine parameters:
    (x - mean_c x) / sqrt(var_c x + eps). At infinite width the channel mean of a zero-mean
    Gaussian vanishes and its variance is Sigma(x, x)(p, p), so
    Sigma'(x1 p, x2 p') = Sigma / sqrt((eps + q1)(eps + q2)), Theta likewise (neural-tangents'
    `LayerNorm(axis=channels)`); it needs Gaussian inputs (right after Dense/Conv)."""

    name = "LayerNorm"

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = check_std("eps", eps)

    def build(self, shape, parametrization):
        eps = self.eps

        def norm(x: Tensor) -> Tensor:
            mean = x.mean(1, keepdim=True)
            var = x.var(1, keepdim=True, unbiased=False)
            return (x - mean) / torch.sqrt(var + eps)

        return _Lambda(norm), shape

    def kernel(self, state, tape, parametrization):
        require_gaussian("LayerNorm", state)
        q1, q2 = tape.variances(state)
        scale = torch.rsqrt((q1 + self.eps) * (q2 + self.eps))
        ntk = None if state.ntk is None else state.ntk * scale
        return state.with_(nngp=state.nngp * scale, ntk=ntk)


class MaxPool(_Windowed, Layer):
    """Max pooling: a finite layer only. Its infinite-width kernel has no closed form (the
    covariance of maxima of correlated Gaussians), so `kernel` refuses it by name."""

    name = "MaxPool"

    def __init__(self, window=(2, 2), strides=None, padding: str = "VALID") -> None:
        self._set_window(window, strides, padding)

    def build(self, shape, parametrization):
        w, s, spatial, pads = self._geometry(shape)
        pool = F.max_pool1d if len(w) == 1 else F.max_pool2d
        p = _torch_pads(pads)
        return _Lambda(lambda x: pool(F.pad(x, p, value=-math.inf), w, s)), (shape[0], *spatial)

    def kernel(self, state, tape, parametrization):
        raise NotImplementedError(
            "MaxPool has no closed-form infinite-width kernel: the covariance of the maxima of "
            "correlated Gaussians over a window has none (neural-tangents has none either). "
            "Use AvgPool (or GlobalAvgPool) for an analytic kernel, or the empirical NTK of "
            "the finite network (ntk.kernels.empirical_ntk on .module(...)) for MaxPool."
        )
