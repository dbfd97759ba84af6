"""One training step and a validation pass of a next-token language model.

The loss is the mean cross-entropy of the next token, in nats per token,

    L = -1/(B T) sum_{b, t} log softmax(logits[b, t])[y[b, t]],

so L / ln 2 is comparable with a corpus's entropy floor in bits per token.

These are the pieces a training loop wraps (schedules, EMA, checkpoints, logging): each works
on a plain model, one wrapped in `torch.nn.parallel.DistributedDataParallel` or one sharded by
FSDP2's `fully_shard` (`ntk.lm.distributed`); DDP only needs
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
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel

from ntk._checks import check_positive
from ntk.errors import TrainingDivergedError
from ntk.lm import runtime
from ntk.lm.moe import moe_aux_loss


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
    autocast: str = "none",
) -> float:
    """Forward, loss, backward and one optimizer update on `batch` = (x, y); returns the loss.

    `step` (the number of updates made so far) only names the step in the error raised when
    the loss is NaN or Inf; no update is made then. `max_grad_norm` clips the gradients' global
    norm before the update. `autocast` "bf16" runs forward and loss in bfloat16 with float32
    parameters (`ntk.lm.runtime.autocast`). Under DDP or FSDP the loss returned (and checked)
    is the mean over the processes' batches. A mixture-of-experts model's load-balancing
    term (`ntk.lm.moe.moe_aux_loss`) is added to the loss optimized and returned.
    """
    if max_grad_norm is not None:
        check_positive("max_grad_norm", max_grad_norm)
    x, y = batch
    with runtime.autocast(x.device, autocast):
        loss = lm_loss(model(x), y)
        aux = moe_aux_loss(model)  # mixture-of-experts load balancing (ntk.lm.moe)
        if aux is not None:
            loss = loss + aux
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
    """The loss averaged over DDP's or FSDP's processes (one all-reduce), or the local loss."""
    if isinstance(model, DistributedDataParallel):
        group = model.process_group
    elif isinstance(model, FSDPModule):
        group = None  # fully_shard's default mesh spans the default group
    else:
        return loss.item()
    total = loss.detach().clone().float()
    dist.all_reduce(total, group=group)  # a sum
    return total.item() / dist.get_world_size(group)


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], autocast: str = "none"
) -> float:
    """Mean loss over `batches` (each batch weighted by its number of tokens), in eval mode,
    in `autocast`'s precision (as `train_step`).

    The model's training mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        total, count = 0.0, 0
        for x, y in batches:
            with runtime.autocast(x.device, autocast):
                loss = lm_loss(model(x), y)
            total += loss.item() * y.numel()
            count += y.numel()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("batches is empty: nothing to evaluate")
    return total / count
