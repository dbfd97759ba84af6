"""Chapter 08 experiments: muTransfer of the learning rate, SP vs muP, with Adam and with SGD.

The notebook `notebooks/08_mutransfer.py` sweeps `train_mlp` over a grid of learning rates,
widths and seeds with `ntk.scaling.sweep.lr_sweep`, and reads the result with
`ntk.scaling.sweep.optima` / `lr_drift` and `at_transferred_lr` / `payoff` /
`largest_stable_lr` / `width_slope` below: the muTransfer payoff (Yang et al. 2022, arXiv:2203.03466) is the wide muP model trained at the
learning rate tuned on the narrow one, compared with the wide SP model at its own optimum.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ntk.data import digits
from ntk.models import WideMLP, WideMLP_MuP
from ntk.training import TrainingDivergedError, train

STEPS, BATCH, BASE_WIDTH = 30, 128, 32


def train_mlp(
    parametrization: str, width: int, lr: float, seed: int, optimizer: str = "adam", depth: int = 2
) -> float:
    """Final training loss of one run (inf if it diverged): SP with `optimizer`, muP with its
    mup counterpart (MuAdam / MuSGD).

    A ReLU MLP (He init) of `depth` hidden layers, `STEPS` steps on mini-batches of `BATCH`
    digits with the learning rate decayed linearly to 0, scored by its final cross-entropy on
    the whole training set. SP is `WideMLP`; muP is `WideMLP_MuP` (a `MuReadout`), drawn from
    the same random numbers: at the base width `BASE_WIDTH` the two are the same network and
    MuAdam / MuSGD the same optimizer as Adam / SGD, so the two runs are identical there.
    (The readout starts random, not at the zero mup recommends, for that reason.)
    """
    task = digits()  # class labels
    if parametrization == "sp":
        torch.manual_seed(seed)  # the init depends on (seed, width) only
        model = WideMLP(64, width, 10, depth=depth, weight_std=math.sqrt(2))
    else:
        model = WideMLP_MuP(
            64, width, 10, depth=depth, weight_std=math.sqrt(2), base_width=BASE_WIDTH
        )
        torch.manual_seed(seed)  # after the base-shape models: the same draws as SP
        model.reset_parameters()
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


def at_transferred_lr(
    summary: pd.DataFrame, opt: pd.DataFrame, parametrization: str = "mup"
) -> tuple[float, pd.DataFrame]:
    """The optimum of `parametrization` at the narrowest width (the learning rate to
    transfer), and the seed mean and standard error of its loss at that learning rate for
    every width (inf where a seed diverged)."""
    own = opt[opt["parametrization"] == parametrization].set_index("width")
    if own.empty:
        raise ValueError(f"opt has no rows for parametrization {parametrization!r}")
    transferred = float(own.loc[own.index.min(), "log2_lr_opt"])
    rows = summary[
        (summary["parametrization"] == parametrization) & (summary["log2_lr"] == transferred)
    ]
    return transferred, rows.set_index("width")[["mean", "stderr"]]


def payoff(summary: pd.DataFrame, opt: pd.DataFrame) -> pd.DataFrame:
    """Loss (seed mean, standard error) per width of three ways to pick the learning rate:

    "mup, lr tuned at the narrowest width"  (muTransfer),
    "sp, lr tuned at the narrowest width"   (transfer without muP),
    "sp, lr tuned at every width"           (SP's own optimum: a full sweep per width).

    Columns: width, then mean and stderr of each, as a (width x (rule, stat)) frame.
    """
    mup = at_transferred_lr(summary, opt, "mup")[1]
    sp = at_transferred_lr(summary, opt, "sp")[1]
    sp_opt = opt[opt["parametrization"] == "sp"].set_index("width")[["loss_opt", "stderr_opt"]]
    sp_opt.columns = ["mean", "stderr"]
    return pd.concat(
        {
            "mup, lr tuned at the narrowest width": mup,
            "sp, lr tuned at the narrowest width": sp,
            "sp, lr tuned at every width": sp_opt,
        },
        axis=1,
    )


def largest_stable_lr(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (parametrization, width), the largest grid log2 learning rate at which no seed
    diverged (finite seed-mean loss): columns parametrization, width, log2_lr_stable.

    Under SP with SGD it should shrink like 1/n (the tangent kernel grows like n; notebook 06).
    """
    if not {"parametrization", "width", "log2_lr", "mean"} <= set(summary.columns):
        raise ValueError("summary must be a summarize() table")
    stable = summary[np.isfinite(summary["mean"])]
    return (
        stable.groupby(["parametrization", "width"], sort=True)["log2_lr"]
        .max()
        .rename("log2_lr_stable")
        .reset_index()
    )


def width_slope(table: pd.DataFrame, column: str) -> pd.Series:
    """Per parametrization, the least-squares slope of `column` (a log2 learning rate) against
    log2(width): octaves per doubling of the width. The 1/n law of SP predicts -1, muP 0.

    The signed trend, where `lr_drift` gives only the range. NaN if a value is not finite.
    """
    if not {"parametrization", "width", column} <= set(table.columns):
        raise ValueError(f"table must have columns parametrization, width and {column!r}")

    def slope(group: pd.DataFrame) -> float:
        y = group[column].to_numpy(dtype=float)
        if len(y) < 2 or not np.isfinite(y).all():
            return math.nan
        return float(np.polyfit(np.log2(group["width"].to_numpy(dtype=float)), y, 1)[0])

    return pd.Series(
        {p: slope(g) for p, g in table.groupby("parametrization", sort=True)}, name="slope"
    )
