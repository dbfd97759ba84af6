"""Residual sums and random compositions of every layer equal neural-tangents' kernel_fn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntk.kernels import stax as S
from ntk.kernels.stax.attention import MECHANISMS
from tests.kernels.stax._helpers import assert_matches_nt, needs_nt

ACTIVATIONS = ["relu", "erf", "gelu", "identity", "tanh"]
N_RANDOM = 32


def _activation(rng) -> S.Activation:
    name = ACTIVATIONS[rng.integers(len(ACTIVATIONS))]
    return S.Activation(name, quadrature_degree=8)  # deg 8: same rule as nt's, fast


def _weight(rng, spatial: bool) -> S.Layer:
    w, b = float(rng.uniform(0.5, 1.5)), [None, 0.0, float(rng.uniform(0.05, 0.5))][rng.integers(3)]
    if spatial and rng.random() < 0.75:
        window = int(rng.integers(1, 4))
        padding = "SAME" if rng.random() < 0.6 else "VALID"
        strides = int(rng.integers(1, 3)) if padding == "SAME" else 1
        return S.Conv(3, window, strides, padding, w, b)
    return S.Dense(3, w, b)


def random_network(seed: int, spatial: bool, attention: bool = False) -> S.Layer:
    """A valid random composition: (weight [LayerNorm] [AvgPool] [attention] [residual]
    activation)*, then GlobalAvgPool or Flatten, then a Dense readout. Every nonlinearity sees
    a Gaussian. Attention (NTK parametrization only) is drawn from its own stream, so the
    rest of each seed's network is what it was before attention existed."""
    rng = np.random.default_rng(seed)
    rng_att = np.random.default_rng(seed + 10_000)
    layers = []
    for _ in range(int(rng.integers(1, 4))):
        layers.append(_weight(rng, spatial))
        if rng.random() < 0.3:
            layers.append(S.LayerNorm())
        if spatial and rng.random() < 0.25:
            layers.append(S.AvgPool(2, strides=1, padding="SAME"))
        if spatial and attention and rng_att.random() < 0.5:
            mechanism = MECHANISMS[rng_att.integers(len(MECHANISMS))]
            qk, b = float(rng_att.uniform(0.3, 1.5)), [None, 0.2][rng_att.integers(2)]
            layers.append(S.GlobalSelfAttention(3, qk_std=qk, bias_std=b, attention=mechanism))
        if rng.random() < 0.35:  # residual block around (activation, weight layer)
            block = S.serial(_activation(rng), _weight(rng, spatial=False))
            layers += [S.FanOut(2), S.parallel(S.Identity(), block), S.FanInSum()]
        layers.append(_activation(rng))
    if spatial:
        layers.append(S.GlobalAvgPool() if rng.random() < 0.5 else S.Flatten())
    layers.append(S.Dense(2, float(rng.uniform(0.5, 1.5)), 0.1))
    return S.serial(*layers)


@needs_nt
@pytest.mark.parametrize("seed", range(N_RANDOM))
def test_random_compositions_match_neural_tangents(seed):
    rng = np.random.default_rng(1000 + seed)
    spatial = seed % 4 != 0  # a quarter fully connected, the rest 1-D or 2-D
    shape = [(4,), (2, 5), (2, 4, 3)][0 if not spatial else 1 + seed % 2]
    parametrization = "sp" if seed % 3 == 0 else "ntk"
    net = random_network(seed, len(shape) > 1, attention=parametrization == "ntk")
    x1, x2 = rng.standard_normal((2, *shape)), rng.standard_normal((3, *shape))
    assert_matches_nt(net, x1, x2, parametrization)


@needs_nt
def test_residual_network_matches_neural_tangents():
    block = S.serial(S.Relu(), S.Conv(4, 3), S.Relu(), S.Conv(4, 3))
    net = S.serial(
        S.Conv(4, 3),
        *[S.FanOut(2), S.parallel(S.Identity(), block), S.FanInSum()] * 2,
        S.Relu(),
        S.GlobalAvgPool(),
        S.Dense(1),
    )
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4))
    assert_matches_nt(net, x, None)


def test_correlated_sums_are_refused():
    x = torch.randn(2, 3)
    same = S.serial(S.Dense(3), S.FanOut(2), S.parallel(S.Identity(), S.Identity()), S.FanInSum())
    with pytest.raises(ValueError, match="share the weight layer"):
        same.kernels(x)
    relu = S.serial(
        S.Dense(3), S.FanOut(2), S.parallel(S.Relu(), S.serial(S.Relu(), S.Dense(3))), S.FanInSum()
    )
    with pytest.raises(ValueError, match="zero-mean Gaussian"):
        relu.kernels(x)


def test_sum_of_independent_branches_is_the_sum_of_kernels():
    # the rival (treating them as one) would give 4x, not 2x
    x = torch.randn(4, 3)
    one = S.serial(S.Dense(3, 1.3), S.Relu(), S.Dense(1, 0.7))
    two = S.serial(
        S.Dense(3, 1.3),
        S.Relu(),
        S.FanOut(2),
        S.parallel(S.Dense(1, 0.7), S.Dense(1, 0.7)),
        S.FanInSum(),
    )
    a, b = one.kernels(x), two.kernels(x)
    torch.testing.assert_close(b.nngp, 2 * a.nngp, rtol=1e-13, atol=0)
    torch.testing.assert_close(b.ntk, 2 * a.ntk, rtol=1e-13, atol=0)


def test_unclosed_branches_are_refused():
    with pytest.raises(ValueError, match="FanInSum"):
        S.serial(S.Dense(2), S.FanOut(2)).kernels(torch.randn(2, 3))
    with pytest.raises(ValueError, match="FanOut"):
        S.serial(S.Dense(2), S.parallel(S.Identity(), S.Identity())).kernels(torch.randn(2, 3))
