"""The shared argument checks name the argument and the expected form."""

import math

import numpy as np
import pytest
import torch

from ntk._checks import check_choice, check_inputs, check_nonnegative, check_positive_int
from ntk.activations import ACTIVATIONS, get_activation


def test_check_inputs_converts_and_validates():
    x = check_inputs("x", np.ones((3, 2)))
    assert x.shape == (3, 2) and torch.is_floating_point(x)
    with pytest.raises(ValueError, match="x1 is an empty batch"):
        check_inputs("x1", torch.zeros(0, 4))
    with pytest.raises(ValueError, match="x2 contains NaN"):
        check_inputs("x2", torch.tensor([[1.0, math.nan]]))
    with pytest.raises(ValueError, match="x must have 2 dimensions"):
        check_inputs("x", torch.zeros(4))
    with pytest.raises(ValueError, match="5 features"):
        check_inputs("x", torch.zeros(2, 4), features=5)
    with pytest.raises(TypeError, match="x must be a tensor"):
        check_inputs("x", object())


def test_scalar_checks():
    assert check_nonnegative("weight_std", 0) == 0.0
    with pytest.raises(ValueError, match="weight_std must be a finite number >= 0"):
        check_nonnegative("weight_std", -1.0)
    with pytest.raises(ValueError, match="bias_std"):
        check_nonnegative("bias_std", float("nan"))
    with pytest.raises(TypeError, match="width must be an int"):
        check_positive_int("width", 2.0)
    with pytest.raises(ValueError, match="depth must be >= 0"):
        check_positive_int("depth", -1, minimum=0)
    with pytest.raises(ValueError, match="parametrization must be one of"):
        check_choice("parametrization", "mup?", ("standard", "ntk"))


def test_activations_resolve():
    x = torch.linspace(-2, 2, 5)
    assert torch.equal(get_activation("relu")(x), torch.relu(x))
    assert get_activation(torch.sin) is torch.sin
    assert set(ACTIVATIONS) >= {"relu", "erf", "tanh"}
    with pytest.raises(ValueError, match="activation must be a callable or one of"):
        get_activation("swishy")
