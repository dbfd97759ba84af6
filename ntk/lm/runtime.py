"""Where and how a training step runs: device, mixed precision, compilation, batch transfer.

One place for each of the mechanisms the training loop (`ntk.lm.train`), the step
(`ntk.lm.step`) and the benchmark (bench/lm.py) share:

- device: `train.device` "auto" (CUDA when there is one, else the CPU), "cpu" or "cuda";
  under torchrun, process r uses GPU LOCAL_RANK.
- mixed precision: `train.autocast` "bf16" runs forward and loss under `torch.autocast` in
  bfloat16 (matmuls and attention in bf16, reductions such as softmax, norms and the loss in
  float32, as autocast's op lists say) while the parameters, gradients and AdamW state stay
  float32: the "fp32 master weights" of Micikevicius et al. 2018 (arXiv:1710.03740). bf16 keeps
  float32's exponent range, so no loss scaling is needed (float16 would need it; it is not
  offered).
- compilation: `train.compile` compiles the model's forward in place (`nn.Module.compile`:
  the module, its parameters and its state_dict keys stay those of the eager model).
- batches: a CPU batch bound for CUDA is pinned (page-locked) and copied with
  non_blocking=True, so the copy overlaps the host's work instead of stalling it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ntk._checks import check_choice

DEVICES = ("auto", "cpu", "cuda")
AUTOCAST = {"none": None, "bf16": torch.bfloat16}


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The torch.device that `train.device` = name means for this process.

    "auto" is CUDA when `torch.cuda.is_available()`, else the CPU; "cuda" without a GPU is a
    ValueError that names the key. On CUDA the device index is `local_rank` (torchrun's LOCAL_RANK,
    read from the environment when None), one GPU per process.
    """
    check_choice("train.device", name, DEVICES)
    use_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():  # a config error (ValueError), not a crash
        raise ValueError(
            "train.device is 'cuda' but torch sees no CUDA GPU (torch.cuda.is_available() is "
            "False): use train.device=auto or cpu"
        )
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}"
        )
    return torch.device("cuda", local_rank)


def autocast_dtype(mode: str) -> torch.dtype | None:
    """torch dtype of `train.autocast` = mode ("none": None, full float32)."""
    return AUTOCAST[check_choice("train.autocast", mode, tuple(AUTOCAST))]


@contextlib.contextmanager
def autocast(device: torch.device | str, mode: str) -> Iterator[None]:
    """Run the enclosed forward and loss in `mode`'s precision on `device` ("none": as is).

    Only the forward and the loss belong inside: backward runs each op in the dtype its
    forward used, and the optimizer updates the float32 parameters.
    """
    dtype = autocast_dtype(mode)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield


def compile_model(model: nn.Module, enabled: bool) -> nn.Module:
    """`model` with its forward compiled by torch.compile (in place), or unchanged.

    In place (`nn.Module.compile`), so optimizers, EMA, checkpoints and the parametrization
    keep addressing the same module and parameter names.
    """
    if enabled:
        model.compile()
    return model


def to_device(batch: tuple[Tensor, ...], device: torch.device) -> tuple[Tensor, ...]:
    """Copy each tensor of `batch` to `device`: pinned and non-blocking when bound for CUDA.

    A non-blocking copy from pinned memory is ordered on the GPU's stream before the kernels
    that read it, so nothing else is needed for correctness.
    """
    if device.type != "cuda":
        return tuple(t.to(device) for t in batch)
    return tuple(
        (t.pin_memory() if t.device.type == "cpu" else t).to(device, non_blocking=True)
        for t in batch
    )
