"""Callbacks for `train`: called as `cb(StepState)` after every update (True stops training)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ntk._checks import check_fraction, check_module
from ntk.training.config import StepState


class EMA:
    """Exponential moving average of the parameters (weight averaging), as a callback or by hand.

    After every optimizer update,

        theta_avg <- decay * theta_avg + (1 - decay) * theta,

    so theta_avg weighs the iterate of k updates ago by (1 - decay) decay^k: an average over
    the last ~1 / (1 - decay) updates, which smooths out the noise of the last steps
    (Polyak & Juditsky 1992; for deep nets Izmailov et al. 2018, "Averaging Weights Leads to
    Wider Optima and Better Generalization", arXiv:1803.05407). It starts at the initial
    parameters.

    Use it as a `train` callback (`ema(state)`) or call `ema.update(model)` after each
    optimizer step. `with ema.swapped(model):` evaluates the averaged weights in the model
    itself and puts the training weights back afterwards, bit for bit; `copy_to(model)` writes
    the average into another model with the same parameter names. `state_dict()` and
    `load_state_dict()` store it in checkpoints.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        check_module("model", model)
        self.decay = check_fraction("decay", decay, allow_zero=True)
        self.average = {k: p.detach().clone() for k, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the recursion with the current parameters of `model`."""
        for name, p in model.named_parameters():
            self.average[name].lerp_(p.detach(), 1.0 - self.decay)

    def __call__(self, state: StepState) -> None:
        self.update(state.model)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> nn.Module:
        """Write the averaged parameters into `model` (matched by name) and return it."""
        for name, p in model.named_parameters():
            p.copy_(self.average[name])
        return model

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Inside the block `model` holds the averaged weights; afterwards its own again.

        The training weights are kept aside as exact copies and restored even if the block
        raises, so evaluating the average never perturbs training.
        """
        with torch.no_grad():
            kept = {k: p.detach().clone() for k, p in model.named_parameters()}
            self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(kept[name])

    def state_dict(self) -> dict:
        """The decay and the averaged tensors (shared with this object: save, do not edit)."""
        return {"decay": self.decay, "average": dict(self.average)}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`'s content; names and shapes must match this EMA's model."""
        average = state["average"]
        if set(average) != set(self.average):
            missing = sorted(set(self.average) - set(average))
            extra = sorted(set(average) - set(self.average))
            raise ValueError(
                f"EMA state does not match the model: missing {missing}, extra {extra}"
            )
        for name, tensor in average.items():
            if tensor.shape != self.average[name].shape:
                raise ValueError(
                    f"EMA state for {name!r} has shape {tuple(tensor.shape)}, the model "
                    f"{tuple(self.average[name].shape)}"
                )
        self.decay = check_fraction("decay", state["decay"], allow_zero=True)
        for name, tensor in average.items():
            self.average[name].copy_(tensor)


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
