"""Chapter 08 experiments: muTransfer of the learning rate, the init std and the output
multiplier, global-lr SP vs muP, with Adam and with SGD.

The notebook `notebooks/08_mutransfer.py` sweeps `train_mlp` over a grid of learning rates
(or, with `lr_sweep(hparam=...)`, of init stds or output multipliers at a fixed learning
rate), widths and seeds with `ntk.scaling.sweep.lr_sweep`, and reads the result with
`ntk.scaling.sweep.optima` / `lr_drift` and `at_transferred_lr` / `payoff` /
`largest_stable_lr` / `width_slope` / `widening_z` below: the muTransfer payoff (Yang et
al. 2022, arXiv:2203.03466) is the wide muP model trained at the learning rate tuned on the
narrow one, compared with the wide global-lr SP model at its own optimum.

"sp" in the tables is global-lr SP: the standard init N(0, sigma^2 / fan_in) and one learning
rate for every parameter (not Everett et al.'s per-layer SP); `LABELS` spells it out.
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
HE_STD = math.sqrt(2)  # He init: N(0, 2 / fan_in)
LABELS = {"sp": "global-lr SP", "mup": "muP"}  # the parametrization keys, as the page names them


def labelled(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with its parametrization keys spelled out (`LABELS`), for printing."""
    if "parametrization" not in table.columns:
        raise ValueError("table must have a parametrization column")
    return table.assign(parametrization=table["parametrization"].replace(LABELS))


def train_mlp(
    parametrization: str,
    width: int,
    lr: float,
    seed: int,
    optimizer: str = "adam",
    depth: int = 2,
    *,
    weight_std: float = HE_STD,
    output_mult: float = 1.0,
) -> float:
    """Final training loss of one run (inf if it diverged): global-lr SP ("sp") with
    `optimizer`, muP ("mup") with its mup counterpart (MuAdam / MuSGD).

    A ReLU MLP of `depth` hidden layers, `STEPS` steps on mini-batches of `BATCH` digits with
    the learning rate decayed linearly to 0, scored by its final cross-entropy on the whole
    training set. Global-lr SP is `WideMLP` (init N(0, weight_std^2 / fan_in) in every layer,
    one learning rate); muP is `WideMLP_MuP` (a `MuReadout`), drawn from the same random
    numbers: at the base width `BASE_WIDTH` the two are the same network and MuAdam / MuSGD
    the same optimizer as Adam / SGD, so the two runs are identical there. (The readout starts
    random, not at the zero mup recommends, for that reason.)

    The two hyperparameters besides the learning rate that Yang et al. 2022 (arXiv:2203.03466,
    fig. 4) transfer: `weight_std`, the init std prefactor sigma of every layer (He's sqrt(2)
    by default; muP's readout std is sigma / sqrt(BASE_WIDTH) times its 1/width_mult), and
    `output_mult`, alpha in logits = W (alpha h) + b (muP: alpha / width_mult, `MuReadout`).
    """
    task = digits()  # class labels
    if parametrization == "sp":
        torch.manual_seed(seed)  # the init depends on (seed, width) only
        model = WideMLP(64, width, 10, depth=depth, weight_std=weight_std)
        if output_mult != 1.0:
            # the readout sees alpha h, as a MuReadout with width_mult 1 (bit for bit)
            model.readout.register_forward_pre_hook(lambda _, args: (output_mult * args[0],))
    else:
        model = WideMLP_MuP(
            64,
            width,
            10,
            depth=depth,
            weight_std=weight_std,
            base_width=BASE_WIDTH,
            output_mult=output_mult,
        )
        torch.manual_seed(seed)  # after the base-shape models: the same draws as global-lr SP
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

    "muP, lr tuned at the narrowest width"           (muTransfer),
    "global-lr SP, lr tuned at the narrowest width"  (transfer without muP),
    "global-lr SP, lr tuned at every width"          (its own optimum: a sweep per width).

    Columns: width, then mean and stderr of each, as a (width x (rule, stat)) frame.
    """
    mup = at_transferred_lr(summary, opt, "mup")[1]
    sp = at_transferred_lr(summary, opt, "sp")[1]
    sp_opt = opt[opt["parametrization"] == "sp"].set_index("width")[["loss_opt", "stderr_opt"]]
    sp_opt.columns = ["mean", "stderr"]
    return pd.concat(
        {
            f"{LABELS['mup']}, lr tuned at the narrowest width": mup,
            f"{LABELS['sp']}, lr tuned at the narrowest width": sp,
            f"{LABELS['sp']}, lr tuned at every width": sp_opt,
        },
        axis=1,
    )


def largest_stable_lr(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (parametrization, width), the largest grid log2 learning rate at which no seed
    diverged (finite seed-mean loss): columns parametrization, width, log2_lr_stable.

    Under global-lr SP with SGD it should shrink like 1/n (the tangent kernel grows like n; notebook 06).
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
    log2(width): octaves per doubling of the width. The 1/n law of global-lr SP predicts -1
    for the learning rate, muP 0.

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


def widening_z(summary: pd.DataFrame, parametrization: str) -> pd.Series:
    """Per grid value (log2_lr column), the largest loss increase from one width to the next
    wider one, in combined standard errors: (L(n') - L(n)) / hypot(se(n'), se(n)).

    Negative or below 2 everywhere: wider is better (or no worse beyond the seed noise) at
    every value of the hyperparameter, as Yang et al. 2022 observe for muP (sec. 5: "for any
    fixed HP combination, training performance never decreases with width in muP"). Values
    where a seed diverged at some width give +inf.
    """
    if not {"parametrization", "width", "log2_lr", "mean", "stderr"} <= set(summary.columns):
        raise ValueError("summary must be a summarize() table")
    own = summary[summary["parametrization"] == parametrization]
    if own.empty:
        raise ValueError(f"summary has no rows for parametrization {parametrization!r}")

    def worst(group: pd.DataFrame) -> float:
        g = group.sort_values("width")
        loss, err = g["mean"].to_numpy(dtype=float), g["stderr"].to_numpy(dtype=float)
        if not np.isfinite(loss).all():
            return math.inf
        return float(np.max((loss[1:] - loss[:-1]) / np.hypot(err[1:], err[:-1])))

    return pd.Series({x: worst(g) for x, g in own.groupby("log2_lr", sort=True)}, name="z")
