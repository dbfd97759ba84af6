"""The residual MLP: its formula, its init, and its parametrizations by name."""

import math

import pytest
import torch
import torch.nn.functional as F

from ntk.models.residual import PARAMETRIZATIONS, ResidualMLP, parametrize_residual


def test_forward_is_the_pre_norm_residual_formula():
    model = ResidualMLP(5, 16, 3, depth=3, activation="tanh")
    x = torch.randn(4, 5)
    h = model.embed(x)
    for block in model.blocks:
        h = h + block.branch.fc(torch.tanh(F.layer_norm(h, (16,))))
    torch.testing.assert_close(model(x), model.readout(h))
    assert model(x).shape == (4, 3)


def test_init_is_he_in_the_branches_and_the_stream_grows_like_sqrt_depth():
    torch.manual_seed(0)
    model = ResidualMLP(8, 1024, 1, depth=16)
    std = torch.stack([b.branch.fc.weight.std() for b in model.blocks])
    torch.testing.assert_close(std, torch.full_like(std, math.sqrt(2 / 1024)), rtol=0.02, atol=0)
    x = torch.randn(256, 8)
    h = model.embed(x)
    var0 = h.var()
    for block in model.blocks:
        h = block(h)
    # each branch adds variance E[relu(z)^2] * 2 = 1 to the stream (He init, unit-norm input)
    assert float((h.var() - var0).detach()) == pytest.approx(16.0, rel=0.1)


@pytest.mark.parametrize("name", PARAMETRIZATIONS)
def test_every_parametrization_is_the_same_model_at_the_base_shape(name):
    x = torch.randn(6, 8)
    outs = []
    for p in ("sp", name):
        torch.manual_seed(0)
        model = ResidualMLP(8, 16, 1, depth=2)
        parametrize_residual(model, p, lr=0.01, base_width=16, base_depth=2)
        outs.append(model(x))
    torch.testing.assert_close(outs[0], outs[1])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="depth"):
        ResidualMLP(8, 16, 1, depth=0)
    model = ResidualMLP(8, 16, 1, depth=2)
    with pytest.raises(ValueError, match="parametrization must be one of"):
        parametrize_residual(model, "depthmup", lr=0.01, base_width=16, base_depth=2)
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.randn(3, 7))
    with pytest.raises(TypeError, match="ResidualMLP"):
        parametrize_residual(torch.nn.Linear(2, 2), "mup", lr=0.01, base_width=2, base_depth=1)
