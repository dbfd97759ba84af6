"""Argument checks shared by the package: clear errors that name the argument.

Every module validates its arguments through these functions (and adds one here rather than
writing a local one), so that the same mistake gives the same kind of error everywhere:
TypeError for a value of the wrong type, ValueError for a value of the right type out of range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch.nn.parameter import UninitializedParameter

from ntk.registry import ALIASES as PARAMETRIZATION_ALIASES


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """Return `value` if it is one of `choices`, else raise ValueError naming `name`."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_choices(name: str, values: Sequence[str], choices: Iterable[str]) -> list[str]:
    """A non-empty sequence (not a string) whose entries are all in `choices`."""
    choices = tuple(choices)
    if isinstance(values, str):
        raise TypeError(
            f"{name} must be a sequence of names from {choices}, not the string {values!r}"
        )
    values = check_sequence(name, values, f"names from {choices}")
    for i, value in enumerate(values):
        check_choice(f"{name}[{i}]", value, choices)
    return values


def check_parametrization(name: str, value: str, choices: Iterable[str]) -> str:
    """A parametrization name from `choices`, with "standard" read as "sp"."""
    if isinstance(value, str):
        value = PARAMETRIZATION_ALIASES.get(value, value)
    return check_choice(name, value, choices)


def check_bool(name: str, value: object) -> bool:
    """A real bool (1, "yes" and None are refused: they hide mistakes)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_callable(name: str, value: object, what: str) -> object:
    """A callable; `what` describes its signature in the error (e.g. "step -> factor")."""
    if not callable(value):
        raise TypeError(f"{name} must be a callable {what}, got {value!r}")
    return value


def _check_real(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")


def check_nonnegative(name: str, value: float) -> float:
    """A finite float >= 0 (a std, a regularizer, a time)."""
    _check_real(name, value)
    if not (value >= 0) or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """A finite float > 0 (a learning rate, a multiplier, a prefactor)."""
    _check_real(name, value)
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_fraction(name: str, value: float, *, allow_zero: bool = False) -> float:
    """A number in (0, 1), or in [0, 1) with `allow_zero` (a test fraction, a decay)."""
    interval = "[0, 1)" if allow_zero else "(0, 1)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in {interval}, got {value!r}")
    if not (0.0 <= value < 1.0) or (value == 0.0 and not allow_zero):
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return float(value)


def is_finite_number(value: object) -> bool:
    """True for a finite real number (bools and strings are not numbers here)."""
    if isinstance(value, (bool, str)):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def check_numbers(name: str, values: Sequence[float], length: int, what: str) -> list[float]:
    """A sequence of `length` finite numbers; `what` says what the length counts."""
    if isinstance(values, str) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a list of numbers ({what}), got {type(values).__name__}")
    if len(values) != length:
        raise ValueError(f"{name} must have {what} ({length}), got {len(values)}")
    for i, v in enumerate(values):
        if not is_finite_number(v):
            raise ValueError(f"{name}[{i}] must be a finite number, got {v!r}")
    return [float(v) for v in values]


# Counts and seeds end up in torch (int64) and in float arithmetic: larger ints overflow there.
INT64_MAX = 2**63 - 1


def check_positive_int(name: str, value: int, minimum: int = 1, maximum: int = INT64_MAX) -> int:
    """An int in [`minimum`, `maximum`] (a width, a depth, a chunk size, a seed)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        shown = value if value.bit_length() <= 64 else f"an int of {len(str(value))} digits"
        raise ValueError(f"{name} must be <= {maximum}, got {shown}")
    return value


def check_std(name: str, value: float) -> float:
    """A finite std >= 0 whose square (the variance the kernels and inits use) is finite too."""
    value = check_nonnegative(name, value)
    if not math.isfinite(value * value):
        raise ValueError(
            f"{name} must be a std whose square fits in a float (<= ~1e154), got {value:g}"
        )
    return value


def check_sequence(name: str, values: object, what: str) -> list:
    """A non-empty list, tuple, range or array of `what` (a bare string or number is refused)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of {what}, got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must be a non-empty sequence of {what}")
    return values


def check_int_list(name: str, values: object, minimum: int) -> list[int]:
    """A non-empty sequence of ints >= `minimum` (numpy integers accepted, floats refused)."""
    out = []
    for i, v in enumerate(check_sequence(name, values, f"ints >= {minimum}")):
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise TypeError(f"{name}[{i}] must be an int, got {v!r}")
        out.append(check_positive_int(f"{name}[{i}]", int(v), minimum=minimum))
    return out


def check_number_list(name: str, values: object) -> list[float]:
    """A non-empty sequence of finite real numbers."""
    out = []
    for i, v in enumerate(check_sequence(name, values, "finite numbers")):
        if not is_finite_number(v):
            raise ValueError(f"{name}[{i}] must be a finite real number, got {v!r}")
        out.append(float(v))
    return out


def check_float_dtype(name: str, dtype: object) -> torch.dtype:
    """A real floating torch.dtype (an integer dtype would truncate inputs silently)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        hint = f" (torch.{dtype})" if isinstance(dtype, str) and hasattr(torch, dtype) else ""
        raise TypeError(
            f"{name} must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}{hint}"
        )
    return dtype


