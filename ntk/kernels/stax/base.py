"""The layer interface and the kernel state that flows through a composition of layers.

A `Layer` is one description with two readings (neural-tangents' stax property, Novak et al.
2020, arXiv:1912.02803): `build` gives the finite `nn.Module` at a per-example input shape, and
`kernel` maps the infinite-width kernels of its input to those of its output.

The kernel of inputs with spatial dims (1-D sequences or 2-D images, channels first as in
PyTorch) is the full position-position covariance, as in neural-tangents: for one pair of
examples, Sigma(x1, x2) has shape (H, H', W, W') (pairs of axes interleaved), since average
pooling and attention mix positions (Novak et al. 2019, arXiv:1810.05148, sec. 3; Arora et al.
2019, arXiv:1904.11955, sec. 4). A `State` holds such a tensor for a batch of pairs: leading
dims (B, M) for a block of a Gram matrix, or (N,) for each example with itself (the "self" pass,
which gives the variances that the nonlinearities and layer norm need, and the diagonals).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

Shape = tuple[int, ...]  # per-example shape: (d,), (C, L) or (C, H, W)

_tags = itertools.count()


def new_tag() -> int:
    """An id for one occurrence of a weight layer (its output is independent of other tags')."""
    return next(_tags)


@dataclass(frozen=True)
class State:
    """Infinite-width kernels of one representation, for a batch of example pairs.

    nngp, ntk: shape (*batch, n_1, n_1, ..., n_S, n_S) with S spatial dims; ntk None means 0
    (no parameters below). `channels` is the finite network's channel count at this point
    (the "sp" NTK multiplies by fan-ins). `gaussian` says the representation is a zero-mean
    Gaussian process (it is right after Dense/Conv, or pooling/normalizing such an output);
    `tag` names the weight layer it last passed through (two branches with different tags
    and zero mean are independent, which a residual sum needs).
    """

    nngp: Tensor
    ntk: Tensor | None
    spatial: Shape
    channels: int
    gaussian: bool
    tag: object
    batch_ndim: int
    averaged: bool = False  # after Flatten: a mean over features of unequal variances

    def with_(self, **changes) -> State:
        return replace(self, **changes)

    def spatial_axes(self, i: int) -> tuple[int, int]:
        """The two axes (position in x1, position in x2) of spatial dim i."""
        a = self.batch_ndim + 2 * i
        return a, a + 1


def require_gaussian(layer: str, state: State) -> None:
    """The Gaussian expectations of a nonlinearity or layer norm need Gaussian inputs."""
    if state.averaged:
        raise ValueError(
            f"{layer} directly after Flatten: the kernel after Flatten is a mean over features "
            "of different variances, exact only for a following Dense; put a Dense between"
        )
    if not state.gaussian:
        raise ValueError(
            f"{layer} needs zero-mean Gaussian inputs (the pre-activations right after a "
            "Dense or Conv, possibly pooled or normalized), but its input is the raw input or "
            "a nonlinearity's output, whose kernel does not determine the expectation; put a "
            f"Dense or Conv before {layer}"
        )


class VarianceTape:
    """The per-position variances Sigma(x, x)(p, p) that nonlinearities and layer norm need
    (and any other per-example quantity, such as attention weights: `per_example`).

    The self pass (each example with itself) records them, in the order the layers are run;
    a pair pass over a block of rows and columns replays them (sliced to the block), so the
    Gram blocks never recompute the examples' own kernels. They broadcast against a State's
    tensors: rows as (B, 1, n1, 1, n2, 1, ...), columns as (1, M, 1, n1, 1, n2, ...).
    """

    def __init__(self) -> None:
        self.records: list[Tensor] = []
        self.replay: tuple[list[Tensor], list[Tensor], slice, slice] | None = None
        self.position = 0

    def pair(self, rows: list[Tensor], cols: list[Tensor], r: slice, c: slice) -> VarianceTape:
        tape = VarianceTape()
        tape.replay = (rows, cols, r, c)
        return tape

    def per_example(self, state: State, fn) -> tuple[Tensor, Tensor]:
        """(rows, columns) of a per-example quantity fn(Sigma(x, x)) of shape (N, ...), e.g.
        attention weights: computed on the self pass, sliced to the block on a pair pass."""
        if self.replay is None:
            self.records.append(fn(state.nngp))
            return self.records[-1], self.records[-1]
        rows, cols, r, c = self.replay
        out = rows[self.position][r], cols[self.position][c]
        self.position += 1
        return out

    def variances(self, state: State) -> tuple[Tensor, Tensor]:
        """(row variances, column variances), broadcastable against state.nngp."""
        s = len(state.spatial)
        if self.replay is None:  # self pass: the spatial diagonal of each example's kernel
            v = state.nngp
            for _ in range(s):
                v = v.diagonal(dim1=1, dim2=2)  # moves the diagonal axis last
            self.records.append(v.contiguous())  # (N, n_1, ..., n_S)
            v = self.records[-1]
            rows = v.reshape(v.shape[0], *[m for n in v.shape[1:] for m in (n, 1)])
            cols = v.reshape(v.shape[0], *[m for n in v.shape[1:] for m in (1, n)])
            return rows, cols
        rows, cols, r, c = self.replay
        v1, v2 = rows[self.position][r], cols[self.position][c]
        self.position += 1
        r_shape = (v1.shape[0], 1, *[m for n in v1.shape[1:] for m in (n, 1)])
        c_shape = (1, v2.shape[0], *[m for n in v2.shape[1:] for m in (1, n)])
        return v1.reshape(r_shape), v2.reshape(c_shape)


class Layer:
    """One description, two readings: a finite nn.Module and its infinite-width kernels.

    Subclasses implement `build(shape, parametrization) -> (module, out_shape)` and
    `kernel(state, tape, parametrization) -> state`. Compose them with `serial`/`parallel`;
    every composition is a Layer, with `module`, `kernels`, `nngp`, `ntk` (see
    `ntk.kernels.stax.network`).
    """

    name = "layer"

    def build(self, shape, parametrization: str) -> tuple[nn.Module, object]:
        raise NotImplementedError

    def kernel(self, state, tape: VarianceTape, parametrization: str):
        raise NotImplementedError

    # the two readings of the description (implemented in network.py)
    def module(self, input_shape: Shape, parametrization: str = "ntk") -> nn.Module:
        """The finite network for per-example inputs of `input_shape` ((d,), (C, L), (C, H, W))."""
        from ntk.kernels.stax.network import build_module

        return build_module(self, input_shape, parametrization)

    def kernels(
        self,
        x1: Tensor,
        x2: Tensor | None = None,
        parametrization: str = "ntk",
        block_size: int | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        """Infinite-width (NNGP, NTK) Gram matrices of x1 (and x2), in tiles; `dtype` must be
        float64 (inputs of any float dtype are cast up)."""
        from ntk.kernels.stax.network import kernels

        return kernels(self, x1, x2, parametrization, block_size, dtype)

    def nngp(self, x1: Tensor, x2: Tensor | None = None, parametrization: str = "ntk") -> Tensor:
        return self.kernels(x1, x2, parametrization).nngp

    def ntk(self, x1: Tensor, x2: Tensor | None = None, parametrization: str = "ntk") -> Tensor:
        return self.kernels(x1, x2, parametrization).ntk

    def diag(self, x: Tensor, parametrization: str = "ntk"):
        """(NNGP, NTK) of each example with itself, shape (N, ...), without the Gram matrix."""
        from ntk.kernels.stax.network import diag

        return diag(self, x, parametrization)

    def __repr__(self) -> str:
        return self.name
