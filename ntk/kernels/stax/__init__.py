"""A layer algebra where one description gives both the finite network and its kernels.

Layers (`Dense`, `Conv`, `AvgPool`, `GlobalAvgPool`, `Flatten`, `LayerNorm`, activations,
`Identity`, `GlobalSelfAttention`) compose with `serial`, `parallel`, `FanOut`, `FanInSum`,
like neural-tangents' stax (Novak et al. 2020, arXiv:1912.02803), in PyTorch:

    >>> net = serial(Conv(64, 3), Relu(), Conv(64, 3), Relu(), GlobalAvgPool(), Dense(1))
    >>> model = net.module((1, 8, 8), parametrization="ntk")   # a finite nn.Module
    >>> k = net.kernels(x1, x2)                                  # infinite-width NNGP, NTK

The kernels are float64 Gram matrices computed in tiles with bounded memory
(`ntk.kernels.stax.network`). `MaxPool` is a finite layer whose kernel is refused by name.
"""

from ntk.kernels.stax.attention import GlobalSelfAttention
from ntk.kernels.stax.base import Layer
from ntk.kernels.stax.combinators import FanInSum, FanOut, Identity, parallel, serial
from ntk.kernels.stax.elementwise import Activation, Erf, Gelu, Relu, Sigmoid, Tanh
from ntk.kernels.stax.linear import (
    AvgPool,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    LayerNorm,
    MaxPool,
)

__all__ = [
    "Activation",
    "AvgPool",
    "Conv",
    "Dense",
    "Erf",
    "FanInSum",
    "FanOut",
    "Flatten",
    "Gelu",
    "GlobalAvgPool",
    "GlobalSelfAttention",
    "Identity",
    "Layer",
    "LayerNorm",
    "MaxPool",
    "Relu",
    "Sigmoid",
    "Tanh",
    "parallel",
    "serial",
]
