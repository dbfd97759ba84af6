"""Argument checks shared by the package: clear errors that name the argument.

Every module validates its arguments through these functions (and adds one here rather than
writing a local one), so that the same mistake gives the same kind of error everywhere:
TypeError for a value of the wrong type, ValueError for a value of the right type out of range
(raised as `ntk.errors.InvalidType` / `InvalidValue`, subclasses of both, so that a command
line reports them as the user's mistake in one line: `ntk.errors`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch.nn.parameter import UninitializedParameter

from ntk.errors import InvalidType, InvalidValue
from ntk.registry import ALIASES as PARAMETRIZATION_ALIASES


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """Return `value` if it is one of `choices`, else raise ValueError naming `name`."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise InvalidValue(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_choices(name: str, values: Sequence[str], choices: Iterable[str]) -> list[str]:
    """A non-empty sequence (not a string) whose entries are all in `choices`."""
    choices = tuple(choices)
    if isinstance(values, str):
        raise InvalidType(
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
        raise InvalidType(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_callable(name: str, value: object, what: str) -> object:
    """A callable; `what` describes its signature in the error (e.g. "step -> factor")."""
    if not callable(value):
        raise InvalidType(f"{name} must be a callable {what}, got {value!r}")
    return value


def _check_real(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType(f"{name} must be a real number, got {type(value).__name__}")


def check_nonnegative(name: str, value: float) -> float:
    """A finite float >= 0 (a std, a regularizer, a time)."""
    _check_real(name, value)
    if not (value >= 0) or value != value or value == float("inf"):
        raise InvalidValue(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """A finite float > 0 (a learning rate, a multiplier, a prefactor)."""
    _check_real(name, value)
    if not 0 < value < math.inf:
        raise InvalidValue(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_fraction(name: str, value: float, *, allow_zero: bool = False) -> float:
    """A number in (0, 1), or in [0, 1) with `allow_zero` (a test fraction, a decay)."""
    interval = "[0, 1)" if allow_zero else "(0, 1)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType(f"{name} must be a number in {interval}, got {value!r}")
    if not (0.0 <= value < 1.0) or (value == 0.0 and not allow_zero):
        raise InvalidValue(f"{name} must be in {interval}, got {value}")
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
        raise InvalidType(f"{name} must be a list of numbers ({what}), got {type(values).__name__}")
    if len(values) != length:
        raise InvalidValue(f"{name} must have {what} ({length}), got {len(values)}")
    for i, v in enumerate(values):
        if not is_finite_number(v):
            raise InvalidValue(f"{name}[{i}] must be a finite number, got {v!r}")
    return [float(v) for v in values]


# Counts and seeds end up in torch (int64) and in float arithmetic: larger ints overflow there.
INT64_MAX = 2**63 - 1


def check_positive_int(name: str, value: int, minimum: int = 1, maximum: int = INT64_MAX) -> int:
    """An int in [`minimum`, `maximum`] (a width, a depth, a chunk size, a seed)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise InvalidValue(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        shown = value if value.bit_length() <= 64 else f"an int of {len(str(value))} digits"
        raise InvalidValue(f"{name} must be <= {maximum}, got {shown}")
    return value


def check_std(name: str, value: float) -> float:
    """A finite std >= 0 whose square (the variance the kernels and inits use) is finite too."""
    value = check_nonnegative(name, value)
    if not math.isfinite(value * value):
        raise InvalidValue(
            f"{name} must be a std whose square fits in a float (<= ~1e154), got {value:g}"
        )
    return value


def check_sequence(name: str, values: object, what: str) -> list:
    """A non-empty list, tuple, range or array of `what` (a bare string or number is refused)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise InvalidType(f"{name} must be a sequence of {what}, got {values!r}")
    values = list(values)
    if not values:
        raise InvalidValue(f"{name} must be a non-empty sequence of {what}")
    return values


def check_int_list(name: str, values: object, minimum: int) -> list[int]:
    """A non-empty sequence of ints >= `minimum` (numpy integers accepted, floats refused)."""
    out = []
    for i, v in enumerate(check_sequence(name, values, f"ints >= {minimum}")):
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise InvalidType(f"{name}[{i}] must be an int, got {v!r}")
        out.append(check_positive_int(f"{name}[{i}]", int(v), minimum=minimum))
    return out


def check_number_list(name: str, values: object) -> list[float]:
    """A non-empty sequence of finite real numbers."""
    out = []
    for i, v in enumerate(check_sequence(name, values, "finite numbers")):
        if not is_finite_number(v):
            raise InvalidValue(f"{name}[{i}] must be a finite real number, got {v!r}")
        out.append(float(v))
    return out


def check_float_dtype(name: str, dtype: object) -> torch.dtype:
    """A real floating torch.dtype (an integer dtype would truncate inputs silently)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        hint = f" (torch.{dtype})" if isinstance(dtype, str) and hasattr(torch, dtype) else ""
        raise InvalidType(
            f"{name} must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}{hint}"
        )
    return dtype


def check_float64(name: str, dtype: object, what: str) -> torch.dtype:
    """torch.float64, where a lower precision would lose the accuracy `what` promises."""
    check_float_dtype(name, dtype)
    if dtype != torch.float64:
        raise TypeError(
            f"{name} must be torch.float64 for {what}, got {dtype}: arccos near 1 and the "
            "position averages lose about half the digits, so float32 would miss neural-"
            "tangents' kernels by ~1e-3 instead of ~1e-12 (inputs of any float dtype are cast "
            "up exactly)"
        )
    return dtype


def check_scale_fits(name: str, value: float, scale: float, dtype: torch.dtype) -> None:
    """Raise if a weight scale derived from `name` (e.g. weight_std / sqrt(fan_in)) would
    overflow `dtype`: the parameters or the forward multipliers would be Inf."""
    if not scale <= torch.finfo(dtype).max:
        raise InvalidValue(
            f"{name}={value:g} gives weights of scale {scale:g}, beyond the largest {dtype} "
            f"({torch.finfo(dtype).max:g}); lower {name} or use a wider dtype"
        )


def check_real(name: str, x: torch.Tensor) -> torch.Tensor:
    """Refuse complex tensors: casting them to a real dtype would drop the imaginary part."""
    if x.is_complex():
        raise InvalidType(
            f"{name} must be real, got a complex tensor ({x.dtype}); casting would silently "
            f"drop its imaginary part (pass {name}.real or {name}.abs() if that is what you mean)"
        )
    return x


def check_module(name: str, value: object) -> torch.nn.Module:
    """A torch.nn.Module."""
    if not isinstance(value, torch.nn.Module):
        raise InvalidType(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def check_materialized(name: str, model: torch.nn.Module) -> torch.nn.Module:
    """A module whose parameters all have shapes (lazy modules must have run once)."""
    lazy = [k for k, p in model.named_parameters() if isinstance(p, UninitializedParameter)]
    if lazy:
        raise InvalidValue(
            f"{name} has uninitialized (lazy) parameters {lazy[:3]}: their shapes, hence "
            f"fan-ins and widths, are unknown until a forward pass; run {name}(x) once first"
        )
    return model


def check_factor(name: str, value: object) -> float:
    """A finite number >= 0 returned by a user callable (a learning-rate factor)."""
    if not is_finite_number(value) or isinstance(value, complex) or float(value) < 0:
        raise InvalidValue(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def as_tensor(name: str, x: object) -> torch.Tensor:
    """`x` as a tensor (numpy arrays and nested lists are converted), else a TypeError."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except Exception as err:  # any failure to convert: re-raised naming the argument
        raise InvalidType(f"{name} must be a tensor or array, got {type(x).__name__}") from err


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
        raise InvalidValue(
            f"{name} must have {ndim} dimensions (batch first), got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise InvalidValue(
            f"{name} is an empty batch (shape {tuple(x.shape)}); need at least one row"
        )
    if x.shape[-1] == 0:
        raise InvalidValue(f"{name} has no features (shape {tuple(x.shape)}); need at least one")
    if dtype is not None:
        x = x.to(dtype)
    elif not torch.is_floating_point(x):
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise InvalidValue(f"{name} contains NaN or Inf values")
    if features is not None and x.shape[-1] != features:
        raise InvalidValue(
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
        raise InvalidValue(
            f"{name} must be a non-empty batch (N, ...) with one row per example, got shape "
            f"{tuple(x.shape)}"
        )
    if x.is_complex() or x.dtype == torch.bool:
        raise InvalidType(f"{name} must hold real numbers or integer ids, got dtype {x.dtype}")
    if not x.is_floating_point() and keep_integers:
        return x.long()
    x = x.to(dtype)
    if not torch.isfinite(x).all():
        raise InvalidValue(f"{name} contains NaN or Inf values")
    return x


def takes_integer_inputs(model: torch.nn.Module) -> bool:
    """Integer inputs are token ids for a model that embeds them (nn.Embedding / EmbeddingBag
    anywhere inside), and numbers to cast to floats for any other model."""
    kinds = (torch.nn.Embedding, torch.nn.EmbeddingBag)
    return any(isinstance(m, kinds) for m in model.modules())


def check_same_features(name1: str, x1: torch.Tensor, name2: str, x2: torch.Tensor) -> None:
    """Raise if two input batches have different feature dimensions."""
    if x1.shape[1:] != x2.shape[1:]:
        raise InvalidValue(
            f"{name1} and {name2} must have the same feature shape, got "
            f"{tuple(x1.shape[1:])} and {tuple(x2.shape[1:])}"
        )


def check_forward_input(x: object, in_features: int, weight: torch.Tensor) -> None:
    """Clear errors for a forward input: a tensor (..., in_features) in the weights' dtype.

    Shape and dtype reads only (no data-dependent checks), so it is free and works under
    torch.func transforms (vmap, jvp) and the empirical NTK's recorder.
    """
    if not isinstance(x, torch.Tensor):
        raise InvalidType(f"x must be a torch.Tensor (N, {in_features}), got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise InvalidValue(
            f"x must have shape (N, {in_features}) (in_features={in_features} in the last "
            f"dimension), got {tuple(x.shape)}"
        )
    if x.dtype != weight.dtype and not torch.is_autocast_enabled():
        raise InvalidType(
            f"x has dtype {x.dtype} but the model's parameters are {weight.dtype}; cast one "
            f"of them (e.g. x.to({weight.dtype}) or model.to({x.dtype}))"
        )


def check_width_power(name: str, ratio: float, exponent: float) -> float:
    """ratio ** exponent (a width ratio n / n0 to a scaling exponent), refused where it leaves
    float32's normal range: a multiplier, init std or learning rate there is Inf or 0 in the
    weights (Python raises OverflowError for the former, and silently gives 0.0 for the latter)."""
    log = exponent * math.log(ratio)
    tiny, big = torch.finfo(torch.float32).tiny, torch.finfo(torch.float32).max
    if not math.log(tiny) <= log <= math.log(big):
        raise InvalidValue(
            f"{name} = {-exponent:g} gives the width ratio n/n0 = {ratio:g} a factor "
            f"{ratio:g}^{exponent:g} = 10^{log / math.log(10):.0f}, outside float32's range "
            f"[{tiny:.1e}, {big:.1e}]; scaling exponents are of order 1"
        )
    return ratio**exponent


def check_optimizer(name: str, value: object) -> object:
    """An optimizer: a torch.optim.Optimizer, or an object with zero_grad() and step()."""
    if not (callable(getattr(value, "zero_grad", None)) and callable(getattr(value, "step", None))):
        raise InvalidType(
            f"{name} must be a torch.optim.Optimizer (with zero_grad() and step()), "
            f"got {type(value).__name__}"
        )
    return value


def check_scalar_loss(name: str, value: object) -> torch.Tensor:
    """A loss to call backward() on: a real floating tensor with one element."""
    if not isinstance(value, torch.Tensor):
        raise InvalidType(
            f"{name} must return a torch.Tensor (a scalar), got {type(value).__name__}"
        )
    if value.numel() != 1 or not value.is_floating_point():
        raise InvalidValue(
            f"{name} must return a scalar (one floating element, e.g. a mean over the batch), "
            f"got a {value.dtype} tensor of shape {tuple(value.shape)}"
        )
    return value


def check_elementwise(name: str, fn: object) -> object:
    """A callable applied elementwise to torch tensors: called on a probe tensor that requires
    grad (as the kernels' derivatives do), it must return a real floating tensor of the same
    shape. Catches numpy functions, reductions and broadcasting mistakes before they give
    torch internals or a wrong answer."""
    check_callable(name, fn, "tensor -> tensor of the same shape (elementwise, in torch)")
    probe = torch.linspace(-2.0, 2.0, 6, dtype=torch.float64).reshape(2, 3).requires_grad_()
    try:
        out = fn(probe)
    except Exception as err:
        raise InvalidValue(
            f"{name} failed on a float64 tensor that requires grad ({type(err).__name__}: "
            f"{str(err)[:160]}); it must be an elementwise torch function (torch.tanh, "
            "lambda x: x * torch.sigmoid(x)), not a numpy one"
        ) from err
    if not isinstance(out, torch.Tensor):
        raise InvalidType(
            f"{name} must return a torch.Tensor (an elementwise torch function), got "
            f"{type(out).__name__}"
        )
    if out.shape != probe.shape or not out.is_floating_point():
        raise InvalidValue(
            f"{name} must be elementwise: given a {tuple(probe.shape)} float64 tensor it "
            f"returned a {out.dtype} tensor of shape {tuple(out.shape)}"
        )
    return fn
