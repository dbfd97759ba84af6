"""Several processes, one model: DDP (replicated weights) or FSDP2 (sharded), muP intact.

`train.parallel` "ddp" wraps the model in `DistributedDataParallel`: every process holds all
the weights and the gradients are averaged. "fsdp" shards it with FSDP2's `fully_shard`
(Zhao et al. 2023, "PyTorch FSDP", arXiv:2304.11277): every transformer block, then the root,
keeps 1/W of each parameter on each process (a DTensor sharded along dim 0), gathers the full
weights for its forward and backward, and reduce-scatters the gradients. Each process's AdamW
then updates its own shard.

muP survives sharding because the abc engine keeps its rules outside the parameters (the
`mup` package stores them as parameter attributes, which sharding and saving lose: its
issues #59 and #72): the zero-initialized query and readout and the init are applied before
sharding, the output multipliers and attention scales are attributes of modules that
`fully_shard` leaves in place, and the per-layer learning rates are optimizer param groups,
which `Parametrization.param_groups` builds from the live (sharded) parameters: so the
optimizer is built after `shard`. AdamW acts entry by entry, so sharded AdamW is AdamW.

Checkpoints hold full (unsharded) tensors, in the format a 1-process run writes
(`model.state_dict()`, `optimizer.state_dict()` with parameters numbered in param-group
order): `full_state` gathers them with torch.distributed.checkpoint.state_dict's
`get_model_state_dict` / `get_optimizer_state_dict` (full_state_dict=True, cpu_offload=True),
and `load_full_state` shards them again with the `set_*` functions. Full tensors rather than
DCP's sharded files because the checkpoint is one atomic file (`ntk.lm.checkpoint`) that any
number of processes, sharded or not, resumes from; the price, the whole model and optimizer
in process 0's memory, is small at the sizes this project trains (DCP would be the choice
when that memory is not available).

EMA and the spectral monitor read whole weights on one process; under FSDP they are refused.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel

from ntk._checks import check_choice

PARALLEL = ("ddp", "fsdp")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard(model: nn.Module, parallel: str, world: int) -> nn.Module:
    """Shard `model` in place with `fully_shard` when parallel is "fsdp" and world > 1.

    Each child of `model.blocks` (a transformer block) is one FSDP unit, the root holds the
    embedding, final norm and readout. Call it after the parametrization and before the
    optimizer is built: the sharded parameters are new Parameter objects.
    """
    check_choice("train.parallel", parallel, PARALLEL)
    if parallel != "fsdp" or world == 1:
        return model
    for block in getattr(model, "blocks", []):
        fully_shard(block)
    fully_shard(model)
    return model


def step_module(model: nn.Module, parallel: str, device: torch.device, world: int) -> nn.Module:
    """The module a training step calls: DDP around `model`, or `model` itself (sharded or a
    single process)."""
    if world == 1 or parallel == "fsdp":
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)  # starts from rank 0's weights


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def _fqns(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """Parameter names in the optimizer's param-group order (one list per group)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model state_dict, optimizer state_dict) with full tensors, in 1-process format.

    Under FSDP every process must call it (it gathers the shards); process 0 receives the
    result, on the CPU, the others two empty dicts. Otherwise it is `model.state_dict()`, `optimizer.state_dict()`.
    """
    if not is_sharded(model):
        return model.state_dict(), optimizer.state_dict()
    model_state = get_model_state_dict(model, options=_FULL)
    if not optimizer.state:
        # nothing sharded to gather (and get_optimizer_state_dict would first initialize the
        # state with a zero-lr step, which counts as an AdamW step: bias corrections shift)
        return model_state, optimizer.state_dict() if dist.get_rank() == 0 else {}
    by_name = get_optimizer_state_dict(model, optimizer, options=_FULL)
    if not by_name:  # cpu_offload with full tensors: only process 0 receives them
        return model_state, {}
    groups, state, index = [], {}, 0
    for group, names in zip(by_name["param_groups"], _fqns(model, optimizer), strict=True):
        ids = []
        for name in names:
            if name in by_name["state"]:
                state[index] = by_name["state"][name]
            ids.append(index)
            index += 1
        groups.append({**group, "params": ids})
    return model_state, {"state": state, "param_groups": groups}


def load_full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any],
) -> None:
    """Load `full_state`'s result (or a 1-process checkpoint's) into a model and optimizer,
    sharding the tensors when the model is sharded (every process calls it then)."""
    if not is_sharded(model):
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        return
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    names = [n for group in _fqns(model, optimizer) for n in group]
    saved = optimizer_state["param_groups"]
    if [len(g["params"]) for g in saved] != [len(g["params"]) for g in optimizer.param_groups]:
        raise ValueError(
            "the checkpoint's optimizer has other param groups than this run's "
            f"({[len(g['params']) for g in saved]} parameters per group, this run "
            f"{[len(g['params']) for g in optimizer.param_groups]})"
        )
    by_name = {
        "state": {names[i]: s for i, s in optimizer_state["state"].items()},
        "param_groups": [
            {**g, "params": [names[i] for i in g["params"]]}
            for g in optimizer_state["param_groups"]
        ],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=options)


def check_supported(parallel: str, world: int, ema: bool, diagnostics: bool) -> None:
    """Refuse what FSDP does not do here: EMA and the spectral monitor need whole weights."""
    if parallel != "fsdp" or world == 1:
        return
    if ema:
        raise ValueError(
            "train.parallel=fsdp does not keep an EMA (it would average sharded weights): "
            "set ema.enabled=false or train.parallel=ddp"
        )
    if diagnostics:
        raise ValueError(
            "train.parallel=fsdp does not run the spectral diagnostics (they read whole "
            "weights on process 0): set log.diag_every=0 or train.parallel=ddp"
        )
