"""Every activation we have, on position-position covariances, equals neural-tangents'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntk.activations import ACTIVATIONS
from ntk.kernels import stax as S
from tests.kernels.stax._helpers import assert_matches_nt, needs_nt

X = np.random.default_rng(1).standard_normal((3, 2, 5))
Y = np.random.default_rng(2).standard_normal((2, 2, 5))


def conv_net(activation) -> S.Layer:
    act = S.Activation(activation, quadrature_degree=20)
    return S.serial(
        S.Conv(3, 3, weight_std=1.5, bias_std=0.2),
        act,
        S.Conv(3, 2),
        act,
        S.GlobalAvgPool(),
        S.Dense(1),
    )


@needs_nt
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_matches_neural_tangents(activation):
    assert_matches_nt(conv_net(activation), X, Y)


def test_a_torch_callable_is_the_named_quadrature():
    x = torch.as_tensor(X)
    a, b = conv_net(torch.tanh).kernels(x), conv_net("tanh").kernels(x)
    torch.testing.assert_close(a.nngp, b.nngp, rtol=0, atol=0)
    torch.testing.assert_close(a.ntk, b.ntk, rtol=0, atol=0)


def test_bad_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be a callable or one of"):
        S.Activation("swish")
    with pytest.raises(ValueError, match="quadrature_degree must be <= 500"):
        S.Activation("tanh", quadrature_degree=10_000)
