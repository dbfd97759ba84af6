"""The data `train` is given, checked and moved to the model's device and dtype.

Every problem is reported before the first update, as a TypeError / ValueError that names
the argument, including one eval-mode forward on 2 rows: inputs that do not fit the model,
class labels >= K, "accuracy" with K = 1, "mse" against class labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ntk._checks import as_tensor, check_inputs
from ntk.training.config import TrainConfig


@dataclass
class TrainData:
    """Checked training (and optional test) tensors on the model's device."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor | None
    y_test: Tensor | None

    @property
    def has_test(self) -> bool:
        return self.x_test is not None


def prepare_targets(y: object, name: str, loss: str, n: int, dtype: torch.dtype) -> Tensor:
    """Targets (N, K) in `dtype`, or (N,) int64 class labels for cross-entropy."""
    y_t = as_tensor(name, y)
    if loss == "cross_entropy" and y_t.ndim == 1:  # class labels
        if torch.is_floating_point(y_t) or y_t.is_complex() or len(y_t) == 0 or y_t.min() < 0:
            raise ValueError(f"{name}: 1-D cross-entropy targets must be integer labels >= 0")
        y_t = y_t.long()
    else:
        y_t = check_inputs(name, y_t[:, None] if y_t.ndim == 1 else y_t, dtype=dtype)
    if y_t.shape[0] != n:
        raise ValueError(f"{name} has {y_t.shape[0]} rows but the inputs have {n}")
    return y_t


def prepare_data(
    model: nn.Module,
    x_train: object,
    y_train: object,
    x_test: object | None,
    y_test: object | None,
    cfg: TrainConfig,
) -> TrainData:
    """Check the data against each other, the config and the model; cast and move it."""
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError("model has no parameters to train")
    device, dtype = param.device, param.dtype
    x_tr = check_inputs("x_train", x_train, dtype=dtype).to(device)
    y_tr = prepare_targets(y_train, "y_train", cfg.loss, len(x_tr), dtype).to(device)
    if (x_test is None) != (y_test is None):
        raise ValueError("give both x_test and y_test, or neither")
    x_te = y_te = None
    if x_test is not None:
        x_te = check_inputs("x_test", x_test, dtype=dtype, features=x_tr.shape[1]).to(device)
        y_te = prepare_targets(y_test, "y_test", cfg.loss, len(x_te), dtype).to(device)
    if cfg.batch_size is not None and cfg.batch_size > len(x_tr):
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {len(x_tr)} training rows")
    check_model_fits(model, x_tr, y_tr, cfg)
    return TrainData(x_tr, y_tr, x_te, y_te)


def check_model_fits(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig) -> None:
    """One forward on 2 rows (eval mode, no grad): clear errors for inputs/targets that do not
    fit the model, before any update."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2])
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(
            f"x_train with shape {tuple(x.shape)} does not fit the model: "
            f"{type(err).__name__}: {err}"
        ) from err
    finally:
        model.train(was_training)
    if not isinstance(out, Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model must map (N, d) inputs to (N, K) outputs, got {shape}")
    k = out.shape[1]
    labels = y.ndim == 1  # cross-entropy class indices
    if labels and y.max() >= k:
        raise ValueError(
            f"y_train has class labels up to {int(y.max())} but the model has only {k} outputs"
        )
    if cfg.metric == "accuracy" and k < 2:
        raise ValueError("metric='accuracy' needs K >= 2 outputs (argmax over classes), got 1")
    if cfg.metric == "mse" and labels:
        raise ValueError(
            "metric='mse' needs targets shaped like the outputs (N, K), not class labels (N,); "
            "use metric='accuracy' or one-hot / probability targets"
        )
