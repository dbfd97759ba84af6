"""Training with feature-learning diagnostics.

`loop` (train), `config` (TrainConfig, History, StepState, TrainingDivergedError, OPTIMIZERS),
`inputs` (checks of the data against the model), `losses` (losses and metrics), `optim`
(optimizers by name, mup's included), `diagnostics` (relative changes of features, weights and
the NTK), `callbacks` (EMA, OutputRecorder).
"""

from ntk.training.callbacks import EMA, OutputRecorder
from ntk.training.config import (
    LOSSES,
    METRICS,
    OPTIMIZERS,
    Callback,
    History,
    StepState,
    TrainConfig,
    TrainingDivergedError,
)
from ntk.training.diagnostics import probe_activations, relative_change
from ntk.training.loop import train
from ntk.training.optim import make_optimizer

__all__ = [
    "EMA",
    "LOSSES",
    "METRICS",
    "OPTIMIZERS",
    "Callback",
    "History",
    "OutputRecorder",
    "StepState",
    "TrainConfig",
    "TrainingDivergedError",
    "make_optimizer",
    "probe_activations",
    "relative_change",
    "train",
]
