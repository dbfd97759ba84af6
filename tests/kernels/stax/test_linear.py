"""Dense, Conv, pools, Flatten, LayerNorm: kernels equal neural-tangents'; shapes and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntk.kernels import stax as S
from tests.kernels.stax._helpers import assert_matches_nt, needs_nt

rng = np.random.default_rng(0)
X2D = rng.standard_normal((3, 2, 6, 5))
Y2D = rng.standard_normal((2, 2, 6, 5))
X1D = rng.standard_normal((3, 3, 7))
Y1D = rng.standard_normal((4, 3, 7))


def _head(pool):
    return (pool, S.Dense(2, 0.9, 0.1))


LAYERS = {
    "dense_flat": (S.serial(S.Dense(5, 1.3, 0.2), S.Relu(), S.Dense(1, 0.8, None)), "flat"),
    "dense_per_position": (
        S.serial(S.Dense(4, 1.2, 0.3), S.Erf(), *_head(S.GlobalAvgPool())),
        "2d",
    ),
    "conv_same": (
        S.serial(S.Conv(4, 3, weight_std=1.4, bias_std=0.2), S.Relu(), *_head(S.GlobalAvgPool())),
        "2d",
    ),
    "conv_valid_strided": (
        S.serial(S.Conv(4, (3, 2), strides=(2, 1), padding="VALID"), S.Relu(), *_head(S.Flatten())),
        "2d",
    ),
    "conv_same_strided": (
        S.serial(S.Conv(4, 3, strides=2), S.Gelu(), *_head(S.GlobalAvgPool())),
        "2d",
    ),
    "conv_1d": (
        S.serial(S.Conv(4, 3, strides=2, bias_std=None), S.Relu(), *_head(S.Flatten())),
        "1d",
    ),
    "avgpool_valid": (
        S.serial(S.Conv(4, 2), S.AvgPool(2), S.Relu(), *_head(S.GlobalAvgPool())),
        "2d",
    ),
    "avgpool_same_stride1": (
        S.serial(
            S.Conv(4, 2), S.Relu(), S.AvgPool(3, strides=1, padding="SAME"), *_head(S.Flatten())
        ),
        "2d",
    ),
    "avgpool_1d": (
        S.serial(S.Conv(4, 3), S.Erf(), S.AvgPool(2, padding="SAME"), *_head(S.Flatten())),
        "1d",
    ),
    "global_avg_pool_1d": (S.serial(S.Conv(4, 3), S.Relu(), *_head(S.GlobalAvgPool())), "1d"),
    "flatten_raw_input": (S.serial(S.Flatten(), S.Dense(3), S.Relu(), S.Dense(1)), "2d"),
    "layernorm_flat": (S.serial(S.Dense(4, 1.0, 0.5), S.LayerNorm(), S.Relu(), S.Dense(1)), "flat"),
    "layernorm_spatial": (
        S.serial(
            S.Conv(4, 3, bias_std=0.3), S.LayerNorm(eps=1e-6), S.Relu(), *_head(S.GlobalAvgPool())
        ),
        "2d",
    ),
}
INPUTS = {
    "flat": (X2D.reshape(3, -1)[:, :7], Y2D.reshape(2, -1)[:, :7]),
    "2d": (X2D, Y2D),
    "1d": (X1D, Y1D),
}


# "sp" differs from "ntk" only in the weight layers' NTK (fan-ins, which Flatten and strides
# change): tested where those are; the random compositions mix both parametrizations
SP = ["dense_flat", "conv_valid_strided", "conv_1d", "flatten_raw_input", "layernorm_spatial"]
CASES = [(name, "ntk") for name in sorted(LAYERS)] + [(name, "sp") for name in SP]


@needs_nt
@pytest.mark.parametrize(("name", "parametrization"), CASES)
def test_each_layer_matches_neural_tangents(name, parametrization):
    net, kind = LAYERS[name]
    x1, x2 = INPUTS[kind]
    assert_matches_nt(net, x1, x2, parametrization)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_symmetric_call_equals_the_general_one(name):
    # K(X) computes the upper tiles and mirrors them; K(X, X') runs every tile
    net, kind = LAYERS[name]
    x = torch.as_tensor(np.concatenate(INPUTS[kind]))
    sym, full = net.kernels(x, block_size=2), net.kernels(x, x.clone(), block_size=3)
    for a, b in zip(sym, full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(a, a.T, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_finite_module_runs_at_the_kernels_shapes(name):
    net, kind = LAYERS[name]
    x1, _ = INPUTS[kind]
    for p in ("ntk", "sp"):
        out = net.module(x1.shape[1:], p)(torch.as_tensor(x1, dtype=torch.float32))
        assert out.shape[0] == len(x1) and torch.isfinite(out).all()


def test_same_padding_follows_xla():
    # 6 -> ceil(6 / 4) = 2 outputs; a window of 3 needs (2 - 1) 4 + 3 - 6 = 1 pad: low 0, high 1
    conv = S.Conv(2, 3, strides=4)
    assert conv._geometry((1, 6, 6))[2:] == ((2, 2), [(0, 1), (0, 1)])
    net = S.serial(conv, S.Flatten())
    k = net.kernels(torch.ones(1, 1, 6, 6)).nngp
    # all-ones input, weight_std 1: per dim, output 0 sees rows 0-2 (3 of 3 taps inside) and
    # output 1 rows 4-6 (row 6 is padding: 2 of 3); Flatten averages the two diagonal entries
    expected = ((1 + 2 / 3) / 2) ** 2
    assert k.item() == pytest.approx(expected, rel=1e-12)


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="width"):
        S.Dense(0)
    with pytest.raises(ValueError, match="Conv width"):
        S.Conv(-3)
    with pytest.raises(ValueError, match="padding"):
        S.Conv(3, padding="FULL")
    with pytest.raises(ValueError, match="window 5 does not fit spatial dim 0 of size 4"):
        S.serial(S.Conv(3, 5, padding="VALID")).kernels(torch.randn(2, 1, 4, 4))
    with pytest.raises(ValueError, match="one entry per spatial dim"):
        S.serial(S.Conv(3, (3, 3))).kernels(torch.randn(2, 1, 8))
    with pytest.raises(ValueError, match="GlobalAvgPool needs inputs with spatial dims"):
        S.serial(S.Dense(3), S.GlobalAvgPool()).module((5,))
    with pytest.raises(ValueError, match=r"input_shape\[0\] \(channels\) must be >= 1"):
        S.serial(S.Dense(3)).module((0, 4, 4))
    with pytest.raises(ValueError, match=r"input_shape\[0\] \(channels\) must be >= 1"):
        S.serial(S.Dense(3)).kernels(torch.randn(2, 0, 4))
    with pytest.raises(TypeError, match="dtype must be torch.float64"):
        S.serial(S.Dense(1)).kernels(torch.randn(2, 3), dtype=torch.float32)
    with pytest.raises(ValueError, match="parametrization"):
        S.serial(S.Dense(1)).kernels(torch.randn(2, 3), parametrization="mup")


def test_maxpool_is_a_finite_layer_whose_kernel_is_refused_by_name():
    net = S.serial(S.Conv(4, 3), S.Relu(), S.MaxPool(2), S.Flatten(), S.Dense(1))
    assert net.module((1, 6, 6))(torch.randn(2, 1, 6, 6)).shape == (2, 1)
    with pytest.raises(NotImplementedError, match="MaxPool has no closed-form.*Use AvgPool"):
        net.kernels(torch.randn(2, 1, 6, 6))


def test_layernorm_and_nonlinearities_need_gaussian_inputs():
    with pytest.raises(ValueError, match="LayerNorm needs zero-mean Gaussian inputs"):
        S.serial(S.Dense(3), S.Relu(), S.LayerNorm(), S.Dense(1)).kernels(torch.randn(2, 3))
    with pytest.raises(ValueError, match="'relu' needs zero-mean Gaussian"):
        S.serial(S.Relu(), S.Dense(1)).kernels(torch.randn(2, 3))
    with pytest.raises(ValueError, match="directly after Flatten"):
        S.serial(S.Conv(2), S.Flatten(), S.Relu(), S.Dense(1)).kernels(torch.randn(2, 1, 3, 3))
