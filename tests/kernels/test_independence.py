"""The examples-are-independent check: f on a batch equals f on each row alone."""

import pytest
import torch
from torch import nn

from ntk.kernels.empirical import empirical_ntk
from ntk.kernels.independence import check_module_types, check_rows_independent


class Center(nn.Module):
    """Subtracts the batch mean of its hidden features: f(X)_n depends on every row."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.inp(x)
        return self.out(h - h.mean(0))


class BatchSoftmax(nn.Module):
    """Normalizes over the batch dimension (a bug a mis-set dim= causes)."""

    def forward(self, x):
        return x.softmax(0)


class Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x + 0.1 * torch.randn_like(x))


def test_mixing_in_a_forward_is_refused_naming_the_model():
    with pytest.raises(ValueError, match=r"depends on the other examples.*model \(Center\), in"):
        empirical_ntk(Center(), torch.randn(5, 3))


def test_mixing_in_a_submodule_is_blamed_on_the_innermost_module():
    model = nn.Sequential(
        nn.Linear(3, 4), nn.Sequential(nn.Tanh(), BatchSoftmax()), nn.Linear(4, 1)
    )
    with pytest.raises(ValueError, match=r"mixing starts in model\.1\.1 \(BatchSoftmax\)\. The"):
        check_rows_independent(model, torch.randn(4, 3))


def test_random_models_are_refused():
    with pytest.raises(ValueError, match="different outputs on two calls"):
        empirical_ntk(Noisy(), torch.randn(5, 3))


def test_independent_models_pass_in_both_dtypes():
    for dtype in (torch.float32, torch.float64):
        model = nn.Sequential(nn.Linear(3, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 2))
        check_rows_independent(model.to(dtype), torch.randn(6, 3, dtype=dtype))
        check_rows_independent(model, torch.randn(1, 3, dtype=dtype))  # one row: nothing to do


def test_batchnorm_and_dropout_by_type():
    with pytest.raises(ValueError, match=r"model\.1 \(BatchNorm1d\) normalizes"):
        check_module_types(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    with pytest.raises(ValueError, match="dropout in training mode"):
        check_module_types(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1)))
    check_module_types(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.1)).eval())
