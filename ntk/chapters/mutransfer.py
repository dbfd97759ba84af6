"""Chapter 08 experiments: muTransfer of the learning rate, SP vs muP, with Adam and with SGD.

The notebook `notebooks/08_mutransfer.py` sweeps `train_mlp` over a grid of learning rates,
widths and seeds with `ntk.scaling.sweep.lr_sweep`, and reads the result with
`ntk.scaling.sweep.optima` / `lr_drift` and `at_transferred_lr` below.
"""

from __future__ import annotations

import functools
import math

import pandas as pd
import torch

from ntk.data import Task, load_digits_task
from ntk.models import WideMLP, WideMLP_MuP
from ntk.training import TrainingDivergedError, train

STEPS, BATCH, BASE = 30, 128, 32


@functools.cache
def digits() -> Task:
    """The chapter's data: standardized 8x8 digits with class labels (deterministic)."""
    return load_digits_task(seed=0)


def train_mlp(
    parametrization: str, width: int, lr: float, seed: int, optimizer: str = "adam", depth: int = 2
) -> float:
    """Final training loss of one run (inf if it diverged): SP with `optimizer`, muP with its
    mup counterpart (MuAdam / MuSGD).

    A ReLU MLP (He init) of `depth` hidden layers, `STEPS` steps on mini-batches of `BATCH`
    digits with the learning rate decayed linearly to 0, scored by its final cross-entropy on
    the whole training set. SP is `WideMLP`; muP is `WideMLP_MuP` (`MuReadout`, zero readout
    at init), which equals SP at the base width `BASE`.
    """
    task = digits()
    torch.manual_seed(seed)  # the init depends on (seed, width) only
    if parametrization == "sp":
        model = WideMLP(64, width, 10, depth=depth, weight_std=math.sqrt(2))
    else:
        model = WideMLP_MuP(
            64,
            width,
            10,
            depth=depth,
            weight_std=math.sqrt(2),
            base_width=BASE,
            readout_zero_init=True,
        )
        optimizer = "mu" + optimizer
    try:
        history = train(
            model,
            task.x_train,
            task.y_train,
            loss="cross_entropy",
            optimizer=optimizer,
            lr=lr,
            steps=STEPS,
            batch_size=BATCH,
            log_every=STEPS,
            seed=seed,
            track_features=False,
            track_weights=False,
            progress=False,
            lr_schedule=lambda step: 1 - step / STEPS,
        )
    except TrainingDivergedError:
        return math.inf
    return history.final()["train_loss"]


def at_transferred_lr(summary: pd.DataFrame, opt: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """The muP optimum at the narrowest width (the learning rate to transfer), and the seed
    mean and standard error of the muP loss at that learning rate for every width."""
    mup_opt = opt[opt["parametrization"] == "mup"].set_index("width")
    transferred = float(mup_opt.loc[mup_opt.index.min(), "log2_lr_opt"])
    rows = summary[(summary["parametrization"] == "mup") & (summary["log2_lr"] == transferred)]
    return transferred, rows.set_index("width")[["mean", "stderr"]]
