"""What `train` is given and what it returns: `TrainConfig`, `History`, `StepState`."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ntk._checks import check_bool, check_choice, check_nonnegative, check_positive_int
from ntk.errors import TrainingDivergedError

__all__ = ["Callback", "History", "StepState", "TrainConfig", "TrainingDivergedError"]

# Optimizer names `train` builds itself (musgd / muadam: mup.optim, need mup base shapes).
OPTIMIZERS = ("sgd", "adam", "musgd", "muadam")
# One meaning per name: the loss "half_mse" is 0.5 * mean((f - y)^2) (the kernel-regression
# convention), the metric "mse" is mean((f - y)^2).
LOSSES = ("half_mse", "cross_entropy")
METRICS = ("accuracy", "mse", "none")


@dataclass
class TrainConfig:
    """Hyperparameters of `train` (all plain values, so a config can be logged or swept)."""

    steps: int = 1000
    lr: float = 0.1
    optimizer: str = "sgd"  # "sgd" | "adam" | "musgd" | "muadam" (mup.optim, needs base shapes)
    momentum: float = 0.0  # sgd / musgd only
    weight_decay: float = 0.0
    loss: str = "half_mse"  # 0.5 * mean((f - y)^2) | "cross_entropy" (train's loss_fn wins)
    # None -> "accuracy" for cross_entropy, "none" (not computed) with a loss_fn, else "mse"
    metric: str | None = None
    batch_size: int | None = None  # None = full batch
    log_every: int = 10
    seed: int = 0
    probe_size: int = 64  # first rows of x_train used as the fixed probe batch
    track_features: bool = True
    track_weights: bool = True
    track_ntk: bool = False
    ntk_probe_size: int = 16
    progress: bool | None = None  # tqdm bar; None -> shown when steps >= 1000

    def validate(self) -> TrainConfig:
        """Check every field (ValueError / TypeError naming it); return self."""
        check_positive_int("steps", self.steps, minimum=0)
        check_nonnegative("lr", self.lr)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_nonnegative("momentum", self.momentum)
        check_nonnegative("weight_decay", self.weight_decay)
        if self.loss == "mse":  # the old name of the half-MSE loss, kept one release
            warnings.warn(
                "loss='mse' is now spelled loss='half_mse' (0.5 * mean((f - y)^2)); the metric "
                "'mse' is mean((f - y)^2)",
                DeprecationWarning,
                stacklevel=3,
            )
            self.loss = "half_mse"
        check_choice("loss", self.loss, LOSSES)
        if self.metric is not None:
            check_choice("metric", self.metric, METRICS)
        if self.batch_size is not None:
            check_positive_int("batch_size", self.batch_size)
        check_positive_int("log_every", self.log_every)
        check_positive_int("seed", self.seed, minimum=0)
        check_positive_int("probe_size", self.probe_size)
        check_positive_int("ntk_probe_size", self.ntk_probe_size)
        for name in ("track_features", "track_weights", "track_ntk"):
            check_bool(name, getattr(self, name))
        if self.progress is not None:
            check_bool("progress", self.progress)
        return self


@dataclass
class History:
    """What `train` recorded, one entry per log step (lists of floats, ready for plotting)."""

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)  # nan without test data
    train_metric: list[float] = field(default_factory=list)
    test_metric: list[float] = field(default_factory=list)
    feature_change: dict[str, list[float]] = field(default_factory=dict)
    weight_change: dict[str, list[float]] = field(default_factory=dict)
    ntk_change: list[float] = field(default_factory=list)
    metric_name: str = "mse"
    wall_time: float = 0.0  # seconds spent in `train`, diagnostics included

    def final(self) -> dict[str, float]:
        """The last logged value of every scalar series."""
        out = {
            name: getattr(self, name)[-1]
            for name in ("step", "train_loss", "test_loss", "train_metric", "test_metric")
            if getattr(self, name)
        }
        out.update({f"feature_change/{k}": v[-1] for k, v in self.feature_change.items()})
        out.update({f"weight_change/{k}": v[-1] for k, v in self.weight_change.items()})
        if self.ntk_change:
            out["ntk_change"] = self.ntk_change[-1]
        return out


@dataclass
class StepState:
    """Passed to callbacks after each update; `step` = number of updates done."""

    step: int
    loss: float  # loss of the batch used by this update (before it)
    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    config: TrainConfig


# A callback runs after every update; returning True stops training.
Callback = Callable[[StepState], bool | None]
