"""The two readings of a layer description: the finite module and the blocked Gram matrices.

Memory. A Gram matrix of inputs with P positions (P = H W for images) holds, per example
pair and per layer, a P x P position covariance: neural-tangents' `kernel_fn` materializes
(N1, N2, P, P) for every intermediate layer at once (hundreds of GB for CIFAR-sized inputs,
its issues #18, #89, #146). Here the pairs are processed in tiles of at most `budget`
position-pair entries (default 2^18 = 2 MB per float64 tensor); a tile runs through every
layer before the next starts, so the memory is the outputs, the O(N P) per-example
variances of the self pass, and O(threads x budget x live tensors) for the tiles, whatever N
is. For a symmetric K(X) only the tiles on and above the diagonal are computed and mirrored.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn

from ntk._checks import check_batch, check_float64, check_parametrization, check_positive_int
from ntk.kernels.analytic import Kernels
from ntk.kernels.stax.base import Layer, State, VarianceTape
from ntk.registry import select

PARAMETRIZATIONS = select("ntk", "sp")  # the finite networks built here
TILE_ENTRIES = 1 << 18


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if not 1 <= len(shape) <= 3:
        raise ValueError(f"input_shape must be per example (d,), (C, L) or (C, H, W), got {shape}")
    for i, n in enumerate(shape):
        what = "channels" if i == 0 else f"spatial dim {i - 1}"
        check_positive_int(f"input_shape[{i}] ({what})", n)
    return shape


def build_module(layer: Layer, input_shape, parametrization: str = "ntk") -> nn.Module:
    """The finite network of `layer` for inputs (N, *input_shape), parameters freshly drawn."""
    p = check_parametrization("parametrization", parametrization, PARAMETRIZATIONS)
    module, out = layer.build(_check_shape(input_shape), p)
    if isinstance(out, list):
        raise ValueError("the network ends in several branches: close them with FanInSum()")
    return module


def _inputs(name: str, x) -> Tensor:
    x = check_batch(name, x, dtype=torch.float64).detach()
    if not 2 <= x.ndim <= 4:
        raise ValueError(
            f"{name} must be (N, d), (N, C, L) or (N, C, H, W) (channels first), got shape "
            f"{tuple(x.shape)}"
        )
    _check_shape(tuple(x.shape[1:]))
    return x


def _input_kernel(x1: Tensor, x2: Tensor | None) -> Tensor:
    """<x1(p), x2(p')> / C over channels, axes (batch..., n1, n1', n2, n2')."""
    c = x1.shape[1]
    letters = "hwv"[: x1.ndim - 2]
    primed = "ijk"[: x1.ndim - 2]
    pairs = "".join(a + b for a, b in zip(letters, primed, strict=True))
    if x2 is None:  # each example with itself
        return torch.einsum(f"nc{letters},nc{primed}->n{pairs}", x1, x1).div_(c)
    return torch.einsum(f"bc{letters},mc{primed}->bm{pairs}", x1, x2).div_(c)


def _state(x: Tensor, nngp: Tensor, batch_ndim: int) -> State:
    return State(
        nngp=nngp,
        ntk=None,
        spatial=tuple(x.shape[2:]),
        channels=x.shape[1],
        gaussian=False,
        tag=frozenset(),
        batch_ndim=batch_ndim,
    )


def _final(state, what: str) -> State:
    if isinstance(state, list):
        raise ValueError(
            f"the network ends in several branches ({what}): close them with FanInSum()"
        )
    return state


def _self_pass(layer: Layer, x: Tensor, p: str) -> tuple[list[Tensor], Tensor, Tensor]:
    """Variances recorded at every nonlinearity, and the diagonal kernels, in chunks of rows."""
    per = max(1, math.prod(x.shape[2:]) ** 2)
    chunk = max(1, TILE_ENTRIES // per)
    records, nngps, ntks = [], [], []
    for r0 in range(0, x.shape[0], chunk):
        xs = x[r0 : r0 + chunk]
        tape = VarianceTape()
        out = _final(layer.kernel(_state(xs, _input_kernel(xs, None), 1), tape, p), "x")
        records.append(tape.records)
        nngps.append(out.nngp)
        ntks.append(torch.zeros_like(out.nngp) if out.ntk is None else out.ntk)
    merged = [torch.cat(r) for r in zip(*records, strict=True)]
    return merged, torch.cat(nngps), torch.cat(ntks)


def diag(layer: Layer, x, parametrization: str = "ntk") -> Kernels:
    """Each example's (NNGP, NTK) with itself, shape (N, ...), in O(N) memory."""
    p = check_parametrization("parametrization", parametrization, PARAMETRIZATIONS)
    _, nngp, ntk = _self_pass(layer, _inputs("x", x), p)
    return Kernels(nngp, ntk)


def kernels(
    layer: Layer,
    x1,
    x2=None,
    parametrization: str = "ntk",
    block_size: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> Kernels:
    """NNGP and NTK Gram matrices (N1, N2[, n1, n1', n2, n2' if the output is spatial])."""
    check_float64("dtype", dtype, "the analytic conv kernels")
    p = check_parametrization("parametrization", parametrization, PARAMETRIZATIONS)
    x1 = _inputs("x1", x1)
    symmetric = x2 is None
    x2 = x1 if symmetric else _inputs("x2", x2)
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"x1 and x2 must have the same per-example shape, got {tuple(x1.shape[1:])} and "
            f"{tuple(x2.shape[1:])}"
        )
    if block_size is not None:
        check_positive_int("block_size", block_size)
    rec1, d1, t1 = _self_pass(layer, x1, p)
    rec2 = rec1 if symmetric else _self_pass(layer, x2, p)[0]
    n1, n2 = x1.shape[0], x2.shape[0]
    pairs = tuple(d1.shape[1:])
    nngp = torch.empty(n1, n2, *pairs, dtype=torch.float64)
    ntk = torch.empty_like(nngp)

    per = max(1, math.prod(x1.shape[2:]) ** 2)
    side = block_size or max(1, math.isqrt(max(1, TILE_ENTRIES // per)))
    tiles = [
        (r0, c0) for r0 in range(0, n1, side) for c0 in range(r0 if symmetric else 0, n2, side)
    ]
    # the mirror of a tile: batch axes swapped, and the two positions of each spatial dim
    perm = [1, 0, *[a for i in range(len(pairs) // 2) for a in (3 + 2 * i, 2 + 2 * i)]]

    def run(tile: tuple[int, int]) -> None:
        r, c = slice(tile[0], tile[0] + side), slice(tile[1], tile[1] + side)
        tape = VarianceTape().pair(rec1, rec2, r, c)
        state = _state(x1, _input_kernel(x1[r], x2[c]), 2)
        out = _final(layer.kernel(state, tape, p), "x1, x2")
        theta = torch.zeros_like(out.nngp) if out.ntk is None else out.ntk
        if symmetric and tile[0] == tile[1]:  # exactly symmetric: the upper half mirrored
            upper = torch.ones(theta.shape[:2], dtype=torch.bool).triu()
            upper = upper.reshape(*upper.shape, *[1] * len(pairs))
            nngp[r, c] = torch.where(upper, out.nngp, out.nngp.permute(perm))
            ntk[r, c] = torch.where(upper, theta, theta.permute(perm))
            return
        nngp[r, c] = out.nngp
        ntk[r, c] = theta
        if symmetric:  # K(x2, x1)(p', p) = K(x1, x2)(p, p')
            nngp[c, r] = nngp[r, c].permute(perm)
            ntk[c, r] = ntk[r, c].permute(perm)

    _run_tiles(run, tiles)
    if symmetric and not pairs:  # the exact diagonal from the self pass, as MLPKernel
        nngp.diagonal().copy_(d1)
        ntk.diagonal().copy_(t1)
    for name, k in (("NNGP", nngp), ("NTK", ntk)):
        if not torch.isfinite(k).all():
            raise FloatingPointError(
                f"the {name} overflowed float64 (Inf or NaN): the kernels grow geometrically "
                "with depth in weight_std^2 (and with |x|^2); scale down weight_std or the inputs"
            )
    return Kernels(nngp, ntk)


def _run_tiles(run, tiles: list) -> None:
    """Whole tiles per thread, each single-threaded (as MLPKernel: few synchronizations)."""
    threads = torch.get_num_threads()
    if threads == 1 or len(tiles) == 1:
        for t in tiles:
            run(t)
        return

    def single(tile) -> None:
        torch.set_num_threads(1)
        run(tile)

    try:
        with ThreadPoolExecutor(max_workers=min(threads, len(tiles))) as pool:
            list(pool.map(single, tiles))
    finally:
        torch.set_num_threads(threads)
