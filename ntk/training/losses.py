"""Losses and metrics of `train`.

The MSE loss is 0.5 * mean((f - y)^2), the convention of neural-tangents'
`predict.gradient_descent_mse`, so full-batch SGD with learning rate `lr` follows the NTK
dynamics with `learning_rate=lr` (`ntk.kernels.predict`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntk.training.config import TrainConfig


def loss_value(out: Tensor, y: Tensor, loss: str) -> Tensor:
    """The training loss: "mse" = 0.5 * mean((out - y)^2), or "cross_entropy"."""
    if loss == "cross_entropy":
        return F.cross_entropy(out, y)
    if out.shape != y.shape:
        raise ValueError(f"model output shape {tuple(out.shape)} != target shape {tuple(y.shape)}")
    return 0.5 * (out - y).pow(2).mean()


def metric_value(out: Tensor, y: Tensor, metric: str) -> float:
    """ "accuracy" (argmax against labels or one-hot targets) or "mse" = mean((out - y)^2)."""
    if metric == "accuracy":
        labels = y if y.ndim == 1 else y.argmax(-1)
        return (out.argmax(-1) == labels).double().mean().item()
    return (out - y.to(out.dtype)).pow(2).mean().item()


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig) -> tuple[float, float]:
    """(loss, metric) of `model` on (x, y)."""
    out = model(x)
    return loss_value(out, y, cfg.loss).item(), metric_value(out, y, cfg.metric)
