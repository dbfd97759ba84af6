"""GlobalSelfAttention (Hron et al. 2020, linear scaling, tied keys and queries): its kernels
equal neural-tangents' within 1e-6, its finite module matches the formula, bad input is
refused by name. (The empirical-NTK convergence test is in test_network.py, the random
compositions with attention in test_combinators.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntk.kernels import stax as S
from ntk.kernels.stax.attention import MECHANISMS
from tests.kernels.stax._helpers import assert_matches_nt, needs_nt


@needs_nt
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_attention_matches_neural_tangents(mechanism):
    """1-D inputs for every mechanism, 2-D for softmax (one jit compile per network)."""
    rng = np.random.default_rng(0)
    shape = (2, 3, 4) if mechanism == "softmax" else (3, 5)
    alone = S.GlobalSelfAttention(4, attention=mechanism, qk_std=1.3, ov_std=0.8, bias_std=0.2)
    inside = S.serial(
        S.Conv(3, 2, bias_std=0.1),
        S.Relu(),
        S.GlobalSelfAttention(4, 3, 5, 2, qk_std=0.7, attention=mechanism),
        S.Erf(),
        S.GlobalAvgPool(),
        S.Dense(1),
    )
    x1, x2 = rng.standard_normal((3, *shape)), rng.standard_normal((2, *shape))
    for net in (alone, inside):
        assert_matches_nt(net, x1, x2)
        assert_matches_nt(net, x1)


def test_finite_module_is_the_formula():
    """One head, the module's own weights: softmax((x W)(x W)^T qk / (C d_k)) x V O ov /
    sqrt(C d_v H) + b bias_std, per example, positions as rows."""
    torch.manual_seed(0)
    layer = S.GlobalSelfAttention(5, 4, 3, 1, qk_std=1.5, ov_std=0.7, bias_std=0.3)
    module = layer.module((2, 6))
    x = torch.randn(3, 2, 6)
    out = module(x)
    assert out.shape == (3, 5, 6)
    k, v = module.key[0], module.value[0]
    for i in range(3):
        seq = x[i].T  # (P, C)
        g = torch.softmax((seq @ k) @ (seq @ k).T * 1.5 / (2 * 4), dim=-1)
        ref = g @ seq @ v @ module.out * 0.7 / (2 * 3 * 1) ** 0.5 + module.bias * 0.3
        torch.testing.assert_close(out[i], ref.T)


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="n_heads"):
        S.GlobalSelfAttention(4, n_heads=0)
    with pytest.raises(ValueError, match="attention"):
        S.GlobalSelfAttention(4, attention="sigmoid")
    with pytest.raises(ValueError, match="positions"):
        S.GlobalSelfAttention(4).kernels(torch.randn(2, 3))
    with pytest.raises(ValueError, match="NTK parametrization"):
        S.GlobalSelfAttention(4).kernels(torch.randn(2, 3, 4), parametrization="sp")
    with pytest.raises(ValueError, match="NTK parametrization"):
        S.GlobalSelfAttention(4).module((3, 4), parametrization="sp")
