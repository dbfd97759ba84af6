"""Chapter 09 experiments: muP on a GPT, its coordinate check and its learning-rate transfer.

The notebook `notebooks/09_mup_transformer.py` runs `NOTEBOOK`, a scale that fits a few
minutes on two CPU cores; `python -m ntk.chapters.mup_transformer` runs `FULL` (or
`--scale notebook`) and writes the two figures to figures/:

    09_coord_check.png   update size of every module group against width, SP vs muP
    09_mutransfer.png    validation loss against learning rate, one curve per width, SP | muP

The runs themselves are `ntk.lm.coord.gpt_coord_check` and `ntk.lm.transfer.train_run`;
this module holds the two scales, the readouts of the claims and the figures.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ntk.chapters import _cli
from ntk.lm.coord import HIDDEN, fit_groups, gpt_coord_check
from ntk.lm.transfer import LMSetup, build, train_run, wider_is_better
from ntk.scaling.coord_check import plot_coord_check
from ntk.scaling.sweep import lr_drift, lr_sweep, optima, plot_transfer, summarize


@dataclass(frozen=True)
class Scale:
    """Both experiments' grids.

    The coordinate check trains `coord_steps` AdamW steps at 2^coord_log2_lr on one fixed
    batch of the character-level corpus; its claims are read at `coord_checked_steps`. The
    transfer sweep trains `transfer` runs over widths x log2 learning rates x seeds.
    """

    coord: LMSetup
    coord_widths: tuple[int, ...]
    coord_log2_lr: float
    coord_steps: int
    coord_checked_steps: tuple[int, ...]
    transfer: LMSetup
    widths: tuple[int, ...]
    log2_lrs: tuple[float, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    coord_seeds: tuple[int, ...] = (0, 1, 2)
    coord_batch_size: int = 4
    note: str = field(default="", compare=False)


COORD = LMSetup(level="char", n_layer=2, n_head=4, block_size=32, base_width=64)
COORD_GRID = dict(
    coord=COORD,
    coord_widths=(64, 128, 256, 512),
    coord_log2_lr=-4.0,
    coord_steps=8,
    coord_checked_steps=(5, 6, 7, 8),
)
NOTEBOOK = Scale(
    **COORD_GRID,
    transfer=LMSetup(
        level="word",
        n_layer=1,
        n_head=2,
        block_size=16,
        batch_size=32,
        steps=100,
        warmup=10,
        base_width=16,
    ),
    widths=(16, 32, 64, 128),
    log2_lrs=tuple(float(a) for a in range(-6, 0)),
    note="notebook scale",
)
FULL = Scale(
    **COORD_GRID,
    transfer=LMSetup(
        level="word",
        n_layer=2,
        n_head=4,
        block_size=32,
        batch_size=32,
        steps=300,
        warmup=30,
        base_width=64,
    ),
    widths=(64, 128, 256, 512),
    log2_lrs=tuple(float(a) for a in range(-10, 0)),
    note="full scale",
)
SMOKE = Scale(  # seconds: for tests of the code path, claims not expected to hold
    coord=LMSetup(level="char", n_layer=2, n_head=2, block_size=8, base_width=16),
    coord_widths=(16, 32),
    coord_log2_lr=-4.0,
    coord_steps=2,
    coord_checked_steps=(1, 2),
    coord_seeds=(0,),
    coord_batch_size=2,
    transfer=LMSetup(
        level="word",
        n_layer=1,
        n_head=2,
        block_size=8,
        batch_size=4,
        steps=4,
        warmup=1,
        base_width=16,
        val_batches=1,
        val_batch_size=4,
    ),
    widths=(16, 32),
    log2_lrs=(-4.0, -3.0),
    seeds=(0, 1),
    note="smoke test",
)
SCALES = {"notebook": NOTEBOOK, "full": FULL, "smoke": SMOKE}


# ---- coordinate check ---------------------------------------------------------------------
READOUT = "readout (logits)"
ZERO_INIT = ("query", "attention logits", READOUT)  # muP's zero-initialized outputs


def _coord_run(scale: Scale, parametrization: str, **kwargs) -> pd.DataFrame:
    """`gpt_coord_check` at the scale's widths, learning rate, steps, seeds and batch."""
    return gpt_coord_check(
        parametrization,
        scale.coord_widths,
        lr=2.0**scale.coord_log2_lr,
        setup=scale.coord,
        steps=scale.coord_steps,
        seeds=scale.coord_seeds,
        batch_size=scale.coord_batch_size,
        **kwargs,
    )


