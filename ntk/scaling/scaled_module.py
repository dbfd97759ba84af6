"""`ScaledModule`: any module with its output multiplied by a constant (the abc factor n^-a).

`ntk.scaling.parametrization` wraps each parametrized layer in one; `ntk.scaling.spectral`
reads its `multiplier` to measure the effective weight.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ScaledModule(nn.Module):
    """Wraps any module and multiplies its output by `multiplier` (the abc factor n^-a).

    Attribute access falls through to the wrapped module (`.weight`, `.in_features`, ...).
    """

    def __init__(self, module: nn.Module, multiplier: float) -> None:
        super().__init__()
        self.module = module
        self.multiplier = float(multiplier)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """multiplier * module(*args, **kwargs), i.e. n^-a times the layer's output."""
        out = self.module(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"ScaledModule needs a module returning one tensor, {type(self.module).__name__} "
                f"returned {type(out).__name__}"
            )
        return out * self.multiplier

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__["_modules"].get("module")
            if inner is None:
                raise
            return getattr(inner, name)

    def extra_repr(self) -> str:
        return f"multiplier={self.multiplier:.6g}"