def check_scale_fits(name: str, value: float, scale: float, dtype: torch.dtype) -> None:
    """Raise if a weight scale derived from `name` (e.g. weight_std / sqrt(fan_in)) would
    overflow `dtype`: the parameters or the forward multipliers would be Inf."""
    if not scale <= torch.finfo(dtype).max:
        raise ValueError(
            f"{name}={value:g} gives weights of scale {scale:g}, beyond the largest {dtype} "
            f"({torch.finfo(dtype).max:g}); lower {name} or use a wider dtype"
        )


def check_real(name: str, x: torch.Tensor) -> torch.Tensor:
    """Refuse complex tensors: casting them to a real dtype would drop the imaginary part."""
    if x.is_complex():
        raise TypeError(
            f"{name} must be real, got a complex tensor ({x.dtype}); casting would silently "
            f"drop its imaginary part (pass {name}.real or {name}.abs() if that is what you mean)"
        )
    return x


def check_module(name: str, value: object) -> torch.nn.Module:
    """A torch.nn.Module."""
    if not isinstance(value, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def check_materialized(name: str, model: torch.nn.Module) -> torch.nn.Module:
    """A module whose parameters all have shapes (lazy modules must have run once)."""
    lazy = [k for k, p in model.named_parameters() if isinstance(p, UninitializedParameter)]
    if lazy:
        raise ValueError(
            f"{name} has uninitialized (lazy) parameters {lazy[:3]}: their shapes, hence "
            f"fan-ins and widths, are unknown until a forward pass; run {name}(x) once first"
        )
    return model


def check_factor(name: str, value: object) -> float:
    """A finite number >= 0 returned by a user callable (a learning-rate factor)."""
    if not is_finite_number(value) or isinstance(value, complex) or float(value) < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def as_tensor(name: str, x: object) -> torch.Tensor:
    """`x` as a tensor (numpy arrays and nested lists are converted), else a TypeError."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except Exception as err:  # any failure to convert: re-raised naming the argument
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}") from err


def check_inputs(
    name: str,
    x: object,
    *,
    ndim: int = 2,
    dtype: torch.dtype | None = None,
    features: int | None = None,
) -> torch.Tensor:
    """A non-empty, finite, real tensor with `ndim` dims (batch first), cast to `dtype` if given.

    Numpy arrays and nested lists are accepted and converted; complex tensors are refused.
    """
    x = check_real(name, as_tensor(name, x))
    if x.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions (batch first), got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"{name} is an empty batch (shape {tuple(x.shape)}); need at least one row"
        )
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has no features (shape {tuple(x.shape)}); need at least one")
    if dtype is not None:
        x = x.to(dtype)
    elif not torch.is_floating_point(x):
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    if features is not None and x.shape[-1] != features:
        raise ValueError(
            f"{name} must have {features} features in its last dimension, got {x.shape[-1]}"
        )
    return x


def check_batch(
    name: str, x: object, *, dtype: torch.dtype, keep_integers: bool = False
) -> torch.Tensor:
    """A non-empty batch (N, ...) of any shape: floats cast to `dtype` and finite; integers
    kept as int64 when `keep_integers` (token ids, class labels), else cast to `dtype`."""
    x = as_tensor(name, x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty batch (N, ...) with one row per example, got shape "
            f"{tuple(x.shape)}"
        )
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers or integer ids, got dtype {x.dtype}")
    if not x.is_floating_point() and keep_integers:
        return x.long()
    x = x.to(dtype)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def takes_integer_inputs(model: torch.nn.Module) -> bool:
    """Integer inputs are token ids for a model that embeds them (nn.Embedding / EmbeddingBag
    anywhere inside), and numbers to cast to floats for any other model."""
    kinds = (torch.nn.Embedding, torch.nn.EmbeddingBag)
    return any(isinstance(m, kinds) for m in model.modules())


def check_same_features(name1: str, x1: torch.Tensor, name2: str, x2: torch.Tensor) -> None:
    """Raise if two input batches have different feature dimensions."""
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"{name1} and {name2} must have the same feature shape, got "
            f"{tuple(x1.shape[1:])} and {tuple(x2.shape[1:])}"
        )


def check_forward_input(x: object, in_features: int, weight: torch.Tensor) -> None:
    """Clear errors for a forward input: a tensor (..., in_features) in the weights' dtype.

    Shape and dtype reads only (no data-dependent checks), so it is free and works under
    torch.func transforms (vmap, jvp) and the empirical NTK's recorder.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor (N, {in_features}), got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"x must have shape (N, {in_features}) (in_features={in_features} in the last "
            f"dimension), got {tuple(x.shape)}"
        )
    if x.dtype != weight.dtype and not torch.is_autocast_enabled():
        raise TypeError(
            f"x has dtype {x.dtype} but the model's parameters are {weight.dtype}; cast one "
            f"of them (e.g. x.to({weight.dtype}) or model.to({x.dtype}))"
        )
