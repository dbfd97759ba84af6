"""The old spelling of the dynamic learning rates, on `Parametrization`, for one release.

`param.enable_dynamic_lr(optimizer, probe)`, `param.step()`, `param.state_dict()` and
`param.load_state_dict(state)` belonged to the controller, not to the static rule; they now
live on `ntk.DynamicLR` (`ntk.scaling.dynamic_lr`). These functions are bound as methods of
`Parametrization`, warn with a FutureWarning (not DeprecationWarning, which Python hides by
default) and do what they did. Remove this module in the next release.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch


def enable_dynamic_lr(
    self, optimizer: torch.optim.Optimizer, probe: Any, every: int = 10, **options: Any
):
    """Deprecated: `DynamicLR(param, optimizer, probe, every, **options)`."""
    _deprecated("param.enable_dynamic_lr(optimizer, probe)", "DynamicLR(param, optimizer, probe)")
    # here, not at the top: the controller imports Parametrization (removed next release)
    from ntk.scaling.dynamic_lr import DynamicLR

    if self.dynamic_lr is not None:
        self.dynamic_lr.remove()
    self.dynamic_lr = DynamicLR(self, optimizer, probe, every, **options)
    return self.dynamic_lr


def step(self) -> None:
    """Deprecated: the controller's `DynamicLR.step()`."""
    _deprecated("param.step()", "DynamicLR.step()")
    if self.dynamic_lr is None:
        raise RuntimeError("call param.enable_dynamic_lr(optimizer, probe) before step()")
    self.dynamic_lr.step()


def state_dict(self) -> dict[str, Any]:
    """Deprecated: the controller's `DynamicLR.state_dict()`."""
    _deprecated("param.state_dict()", "DynamicLR.state_dict()")
    return {} if self.dynamic_lr is None else {"dynamic_lr": self.dynamic_lr.state_dict()}


def load_state_dict(self, state: Mapping[str, Any]) -> None:
    """Deprecated: the controller's `DynamicLR.load_state_dict(state)`."""
    _deprecated("param.load_state_dict(state)", "DynamicLR.load_state_dict(state)")
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}")
    if "dynamic_lr" in state:
        if self.dynamic_lr is None:
            raise RuntimeError(
                "state holds dynamic learning rates: call enable_dynamic_lr(optimizer, "
                "probe) before load_state_dict"
            )
        self.dynamic_lr.load_state_dict(state["dynamic_lr"])


def _deprecated(old: str, new: str) -> None:
    # FutureWarning, not DeprecationWarning: users (and pytest's default filters) see it
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new} "
        "(ntk.DynamicLR, a controller beside the Parametrization)",
        FutureWarning,
        stacklevel=3,
    )