def coordinate_check(scale: Scale) -> pd.DataFrame:
    """The GPT's coordinate check under global-lr SP and muP, one table."""
    return pd.concat([_coord_run(scale, p) for p in ("sp", "mup")], ignore_index=True)


BROKEN_ATTENTION = "muP, 1/sqrt(d) attention"  # muP with its attention rule switched off


def broken_attention_check(scale: Scale) -> pd.DataFrame:
    """The coordinate check of a deliberately broken muP: every muP rule but the attention
    scale, which stays 1/sqrt(d) (`attention_scale="keep"`). The heads widen with n (fixed
    n_head), so once q and k align their dot product grows like d ~ n and the logits like
    sqrt(n); only the attention-logit group should leave muP's flat band."""
    broken = functools.partial(build, attention_scale="keep")
    return _coord_run(scale, "mup", build_fn=broken).assign(parametrization=BROKEN_ATTENTION)


def coord_exponents(df: pd.DataFrame) -> pd.DataFrame:
    """`fit_groups` per parametrization: columns parametrization, group, quantity, step,
    mean, min, max."""
    fits = [fit_groups(d).assign(parametrization=p) for p, d in df.groupby("parametrization")]
    return pd.concat(fits, ignore_index=True)


def coord_claims(fits: pd.DataFrame, steps: Sequence[int]) -> dict[str, float]:
    """The extremes the claims are about, at each of `steps`, both quantities.

    A group's exponent is the mean over its modules (one per block) of their fitted slopes:
    mup_max_abs is muP's largest |group exponent| over every recorded group, sp_hidden_min
    SP's smallest group exponent over the hidden groups, sp_readout_min SP's smallest exponent
    of the readout's logits; mup_module_max_abs is muP's largest |slope| of a single module
    (noisier: one block, three seeds).
    """
    sel = fits[fits["step"].isin(steps)]
    mup, sp = sel[sel["parametrization"] == "mup"], sel[sel["parametrization"] == "sp"]
    sp_hidden = sp[sp["group"].isin(HIDDEN)]
    sp_readout = sp[sp["group"] == READOUT]
    if mup.empty or sp_hidden.empty or sp_readout.empty:
        raise ValueError(f"no fitted exponents at steps {list(steps)}")
    return dict(
        mup_max_abs=float(mup["mean"].abs().max()),
        sp_hidden_min=float(sp_hidden["mean"].min()),
        sp_readout_min=float(sp_readout["mean"].min()),
        mup_module_max_abs=float(np.max(np.abs(mup[["min", "max"]].to_numpy()))),
        mup_groups=int(mup["group"].nunique()),
        sp_hidden_groups=int(sp_hidden["group"].nunique()),
    )


def zero_init_steps(df: pd.DataFrame) -> dict[str, int | None]:
    """For muP's zero-initialized groups (query, hence the attention logits, and readout): the
    first step at which the output is nonzero for every width and seed, None unless it is
    exactly zero for all of them at every earlier step (and nonzero at some step).

    Step 0 is the initialization. The first update moves only the readout: with the readout at
    zero no gradient reaches the modules behind it, so the query moves at the second update.
    """
    out: dict[str, int | None] = {}
    mup = df[df["parametrization"] == "mup"]
    for group in ZERO_INIT:
        size = mup[mup["group"] == group].groupby("step")["act_size"]
        zero, nonzero = size.max() == 0, size.min() > 0
        first = nonzero.index[nonzero.to_numpy()].min() if nonzero.any() else None
        ok = first is not None and bool(zero[zero.index < first].all())
        out[group] = int(first) if ok else None
    return out


