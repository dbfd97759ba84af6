"""The data `train` is given, checked and moved to the model's device and dtype.

Inputs are batches (N, ...) of any shape: feature vectors, images (N, C, H, W), sequences
(N, T, d), or integer token ids (N, T), which stay integers for a model that embeds them
(`nn.Embedding` inside). Every problem is reported before the first update, as a TypeError /
ValueError that names the argument, including one eval-mode forward (and loss) on 2 rows:
inputs that do not fit the model, targets not shaped like the outputs, class labels >= K,
"accuracy" with K = 1, "half_mse" or "mse" against class labels, a user loss that fails or is not a scalar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ntk._checks import check_batch, check_same_features, takes_integer_inputs
from ntk.training.config import TrainConfig

LossFn = Callable[[object, Tensor], Tensor]  # (model output, targets) -> scalar


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


def prepare_targets(y: object, name: str, loss: str | None, dtype: torch.dtype) -> Tensor:
    """Targets in `dtype`, or int64 class labels (integer targets for cross-entropy or a user
    loss, `loss=None`); (N,) targets become (N, 1) for MSE."""
    labels_ok = loss != "half_mse"
    y_t = check_batch(name, y, dtype=dtype, keep_integers=labels_ok)
    if loss == "cross_entropy" and y_t.is_floating_point() and y_t.ndim == 1:
        raise ValueError(f"{name}: 1-D cross-entropy targets must be integer labels >= 0")
    if not y_t.is_floating_point() and loss is not None and y_t.min() < 0:
        raise ValueError(f"{name}: class labels must be >= 0, got {int(y_t.min())}")
    if loss == "half_mse" and y_t.ndim == 1:
        y_t = y_t[:, None]
    return y_t


def prepare_data(
    model: nn.Module,
    x_train: object,
    y_train: object,
    x_test: object | None,
    y_test: object | None,
    cfg: TrainConfig,
    loss_fn: LossFn | None = None,
) -> TrainData:
    """Check the data against each other, the config and the model; cast and move it."""
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError("model has no parameters to train")
    device, dtype = param.device, param.dtype
    ids = takes_integer_inputs(model)
    loss = None if loss_fn is not None else cfg.loss
    x_tr = check_batch("x_train", x_train, dtype=dtype, keep_integers=ids).to(device)
    y_tr = prepare_targets(y_train, "y_train", loss, dtype).to(device)
    _check_rows("y_train", y_tr, "x_train", x_tr)
    if (x_test is None) != (y_test is None):
        raise ValueError("give both x_test and y_test, or neither")
    x_te = y_te = None
    if x_test is not None:
        x_te = check_batch("x_test", x_test, dtype=dtype, keep_integers=ids).to(device)
        check_same_features("x_train", x_tr, "x_test", x_te)
        y_te = prepare_targets(y_test, "y_test", loss, dtype).to(device)
        _check_rows("y_test", y_te, "x_test", x_te)
    if cfg.batch_size is not None and cfg.batch_size > len(x_tr):
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {len(x_tr)} training rows")
    check_model_fits(model, x_tr, y_tr, cfg, loss_fn)
    return TrainData(x_tr, y_tr, x_te, y_te)


def _check_rows(y_name: str, y: Tensor, x_name: str, x: Tensor) -> None:
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{y_name} has {y.shape[0]} rows but {x_name} has {x.shape[0]}")


def _forward(model: nn.Module, x: Tensor) -> object:
    """model(x[:2]) in eval mode without grad; a ValueError if x does not fit."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x[:2])
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(
            f"x_train with shape {tuple(x.shape)} (dtype {x.dtype}) does not fit the model: "
            f"{type(err).__name__}: {err}"
        ) from err
    finally:
        model.train(was_training)


def check_model_fits(
    model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, loss_fn: LossFn | None = None
) -> None:
    """One forward (and loss) on 2 rows: clear errors for inputs/targets that do not fit the
    model, before any update."""
    out = _forward(model, x)
    if loss_fn is not None:
        _check_user_loss(loss_fn, out, y[:2])
    if not isinstance(out, Tensor):
        if loss_fn is not None and cfg.metric == "none":
            return
        raise ValueError(
            f"model returns a {type(out).__name__}, not a tensor: the built-in losses and "
            "metrics need a tensor; pass loss_fn (and metric='none'), or wrap the model so "
            "that it returns a tensor (e.g. its .logits)"
        )
    if loss_fn is None:
        _check_builtin_targets(out, y[:2], cfg.loss)
    _check_metric(out, y[:2], cfg.metric)


def _check_user_loss(loss_fn: LossFn, out: object, y: Tensor) -> None:
    try:
        with torch.no_grad():
            value = loss_fn(out, y)
    except Exception as err:  # any failure of user code: re-raised naming the argument
        raise ValueError(
            f"loss_fn(model(x), y) fails on the first 2 rows: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"loss_fn(model(x), y) must return a scalar tensor, got {shape}")


def _check_builtin_targets(out: Tensor, y: Tensor, loss: str) -> None:
    if loss == "half_mse" or y.is_floating_point():  # targets (or class probabilities) like out
        if out.shape != y.shape:
            raise ValueError(
                f"the model outputs {tuple(out.shape)} on 2 rows but y_train's rows are "
                f"{tuple(y.shape)}: {loss} targets must have the output's shape"
            )
        return
    if out.ndim < 2 or y.shape != out.shape[:-1]:  # class labels, classes in the last dim
        raise ValueError(
            f"class labels with shape {tuple(y.shape)} on 2 rows do not fit model outputs "
            f"{tuple(out.shape)}: labels need the output's shape without its last (class) "
            "dimension; pass loss_fn for other layouts"
        )
    k = out.shape[-1]
    if y.max() >= k:
        raise ValueError(
            f"y_train has class labels up to {int(y.max())} but the model has only {k} outputs"
        )


def _check_metric(out: Tensor, y: Tensor, metric: str) -> None:
    labels = not y.is_floating_point()
    if metric == "accuracy" and (out.ndim < 2 or out.shape[-1] < 2):
        raise ValueError("metric='accuracy' needs K >= 2 outputs (argmax over classes), got 1")
    if metric == "accuracy" and y.shape not in (out.shape, out.shape[:-1]):
        raise ValueError(
            f"metric='accuracy' needs labels shaped {tuple(out.shape[:-1])} or class "
            f"probabilities shaped {tuple(out.shape)}, got {tuple(y.shape)} (2 rows)"
        )
    if metric == "mse" and labels:
        raise ValueError(
            "metric='mse' needs targets shaped like the outputs (N, K), not class labels (N,); "
            "use metric='accuracy' or one-hot / probability targets"
        )
    if metric == "mse" and y.shape != out.shape:
        raise ValueError(
            f"metric='mse' needs targets shaped like the outputs {tuple(out.shape)} (2 rows), "
            f"got {tuple(y.shape)}"
        )
