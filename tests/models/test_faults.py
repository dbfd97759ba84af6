"""Models under faults: ensembles stop at the diverging step, huge scales and silent
coercions are refused naming the argument."""

import math

import pytest
import torch

from ntk.models import MLPEnsemble, WideMLP, WideMLP_MuP
from ntk.training import TrainingDivergedError

F64 = torch.float64


@pytest.fixture
def data():
    x = torch.randn(10, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    return x, torch.sin(x[:, 0])


def test_readout_training_stops_at_the_diverging_step_and_keeps_the_readout(data):
    x, y = data
    ens = MLPEnsemble(4, 3, 16, dtype=F64)
    readout = ens.weights[-1].detach().clone()
    with pytest.raises(TrainingDivergedError) as err:
        ens.train_readout(x, y, learning_rate=1e6, steps=100)
    assert 0 < err.value.step < 100 and not math.isfinite(err.value.loss)
    assert torch.equal(ens.weights[-1], readout)  # no NaN readout written
    # the same call at a stable rate converges and writes it
    losses = ens.train_readout(x, y, learning_rate=1.0, steps=100)
    assert losses[-1] < losses[0] and not torch.equal(ens.weights[-1], readout)


def test_full_training_stops_at_the_diverging_step_naming_members(data):
    x, y = data
    ens = MLPEnsemble(3, 3, 16, depth=2, dtype=F64)
    with pytest.raises(TrainingDivergedError) as err:
        ens.train_gd(x, y, learning_rate=1e5, steps=50)
    assert 0 < err.value.step < 50
    assert any("members that diverged" in note for note in err.value.__notes__)


@pytest.mark.parametrize("where", ["y_train", "x_train", "x_members"])
def test_nan_data_is_refused(data, where):
    x, y = data
    ens = MLPEnsemble(2, 3, 8, dtype=F64)
    if where == "x_members":
        with pytest.raises(ValueError, match="x contains NaN"):
            ens(torch.full((2, 4, 3), math.nan, dtype=F64))
        return
    bad = {"x_train": (x * math.nan, y), "y_train": (x, y * math.nan)}[where]
    for call in (ens.train_readout, ens.sample_readout_posterior, ens.train_gd):
        with pytest.raises(ValueError, match=f"{where} contains NaN"):
            call(*bad)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(weight_std=1e200), "weight_std"),
        (dict(weight_std=1e40), "weight_std"),
        (dict(bias_std=1e39), "bias_std"),
    ],
)
def test_weights_that_overflow_are_refused(kwargs, name):
    for cls in (WideMLP, WideMLP_MuP):
        with pytest.raises(ValueError, match=name):
            cls(3, 16, **kwargs)
    with pytest.raises(ValueError, match=name):
        MLPEnsemble(2, 3, 16, **kwargs)
    # float64 holds what float32 cannot
    assert torch.isfinite(MLPEnsemble(2, 3, 16, weight_std=1e40, dtype=F64)(torch.ones(1, 3))).all()


def test_silent_coercions_are_refused():
    with pytest.raises(TypeError, match="seed must be an int"):
        MLPEnsemble(2, 3, 8, seed=1.7)
    with pytest.raises(TypeError, match=r"dtype must be a floating torch.dtype .*torch.float32"):
        MLPEnsemble(2, 3, 8, dtype="float32")
    with pytest.raises(TypeError, match="index must be an int"):
        MLPEnsemble(2, 3, 8).member(1.0)


# ---- the library edges of issue 24 ---------------------------------------------------------------
def test_a_forward_pass_that_would_overflow_is_refused_and_the_largest_accepted_one_is_finite():
    with pytest.raises(ValueError, match=r"weight_std=1e\+20 .* 10\^60, beyond the largest"):
        WideMLP(3, 16, weight_std=1e20)
    torch.manual_seed(0)
    out = WideMLP(3, 16, weight_std=1e12)(torch.randn(64, 3))  # ~1e36: fits in float32
    assert torch.isfinite(out).all() and out.abs().max() > 1e30


def test_setup_mup_scaling_refuses_a_factory_that_ignores_the_width():
    from torch import nn

    from ntk.models.mup_shapes import setup_mup_scaling

    with pytest.raises(
        ValueError, match=r"model_fn ignores its width: model_fn\(8\) and model_fn\(16\)"
    ):
        setup_mup_scaling(lambda width: nn.Linear(4, 4), 64, 8)
    model = setup_mup_scaling(lambda width: nn.Sequential(nn.Linear(4, width), nn.ReLU()), 64, 8)
    assert model[0].weight.infshape.width_mult() == 8.0  # the width dimension found