def exponent_table(fits: pd.DataFrame, steps: Sequence[int]) -> pd.DataFrame:
    """Group x (parametrization, quantity): the mean exponent over `steps` and blocks."""
    sel = fits[fits["step"].isin(steps)]
    table = sel.pivot_table(
        index="group", columns=["parametrization", "quantity"], values="mean", sort=False
    )
    return table


def by_group(df: pd.DataFrame) -> pd.DataFrame:
    """Coordinate-check records averaged over the blocks of each group (`module` := group),
    for one line per group in `plot_coord_check`."""
    keys = ["parametrization", "group", "width", "step", "seed"]
    out = df.groupby(keys, sort=False)[["act_size", "delta_size"]].mean().reset_index()
    return out.rename(columns={"group": "module"})


def plot_coordinates(df: pd.DataFrame, steps: Sequence[int], quantity: str = "delta_size"):
    """Two rows (global-lr SP, muP) of `plot_coord_check` panels at `steps`: one line per group."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(steps), figsize=(3.3 * len(steps), 6.0), sharey="row")
    groups = by_group(df)
    for row, (p, title) in enumerate([("sp", "global-lr SP"), ("mup", "muP")]):
        sub = groups[groups["parametrization"] == p]
        plot_coord_check(sub, quantity, steps=steps, axes=list(axes[row]))
        axes[row][0].set_ylabel(f"{title}: {quantity}")
        for ax in axes[row][:-1]:
            legend = ax.get_legend()
            if legend is not None:
                legend.remove()
    fig.tight_layout()
    return fig


# ---- learning-rate transfer ---------------------------------------------------------------
def transfer_sweep(
    scale: Scale, *, cache=None, workers: int = 2, progress: bool = False
) -> pd.DataFrame:
    """`lr_sweep` of `train_run` over the scale's grid, SP (one lr) and muP."""
    return lr_sweep(
        functools.partial(train_run, setup=scale.transfer),
        log2_lrs=scale.log2_lrs,
        widths=scale.widths,
        seeds=scale.seeds,
        parametrizations=("sp", "mup"),
        cache=cache,
        workers=workers,
        progress=progress,
    )


def transfer_claims(results: pd.DataFrame) -> dict:
    """What the transfer claims are about, from an `lr_sweep` table.

    drift_steps: range of the optimal log2 lr over the widths, in grid steps, per
    parametrization; sp_wide_diverges: the widest SP model diverged at the narrowest SP
    model's optimum; transferred: the log2 lr tuned on the narrowest muP model;
    margin_se: (narrowest - widest muP loss at that lr) / their combined standard error;
    drops_se: the same for each pair of neighbouring widths, narrow to wide;
    near_drift_steps: the drift robust to near-ties (`near_drift`); opt_slope: the least-squares
    slope of the optimal log2 lr against log2 width, per parametrization.
    """
    opt = optima(results, n_boot=200, seed=0)
    step = float(np.diff(sorted(results["log2_lr"].unique())).max())
    drift = (lr_drift(opt) / step).to_dict()
    summary = summarize(results)
    sp_opt = opt[opt["parametrization"] == "sp"].set_index("width")["log2_lr_opt"]
    narrow, wide = sp_opt.index.min(), sp_opt.index.max()
    at = summary[(summary["parametrization"] == "sp") & (summary["log2_lr"] == sp_opt[narrow])]
    sp_wide_diverges = bool(at.set_index("width").loc[wide, "diverged"] > 0)
    mup_opt = opt[opt["parametrization"] == "mup"].set_index("width")["log2_lr_opt"]
    transferred = float(mup_opt.loc[mup_opt.index.min()])
    at_transfer = wider_is_better(summary, transferred)
    first, last = at_transfer.iloc[0], at_transfer.iloc[-1]
    margin = (first["mean"] - last["mean"]) / math.hypot(first["stderr"], last["stderr"])
    m, se = at_transfer["mean"].to_numpy(), at_transfer["stderr"].to_numpy()
    drops = (m[:-1] - m[1:]) / np.hypot(se[:-1], se[1:])
    slope = {
        p: float(np.polyfit(np.log2(g["width"]), g["log2_lr_opt"], 1)[0])
        for p, g in opt.groupby("parametrization")
    }
    return dict(
        optima=opt,
        drift_steps=drift,
        sp_wide_diverges=sp_wide_diverges,
        transferred=transferred,
        at_transfer=at_transfer,
        margin_se=float(margin),
        drops_se=[float(d) for d in drops],
        near_drift_steps={p: near_drift(summary, p) / step for p in sorted(slope)},
        opt_slope=slope,
        at_edge=bool(opt["at_edge"].any()),
    )


