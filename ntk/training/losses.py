"""Losses and metrics of `train`.

The "half_mse" loss is 0.5 * mean((f - y)^2), the convention of neural-tangents'
`predict.gradient_descent_mse`, so full-batch SGD with learning rate `lr` follows the NTK
dynamics with `learning_rate=lr` (`ntk.kernels.predict`). Cross-entropy takes outputs
(N, ..., K) with classes in the last dimension (a language model's (N, T, V) logits) against
integer labels (N, ...) or class probabilities (N, ..., K); every position counts equally.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def loss_value(out: Tensor, y: Tensor, loss: str) -> Tensor:
    """The training loss: "half_mse" = 0.5 * mean((out - y)^2), or "cross_entropy"."""
    if loss == "cross_entropy":
        k = out.shape[-1]
        labels = not y.is_floating_point()
        return F.cross_entropy(out.reshape(-1, k), y.reshape(-1) if labels else y.reshape(-1, k))
    if out.shape != y.shape:
        raise ValueError(f"model output shape {tuple(out.shape)} != target shape {tuple(y.shape)}")
    return 0.5 * (out - y).pow(2).mean()


def metric_value(out: object, y: Tensor, metric: str) -> float:
    """ "accuracy" (argmax over the last dim against labels, or against the argmax of class
    probabilities), "mse" = mean((out - y)^2), or "none" (nan)."""
    if metric == "none":
        return math.nan
    if metric == "accuracy":
        labels = y if y.shape == out.shape[:-1] else y.argmax(-1)
        return (out.argmax(-1) == labels).double().mean().item()
    return (out - y.to(out.dtype)).pow(2).mean().item()


def half_sse(out: Tensor, y: Tensor) -> Tensor:
    """0.5 * sum_k (out_k - y_k)^2, averaged over examples (rows): the squared error of a
    K-output regression (one-hot digits) whose gradient per example is out - y. Not the
    "half_mse" loss, 0.5 * mean over every entry, which divides by K as well."""
    return 0.5 * ((out - y) ** 2).sum(1).mean()


Loss = Callable[[object, Tensor], Tensor]


def builtin_loss(name: str) -> Loss:
    """The loss `name` ("half_mse", "cross_entropy") as a function (out, y) -> scalar."""
    return lambda out, y: loss_value(out, y, name)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, loss: Loss, metric: str
) -> tuple[float, float]:
    """(loss, metric) of `model` on (x, y)."""
    out = model(x)
    return float(loss(out, y)), metric_value(out, y, metric)
