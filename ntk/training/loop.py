"""A compact, seeded training loop that records feature-learning diagnostics.

`train` runs full-batch or mini-batch SGD/Adam (or mup's MuSGD/MuAdam, or any optimizer you
build) on MSE, cross-entropy or a loss of your own, on inputs of any shape (token ids
included), and logs, at steps 0, log_every, ..., steps: train/test loss
and metric (accuracy or mean squared error) and the diagnostics of `ntk.training.diagnostics`
(relative change of hidden features, weights and optionally the empirical NTK).

Extension points (for e.g. progressive training, weight averaging or per-layer learning rates):
pass a built `optimizer`, `callbacks` run after every update (they see a `StepState` and may stop
training), and an `lr_schedule` that rescales each param group's initial lr.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ntk._checks import check_callable, check_factor, check_module
from ntk.errors import TrainingDivergedError
from ntk.training.config import Callback, History, StepState, TrainConfig
from ntk.training.diagnostics import Diagnostics
from ntk.training.inputs import TrainData, prepare_data
from ntk.training.losses import Loss, builtin_loss, evaluate
from ntk.training.optim import make_optimizer


def train(
    model: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor | None = None,
    y_test: Tensor | None = None,
    config: TrainConfig | None = None,
    *,
    optimizer: torch.optim.Optimizer | str | None = None,
    callbacks: Sequence[Callback] = (),
    lr_schedule: Callable[[int], float] | None = None,
    loss_fn: Callable[[object, Tensor], Tensor] | None = None,
    **overrides: object,
) -> History:
    """Train `model` in place and return its `History`.

    Args:
        model: maps a batch of inputs (N, ...) to outputs, e.g. (N, d) -> (N, K), images
            (N, C, H, W) -> (N, K), token ids (N, T) -> logits (N, T, V).
        x_train, y_train: inputs (N, ...) of any shape; integer inputs stay integers (token
            ids) when the model has an `nn.Embedding`, else become floats. Targets: shaped like
            the outputs (or (N,) for (N, 1)) for MSE; integer labels shaped like the outputs
            without their last (class) dimension, or class probabilities, for cross-entropy;
            anything `loss_fn` takes.
        x_test, y_test: optional held-out data, evaluated at every log step.
        config: a `TrainConfig`; `overrides` replace its fields (``train(m, x, y, lr=0.5)``).
        optimizer: a built optimizer (e.g. from custom param groups), which replaces
            `config.optimizer`, `lr`, `momentum` and `weight_decay`; or a name, as the
            `config.optimizer` override.
        callbacks: called as `cb(StepState)` after every update; a True return stops training.
        lr_schedule: step -> factor multiplying every param group's initial lr at that step.
        loss_fn: `loss_fn(model(x), y)`, a scalar tensor, replacing `config.loss` (the model
            may then return anything, e.g. a Hugging Face `ModelOutput`); the metric defaults
            to "none" (logged as nan) unless `config.metric` names one.
    Seeding: `torch.manual_seed(config.seed)` at the start and a dedicated generator for the
    mini-batch order, so the same model init and seed give an identical `History`.

    Raises:
        TrainingDivergedError (a FloatingPointError) when a training loss is NaN or Inf.
        TypeError / ValueError naming the argument for bad arguments, checked before the first
        update (`ntk.training.inputs`).
    """
    cfg, optimizer, callbacks = _resolve_arguments(
        model, config, optimizer, callbacks, lr_schedule, loss_fn, overrides
    )
    loss = loss_fn if loss_fn is not None else builtin_loss(cfg.loss)
    start_time = time.perf_counter()
    torch.manual_seed(cfg.seed)
    data = prepare_data(model, x_train, y_train, x_test, y_test, cfg, loss_fn)
    opt = optimizer if optimizer is not None else make_optimizer(model, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]
    diagnostics = Diagnostics(model, data.x_train, cfg)
    hist = diagnostics.new_history(cfg.metric)
    batches = _batches(data, cfg)
    bar = _progress_bar(cfg)
    try:
        _log(model, data, (loss, cfg.metric), diagnostics, hist, 0)
        model.train()
        for step in range(cfg.steps):
            xb, yb = next(batches)
            if lr_schedule is not None:
                factor = check_factor(f"lr_schedule({step})", lr_schedule(step))
                _scale_lrs(opt, base_lrs, factor)
            batch_loss = _update(model, opt, xb, yb, loss, step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{batch_loss:.4g}", refresh=False)
            done = step + 1
            state = StepState(done, batch_loss, model, opt, hist, cfg)
            stop = any([bool(cb(state)) for cb in callbacks])  # every callback runs
            if done % cfg.log_every == 0 or done == cfg.steps or stop:
                _log(model, data, (loss, cfg.metric), diagnostics, hist, done)
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    if not math.isfinite(hist.train_loss[-1]):  # the last update itself produced NaN/Inf
        raise TrainingDivergedError(hist.step[-1], hist.train_loss[-1])
    hist.wall_time = time.perf_counter() - start_time
    return hist


def _resolve_arguments(
    model: object,
    config: TrainConfig | None,
    optimizer: object,
    callbacks: Sequence[Callback],
    lr_schedule: object,
    loss_fn: object,
    overrides: dict[str, object],
) -> tuple[TrainConfig, torch.optim.Optimizer | None, tuple[Callback, ...]]:
    """The validated config (with `overrides`), the built optimizer or None, the callbacks."""
    check_module("model", model)
    if isinstance(optimizer, str):  # train(..., optimizer="muadam") names a config optimizer
        overrides["optimizer"], optimizer = optimizer, None
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "optimizer must be None, a name from TrainConfig.optimizer or a torch.optim."
            f"Optimizer, got {type(optimizer).__name__}"
        )
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or None, got {type(config).__name__}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown TrainConfig fields {unknown}; valid: {sorted(fields)}")
    callbacks = tuple(callbacks)
    for i, cb in enumerate(callbacks):
        check_callable(f"callbacks[{i}]", cb, "(StepState -> bool)")
    if lr_schedule is not None:
        check_callable("lr_schedule", lr_schedule, "step -> factor")
    if loss_fn is not None:
        check_callable("loss_fn", loss_fn, "(model output, y) -> scalar tensor")
    cfg = dataclasses.replace(config or TrainConfig(), **overrides).validate()
    if cfg.metric is None and loss_fn is not None:
        cfg.metric = "none"
    elif cfg.metric is None:
        cfg.metric = "accuracy" if cfg.loss == "cross_entropy" else "mse"
    return cfg, optimizer, callbacks


def _batches(data: TrainData, cfg: TrainConfig) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless (x, y) batches: the full batch, or mini-batches reshuffled every epoch by a
    generator seeded with `cfg.seed` (the last incomplete batch is dropped, so every batch has
    `batch_size` rows)."""
    x, y = data.x_train, data.y_train
    gen = torch.Generator().manual_seed(cfg.seed)
    order, cursor = torch.randperm(len(x), generator=gen), 0
    while True:
        if cfg.batch_size is None:
            yield x, y
            continue
        if cursor + cfg.batch_size > len(x):
            order, cursor = torch.randperm(len(x), generator=gen), 0
        idx = order[cursor : cursor + cfg.batch_size].to(x.device)
        cursor += cfg.batch_size
        yield x[idx], y[idx]