def near_drift(summary: pd.DataFrame, parametrization: str, n_se: float = 2.0) -> float:
    """The smallest log2-lr range that holds a near-optimal learning rate of every width.

    A learning rate is near-optimal at a width if its seed-mean loss is within `n_se` combined
    standard errors of the width's best. Unlike the drift of the argmin, this does not jump by
    a grid step when two learning rates are tied within the seeds' noise.
    """
    rows = summary[(summary["parametrization"] == parametrization) & np.isfinite(summary["mean"])]
    near = []
    for _, g in rows.groupby("width"):
        best = g.loc[g["mean"].idxmin()]
        tol = n_se * np.hypot(g["stderr"].fillna(0), best["stderr"])
        near.append(np.sort(g.loc[g["mean"] <= best["mean"] + tol, "log2_lr"].to_numpy()))
    if not near:
        raise ValueError(f"no finite {parametrization!r} rows in the summary")
    spans = []
    for lo in np.unique(np.concatenate(near)):
        above = [s[s >= lo] for s in near]
        if all(len(a) for a in above):
            spans.append(max(a[0] for a in above) - lo)
    return float(min(spans))


def plot_mutransfer(results: pd.DataFrame, ylim: tuple[float, float] | None = None):
    """The classic two panels: validation loss against log2 lr, one curve per width."""
    fig = plot_transfer(
        results, ["sp", "mup"], titles=["global-lr SP, AdamW", "muP, AdamW"], ylim=ylim
    )
    fig.axes[0].set_ylabel("validation loss (bits per token)")
    return fig


# ---- script ---------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict:
    """Run one scale of both experiments, print the claims, write the figures."""
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="full", help="experiment size")
    p.add_argument("--workers", type=int, default=2, help="processes for the sweep")
    p.add_argument("--cache", type=Path, default=None, help="SQLite cache of the sweep (resumable)")
    args = p.parse_args(argv)
    start = _cli.start(args)
    scale = SCALES[args.scale]
    coords = coordinate_check(scale)
    fits = coord_exponents(coords)
    checked = scale.coord_checked_steps
    print(exponent_table(fits, checked).round(2).to_string(), flush=True)
    print(coord_claims(fits, checked), flush=True)
    fig = plot_coordinates(coords, (2, checked[0], checked[-1]))
    names = [_cli.save(fig, args.out, "09_coord_check.png").name]
    results = transfer_sweep(scale, cache=args.cache, workers=args.workers, progress=True)
    claims = transfer_claims(results)
    print(claims["optima"].round(4).to_string(index=False))
    summary = {k: v for k, v in claims.items() if k not in ("optima", "at_transfer")}
    print(summary, "\n", claims["at_transfer"].round(4).to_string(), flush=True)
    names.append(_cli.save(plot_mutransfer(results), args.out, "09_mutransfer.png").name)
    _cli.finish(args.out, names, start)
    return dict(coords=coords, fits=fits, results=results, claims=claims)


if __name__ == "__main__":
    _cli.run(main)
