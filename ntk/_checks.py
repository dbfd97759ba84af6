"""Argument checks shared by the package: clear errors that name the argument."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """Return `value` if it is one of `choices`, else raise ValueError naming `name`."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_nonnegative(name: str, value: float) -> float:
    """A finite float >= 0 (a std, a regularizer, a time)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (value >= 0) or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    """An int >= `minimum` (a width, a depth, a chunk size)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_inputs(
    name: str,
    x: object,
    *,
    ndim: int = 2,
    dtype: torch.dtype | None = None,
    features: int | None = None,
) -> torch.Tensor:
    """A non-empty, finite tensor with `ndim` dims (batch first), cast to `dtype` if given.

    Numpy arrays and nested lists are accepted and converted.
    """
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as err:  # noqa: BLE001 - re-raised with the argument's name
            raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}") from err
    if x.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions (batch first), got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"{name} is an empty batch (shape {tuple(x.shape)}); need at least one row"
        )
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


def check_same_features(name1: str, x1: torch.Tensor, name2: str, x2: torch.Tensor) -> None:
    """Raise if two input batches have different feature dimensions."""
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"{name1} and {name2} must have the same feature shape, got "
            f"{tuple(x1.shape[1:])} and {tuple(x2.shape[1:])}"
        )
