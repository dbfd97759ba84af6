"""The same description in neural-tangents' stax (the reference), for tests and benchmarks.

`to_neural_tangents(layer, input_shape, parametrization)` returns neural-tangents'
(init_fn, apply_fn, kernel_fn) of the network that `layer` describes; `to_nhwc` moves our
channels-first inputs to its channels-last layout. Needs neural-tangents (JAX); the import
is quiet (`ntk.reference`). User-defined activation callables (torch functions) have no JAX
counterpart and are refused.
"""

from __future__ import annotations

import numpy as np

from ntk.kernels.stax.attention import GlobalSelfAttention
from ntk.kernels.stax.base import Layer
from ntk.kernels.stax.combinators import FanInSum, FanOut, Identity, Parallel, Serial
from ntk.kernels.stax.elementwise import Activation
from ntk.kernels.stax.linear import AvgPool, Conv, Dense, Flatten, GlobalAvgPool, LayerNorm
from ntk.reference import load_neural_tangents
from ntk.registry import select

# our names -> neural-tangents' ("sp" is its "standard")
NT_PARAMETRIZATION = {p: "standard" if p == "sp" else p for p in select("ntk", "sp")}


def to_nhwc(x) -> np.ndarray | None:
    """(N, C, *spatial) -> (N, *spatial, C), as numpy float64 (None passes through)."""
    if x is None:
        return None
    x = np.asarray(x, dtype=np.float64)
    return np.moveaxis(x, 1, -1) if x.ndim > 2 else x


def _activation(layer: Activation, stax):
    import jax
    import jax.numpy as jnp

    closed = {"relu": stax.Relu, "erf": stax.Erf, "gelu": stax.Gelu, "identity": stax.Identity}
    if layer.kind:
        return closed[layer.kind]()
    fns = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}
    if not isinstance(layer.activation, str) or layer.activation not in fns:
        raise ValueError(
            f"activation {layer.name!r} has no JAX counterpart for neural-tangents; use a "
            f"named one: {sorted(closed) + sorted(fns)}"
        )
    return stax.ElementwiseNumerical(fns[layer.activation], layer.degree)


def _convert(layer: Layer, shape, p: str, stax):
    """(neural-tangents layer, output shape) of one of our layers at per-example `shape`."""
    if isinstance(layer, Serial):
        out = []
        for sub in layer.layers:
            nt_layer, shape = _convert(sub, shape, p, stax)
            out.append(nt_layer)
        return stax.serial(*out), shape
    if isinstance(layer, Parallel):
        pairs = [_convert(sub, s, p, stax) for sub, s in zip(layer.layers, shape, strict=True)]
        return stax.parallel(*[a for a, _ in pairs]), [s for _, s in pairs]
    _, out_shape = layer.build(shape, p)  # shape checks and the output shape
    if isinstance(layer, FanOut):
        return stax.FanOut(layer.n), out_shape
    if isinstance(layer, FanInSum):
        return stax.FanInSum(), out_shape
    if isinstance(layer, Identity):
        return stax.Identity(), out_shape
    if isinstance(layer, Activation):
        return _activation(layer, stax), out_shape
    if isinstance(layer, Conv):
        window, strides, _, _ = layer._geometry(shape)
        return stax.Conv(
            layer.width,
            window,
            strides,
            layer.padding,
            layer.weight_std,
            layer.bias_std,
            parameterization=NT_PARAMETRIZATION[p],
        ), out_shape
    if isinstance(layer, Dense):
        return stax.Dense(
            layer.width, layer.weight_std, layer.bias_std, parameterization=NT_PARAMETRIZATION[p]
        ), out_shape
    if isinstance(layer, AvgPool):
        window, strides, _, _ = layer._geometry(shape)
        return stax.AvgPool(window, strides, layer.padding), out_shape
    if isinstance(layer, GlobalAvgPool):
        return stax.GlobalAvgPool(), out_shape
    if isinstance(layer, Flatten):
        return stax.Flatten(), out_shape
    if isinstance(layer, GlobalSelfAttention):
        return stax.GlobalSelfAttention(
            layer.width,
            layer.key_dim,
            layer.value_dim,
            layer.n_heads,
            linear_scaling=True,
            W_key_std=layer.qk_std,
            W_value_std=layer.ov_std,
            b_std=layer.bias_std,
            attention_mechanism=layer.attention.upper(),
        ), out_shape
    if isinstance(layer, LayerNorm):
        return stax.LayerNorm(axis=-1, eps=layer.eps), out_shape
    raise ValueError(f"{layer!r} has no neural-tangents counterpart here")


def to_neural_tangents(layer: Layer, input_shape, parametrization: str = "ntk"):
    """neural-tangents' (init_fn, apply_fn, kernel_fn) for the network `layer` describes."""
    nt = load_neural_tangents()
    return _convert(layer, tuple(input_shape), parametrization, nt.stax)[0]
