"""One training step and a validation pass of a next-token language model.

The loss is the mean cross-entropy of the next token, in nats per token,

    L = -1/(B T) sum_{b, t} log softmax(logits[b, t])[y[b, t]],

so L / ln 2 is comparable with a corpus's entropy floor in bits per token.

These are the pieces a training loop wraps (schedules, EMA, checkpoints, logging): each works
on a plain model or one wrapped in `torch.nn.parallel.DistributedDataParallel`, which only needs
`model(x)` to return logits and every parameter to receive a gradient (the GPT uses them all).
Under DDP `train_step` returns the loss averaged over the processes, and all of them stop at a
non-finite loss together (a process that stopped alone would leave the others waiting in the
gradient all-reduce forever).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ntk._checks import check_positive
from ntk.errors import TrainingDivergedError


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy (nats per token) of logits (B, T, V) against targets (B, T)."""
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be (B, T, V) and targets (B, T); got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[Tensor, Tensor],
    *,
    step: int,
    max_grad_norm: float | None = None,
) -> float:
    """Forward, loss, backward and one optimizer update on `batch` = (x, y); returns the loss.

    `step` (the number of updates made so far) only names the step in the error raised when
    the loss is NaN or Inf; no update is made then. `max_grad_norm` clips the gradients' global
    norm before the update. Under DDP the loss returned (and checked) is the mean over the
    processes' batches.
    """
    if max_grad_norm is not None:
        check_positive("max_grad_norm", max_grad_norm)
    x, y = batch
    loss = lm_loss(model(x), y)
    value = _mean_over_processes(model, loss)
    if not math.isfinite(value):
        raise TrainingDivergedError(step, value)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return value


def _mean_over_processes(model: nn.Module, loss: Tensor) -> float:
    """The loss averaged over DDP's processes (one all-reduce), or the local loss."""
    if not isinstance(model, DistributedDataParallel):
        return loss.item()
    total = loss.detach().clone()
    dist.all_reduce(total, group=model.process_group)  # a sum
    return total.item() / dist.get_world_size(model.process_group)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> float:
    """Mean loss over `batches` (each batch weighted by its number of tokens), in eval mode.

    The model's training mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        total, count = 0.0, 0
        for x, y in batches:
            total += lm_loss(model(x), y).item() * y.numel()
            count += y.numel()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("batches is empty: nothing to evaluate")
    return total / count
