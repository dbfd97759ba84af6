"""Callbacks for `train`: called as `cb(StepState)` after every update (True stops training)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ntk._checks import check_fraction, check_module
from ntk.training.config import StepState


class EMA:
    """Callback keeping an exponential moving average of the parameters (weight averaging).

    avg <- decay * avg + (1 - decay) * theta after every update. `copy_to(model)` writes the
    average into a model with the same parameter names (e.g. a `copy.deepcopy` of it).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        check_module("model", model)
        self.decay = check_fraction("decay", decay, allow_zero=True)
        self.average = {k: p.detach().clone() for k, p in model.named_parameters()}

    @torch.no_grad()
    def __call__(self, state: StepState) -> None:
        for name, p in state.model.named_parameters():
            self.average[name].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> nn.Module:
        """Write the averaged parameters into `model` (matched by name) and return it."""
        for name, p in model.named_parameters():
            p.copy_(self.average[name])
        return model


class OutputRecorder:
    """Callback storing the model's outputs on fixed inputs `x` at chosen `steps`.

    `record(model, 0)` before training stores the initial outputs; `stacked()` returns the
    first output column at every recorded step, (T, N), in float64.
    """

    def __init__(self, x: Tensor, steps: list[int]) -> None:
        self.x, self.steps, self.outputs = x, set(steps), {}

    def record(self, model: nn.Module, step: int) -> None:
        with torch.no_grad():
            self.outputs[step] = model(self.x)[:, 0].double()

    def __call__(self, state: StepState) -> None:
        if state.step in self.steps:
            self.record(state.model, state.step)

    def stacked(self) -> Tensor:
        return torch.stack([self.outputs[s] for s in sorted(self.outputs)])