def _progress_bar(cfg: TrainConfig):
    """A tqdm bar when asked (by default for runs of 1000 steps or more), else None."""
    show = cfg.progress if cfg.progress is not None else cfg.steps >= 1000
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.steps, desc="train", leave=False)


def _scale_lrs(opt: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    for g, lr0 in zip(opt.param_groups, base_lrs, strict=True):
        g["lr"] = lr0 * factor


def _update(
    model: nn.Module, opt: torch.optim.Optimizer, xb: Tensor, yb: Tensor, loss: Loss, step: int
) -> float:
    """One optimizer step on a batch; returns the batch loss before it (raises on NaN/Inf)."""
    value = loss(model(xb), yb)
    loss_item = value.item()
    if not math.isfinite(loss_item):
        raise TrainingDivergedError(step, loss_item)
    opt.zero_grad(set_to_none=True)
    value.backward()
    opt.step()
    return loss_item


def _log(
    model: nn.Module,
    data: TrainData,
    objective: tuple[Loss, str],
    diagnostics: Diagnostics,
    hist: History,
    step: int,
) -> None:
    """Append one log entry: losses and metrics (test ones nan without test data), diagnostics."""
    was_training = model.training
    model.eval()
    hist.step.append(step)
    loss, metric = evaluate(model, data.x_train, data.y_train, *objective)
    hist.train_loss.append(loss)
    hist.train_metric.append(metric)
    if data.has_test:
        loss, metric = evaluate(model, data.x_test, data.y_test, *objective)
    else:
        loss, metric = math.nan, math.nan
    hist.test_loss.append(loss)
    hist.test_metric.append(metric)
    diagnostics.record(model, hist)
    model.train(was_training)
