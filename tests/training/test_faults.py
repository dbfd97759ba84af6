"""The training loop under faults: divergence stops with the step number; bad learning-rate
schedules and complex data are refused naming the argument."""

import math

import pytest
import torch

from ntk.models import WideMLP
from ntk.training import TrainingDivergedError, train


@pytest.fixture
def problem():
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    return WideMLP(3, 32, depth=2), x, torch.sin(x[:, :1])


def test_divergence_stops_with_the_step(problem):
    model, x, y = problem
    with pytest.raises(TrainingDivergedError) as err:
        train(model, x, y, steps=50, lr=1e6, optimizer="sgd")
    assert 1 <= err.value.step < 50 and not math.isfinite(err.value.loss)
    assert f"step {err.value.step}" in str(err.value)


@pytest.mark.parametrize("factor", [-1.0, math.nan, math.inf, "fast", None, 1j])
def test_bad_learning_rate_factors_are_named_with_their_step(problem, factor):
    model, x, y = problem
    schedule = lambda step: 1.0 if step < 3 else factor  # noqa: E731
    with pytest.raises(ValueError, match=r"lr_schedule\(3\) must be a finite number >= 0"):
        train(model, x, y, steps=10, lr_schedule=schedule)


def test_a_zero_factor_is_a_pause(problem):
    model, x, y = problem
    before = [p.detach().clone() for p in model.parameters()]
    train(model, x, y, steps=3, lr_schedule=lambda step: 0.0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("which", ["x_train", "y_train"])
def test_complex_data_is_refused(problem, which):
    model, x, y = problem
    args = {"x_train": x, "y_train": y}
    args[which] = torch.complex(args[which], args[which])
    with pytest.raises(TypeError, match=f"{which} must (be|hold) real"):
        train(model, args["x_train"], args["y_train"], steps=1)
