"""Reading a muTransfer sweep: seed statistics, optimal learning rates, their drift, figures.

`summarize` gives per (parametrization, width, log2 LR) the seed mean and standard error;
`optima` finds, per width, the learning rate with the lowest seed-mean loss and its bootstrap
uncertainty over seeds; `lr_drift` summarizes how far it moves across widths (Yang et al.
2022, arXiv:2203.03466: under muP it should not, under SP it does); `plot_sweep` and
`plot_transfer` draw the standard figure. Diverged runs (NaN or inf loss) count as infinitely
bad. Input: a table with the columns of `lr_sweep`'s result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ntk._checks import check_positive_int
from ntk.scaling.sweep_store import COLUMNS


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Seed statistics per (parametrization, width, log2_lr): mean, stderr, n, diverged.

    A cell where any seed diverged (non-finite loss) has mean inf: the learning rate is not
    usable at that width. stderr is the standard deviation over seeds / sqrt(n) (NaN for one
    seed).
    """
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"df lacks columns {sorted(missing)}; pass an lr_sweep() table")
    loss = df["loss"].astype(float)
    d = df.assign(loss=loss.where(np.isfinite(loss), np.inf), bad=~np.isfinite(loss))
    g = d.groupby(["parametrization", "width", "log2_lr"], sort=True)
    out = pd.DataFrame(
        {
            "mean": g["loss"].mean(),
            "std": g["loss"].std(ddof=1),
            "n": g["loss"].size(),
            "diverged": g["bad"].sum().astype(int),
        }
    )
    out["stderr"] = out["std"] / np.sqrt(out["n"])
    out.loc[out["diverged"] > 0, ["mean", "std", "stderr"]] = [np.inf, np.nan, np.nan]
    return out.reset_index()


def optima(df: pd.DataFrame, *, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per (parametrization, width): the log2 LR of the lowest seed-mean loss, and its spread.

    Columns: parametrization, width, log2_lr_opt (the grid argmin of the seed mean; NaN if
    every learning rate diverged), loss_opt, stderr_opt, log2_lr_std (standard deviation of
    the argmin over `n_boot` bootstrap resamplings of the seeds, the same resampled seeds
    for every learning rate; 0 when the argmin never moves), grid_step (the grid spacing
    around the optimum: the resolution below which differences mean nothing), at_edge
    (the optimum is the smallest or largest LR tried: the true optimum may lie outside).
    """
    check_positive_int("n_boot", n_boot, minimum=0)
    stats = summarize(df)
    rng = np.random.default_rng(seed)
    rows = []
    for (p, w), s in stats.groupby(["parametrization", "width"], sort=True):
        lrs = s["log2_lr"].to_numpy()
        i = int(np.argmin(s["mean"].to_numpy())) if np.isfinite(s["mean"]).any() else -1
        sub = df[(df["parametrization"] == p) & (df["width"] == w)]
        table = sub.pivot(index="seed", columns="log2_lr", values="loss").loc[:, lrs]
        losses = table.to_numpy(dtype=float)  # (seeds, lrs)
        losses = np.where(np.isfinite(losses), losses, np.inf)
        boot = []
        for _ in range(n_boot):
            pick = rng.integers(0, losses.shape[0], losses.shape[0])
            mean = losses[pick].mean(axis=0)
            if np.isfinite(mean).any():
                boot.append(lrs[int(np.argmin(mean))])
        spacing = np.diff(lrs)
        step = float(np.median(spacing)) if len(spacing) else math.nan
        if i >= 0 and len(spacing):
            around = spacing[max(i - 1, 0) : i + 1]
            step = float(around.max())
        rows.append(
            dict(
                parametrization=p,
                width=w,
                log2_lr_opt=float(lrs[i]) if i >= 0 else math.nan,
                loss_opt=float(s["mean"].iloc[i]) if i >= 0 else math.nan,
                stderr_opt=float(s["stderr"].iloc[i]) if i >= 0 else math.nan,
                log2_lr_std=float(np.std(boot)) if boot else math.nan,
                grid_step=step,
                at_edge=bool(i in (0, len(lrs) - 1)),
            )
        )
    return pd.DataFrame(rows)


def lr_drift(opt: pd.DataFrame) -> pd.Series:
    """Per parametrization, how far the optimal log2 LR moves across widths: max - min.

    In log2 units, so 1.0 is a factor 2 in the learning rate (one step of a unit grid).
    `opt` is an `optima()` table; NaN if some width has no finite optimum.
    """
    if not {"parametrization", "log2_lr_opt"} <= set(opt.columns):
        raise ValueError("opt must be an optima() table")
    return (
        opt.groupby("parametrization", sort=True)["log2_lr_opt"]
        .agg(lambda s: float(s.max() - s.min()) if s.notna().all() else math.nan)
        .rename("drift")
    )


def plot_sweep(
    df: pd.DataFrame,
    parametrization: str | None = None,
    *,
    ax=None,
    title: str | None = None,
    ylim: tuple[float, float] | None = None,
):
    """Loss against log2 LR, one curve per width (viridis, narrow dark to wide light).

    Curves show the seed mean with a +- standard error band; each width's optimum is a star.
    Diverged learning rates are left out of the curve. Returns the axes.
    """
    import matplotlib.pyplot as plt

    if parametrization is None:
        names = df["parametrization"].unique()
        if len(names) != 1:
            raise ValueError(f"parametrization must be one of {list(names)} for a mixed table")
        parametrization = names[0]
    sub = df[df["parametrization"] == parametrization]
    if sub.empty:
        raise ValueError(f"no rows for parametrization {parametrization!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.5))
    stats = summarize(sub)
    opt = optima(sub, n_boot=0).set_index("width")
    widths = sorted(stats["width"].unique())
    colors = plt.cm.viridis(np.linspace(0, 0.95, len(widths)))
    for w, color in zip(widths, colors, strict=True):
        s = stats[(stats["width"] == w) & np.isfinite(stats["mean"])]
        err = s["stderr"].fillna(0.0).to_numpy()
        ax.plot(s["log2_lr"], s["mean"], color=color, label=f"width {w}")
        ax.fill_between(
            s["log2_lr"], s["mean"] - err, s["mean"] + err, color=color, alpha=0.25, linewidth=0
        )
        o = opt.loc[w]
        if np.isfinite(o["log2_lr_opt"]):
            ax.plot(
                [o["log2_lr_opt"]],
                [o["loss_opt"]],
                marker="*",
                ms=11,
                color=color,
                markeredgecolor="black",
                markeredgewidth=0.5,
            )
    ax.set_xlabel("log2 learning rate")
    ax.set_ylabel("loss")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title if title is not None else str(parametrization))
    ax.legend(fontsize=7)
    return ax


def plot_transfer(
    df: pd.DataFrame, parametrizations: Sequence[str] | None = None, *, titles=None, ylim=None
):
    """The classic muTransfer figure: one `plot_sweep` panel per parametrization, shared y.

    Returns the figure.
    """
    import matplotlib.pyplot as plt

    names = (
        list(dict.fromkeys(df["parametrization"]))
        if parametrizations is None
        else list(parametrizations)
    )
    fig, axes = plt.subplots(
        1, len(names), figsize=(4.5 * len(names), 3.6), sharey=True, squeeze=False
    )
    for k, (ax, p) in enumerate(zip(axes[0], names, strict=True)):
        plot_sweep(df, p, ax=ax, title=None if titles is None else titles[k], ylim=ylim)
        if k:
            ax.set_ylabel("")
    fig.tight_layout()
    return fig
