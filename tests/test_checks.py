"""The shared argument checks name the argument and the expected form."""

import math

import numpy as np
import pytest
import torch

from ntk._checks import (
    as_tensor,
    check_bool,
    check_choice,
    check_choices,
    check_float_dtype,
    check_fraction,
    check_inputs,
    check_nonnegative,
    check_numbers,
    check_parametrization,
    check_positive,
    check_positive_int,
)
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


def test_the_shared_checks_name_the_argument():
    assert check_bool("flag", True) is True
    with pytest.raises(TypeError, match="flag must be a bool"):
        check_bool("flag", 1)
    assert check_positive("lr", 2) == 2.0
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="lr must be a finite number > 0"):
            check_positive("lr", bad)
    with pytest.raises(TypeError, match="lr must be a real number"):
        check_positive("lr", "0.1")
    assert check_fraction("decay", 0.0, allow_zero=True) == 0.0
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        check_fraction("test_fraction", 0.0)
    assert check_numbers("a", [0, 0.5], 2, "one per layer") == [0.0, 0.5]
    with pytest.raises(ValueError, match=r"a\[1\] must be a finite number"):
        check_numbers("a", [0, float("nan")], 2, "one per layer")
    with pytest.raises(ValueError, match=r"a must have one per layer \(3\)"):
        check_numbers("a", [0, 1], 3, "one per layer")
    assert check_choices("roles", ("x", "y"), ("x", "y")) == ["x", "y"]
    with pytest.raises(TypeError, match="not the string"):
        check_choices("roles", "xy", ("x", "y"))
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        check_float_dtype("dtype", torch.int64)
    with pytest.raises(TypeError, match="y must be a tensor or array"):
        as_tensor("y", object())


def test_standard_is_read_as_sp_and_nothing_else_is_renamed():
    assert check_parametrization("p", "standard", ("sp", "ntk")) == "sp"
    assert check_parametrization("p", "ntk", ("sp", "ntk")) == "ntk"
    with pytest.raises(ValueError, match="p must be one of"):
        check_parametrization("p", "mup", ("sp", "ntk"))
