"""muTransfer sweeps: learning rate x width x seed x parametrization, cached and resumable.

The claim under test (Yang et al. 2022, "Tensor Programs V: Tuning Large Neural Networks via
Zero-Shot Hyperparameter Transfer", arXiv:2203.03466): under muP the optimal learning rate is
(asymptotically) independent of the width, so it can be tuned on a narrow model and reused on
a wide one, and at that learning rate wider is better. Under the standard parametrization the
optimum drifts with width (for Adam roughly like 1 / width in the hidden and readout layers).

`lr_sweep` runs a user function `train_fn(parametrization=, width=, lr=, seed=) -> final loss`
on every cell of a grid of log2 learning rates, appending each result to a CSV file as it
finishes, so an interrupted sweep resumes where it stopped. `optima` finds, per width, the
learning rate with the lowest seed-mean loss and its bootstrap uncertainty over seeds;
`lr_drift` summarizes how far it moves across widths; `plot_sweep` draws the standard figure.
Diverged runs (NaN or inf loss) are kept as they came and count as infinitely bad.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ntk._checks import check_callable, check_positive_int

KEYS = ["parametrization", "width", "log2_lr", "seed"]
COLUMNS = [*KEYS, "lr", "loss"]
TrainFn = Callable[..., float]


def _key(parametrization, width, log2_lr, seed) -> tuple:
    # log2 learning rates are floats: compare them rounded, so 0.1 + 0.2 matches 0.3
    return (str(parametrization), int(width), round(float(log2_lr), 9), int(seed))


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; threads inside would oversubscribe


def _run_cell(train_fn: TrainFn, parametrization, width, log2_lr, seed) -> float:
    loss = train_fn(parametrization=parametrization, width=width, lr=2.0**log2_lr, seed=seed)
    try:
        return float(loss)
    except (TypeError, ValueError) as err:
        raise TypeError(f"train_fn must return a float loss, got {type(loss).__name__}") from err


def _read_cache(path: Path) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.read_csv(path, dtype={"parametrization": str})
    if list(df.columns) != COLUMNS:
        raise ValueError(f"cache {path} has columns {list(df.columns)}, expected {COLUMNS}")
    return df


def lr_sweep(
    train_fn: TrainFn,
    *,
    log2_lrs: Sequence[float],
    widths: Sequence[int],
    seeds: Sequence[int] = (0,),
    parametrizations: Sequence[str] = ("sp", "mup"),
    cache: str | os.PathLike | None = None,
    workers: int = 1,
    progress: bool = True,
    mp_context: str | None = None,
) -> pd.DataFrame:
    """Run `train_fn` on every (parametrization, width, log2 LR, seed) cell not yet cached.

    Args:
        train_fn: called as `train_fn(parametrization=p, width=n, lr=2**log2_lr, seed=s)`;
            returns the final loss (a float; NaN or inf for a diverged run). With workers > 1
            it must be picklable (a module-level function or functools.partial of one).
        log2_lrs, widths, seeds, parametrizations: the grid.
        cache: a CSV file; results are appended one line per finished cell, and cells found
            there are not run again. None keeps everything in memory.
        workers: processes to spread the cells over (a process pool whose workers use one
            torch thread each); 1 runs in this process.
        progress: show a tqdm bar.
        mp_context: multiprocessing start method; default "fork" where available (so
            functions defined in a notebook work), else "spawn".

    Returns:
        the grid's rows (cached ones included), columns parametrization, width, log2_lr, seed,
        lr, loss, sorted by the first four. An exception in `train_fn` stops the sweep and
        propagates; the cells finished before it stay in the cache.
    """
    check_callable("train_fn", train_fn, "as train_fn(parametrization=, width=, lr=, seed=)")
    check_positive_int("workers", workers)
    cells = _grid_cells(log2_lrs, widths, seeds, parametrizations)

    path = Path(cache) if cache is not None else None
    done = _read_cache(path) if path is not None else pd.DataFrame(columns=COLUMNS)
    results: dict[tuple, float] = {
        _key(r.parametrization, r.width, r.log2_lr, r.seed): float(r.loss)
        for r in done.itertuples(index=False)
    }
    todo = [c for c in cells if c not in results]

    writer_file, writer = _open_cache(path) if path is not None else (None, None)

    def record(cell: tuple, loss: float) -> None:
        results[cell] = loss
        if writer_file is not None:
            p, w, a, s = cell
            writer.writerow([p, w, repr(a), s, repr(2.0**a), repr(loss)])
            writer_file.flush()

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=len(cells), initial=len(cells) - len(todo), desc="lr sweep", mininterval=1.0
        )
    try:
        if workers == 1 or len(todo) <= 1:
            for cell in todo:
                record(cell, _run_cell(train_fn, *cell))
                if bar is not None:
                    bar.update(1)
        else:
            _run_pool(train_fn, todo, workers, mp_context, record, bar)
    finally:
        if bar is not None:
            bar.close()
        if writer_file is not None:
            writer_file.close()

    rows = [(*c, 2.0 ** c[2], results[c]) for c in cells]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(KEYS, kind="stable").reset_index(drop=True)


def _grid_cells(
    log2_lrs: Sequence[float],
    widths: Sequence[int],
    seeds: Sequence[int],
    parametrizations: Sequence[str],
) -> list[tuple]:
    """Every (parametrization, width, log2_lr, seed) cell of the grid, checked."""
    grid = {}
    for name, values in [
        ("log2_lrs", log2_lrs),
        ("widths", widths),
        ("seeds", seeds),
        ("parametrizations", parametrizations),
    ]:
        values = list(values)
        if not values:
            raise ValueError(f"{name} must be a non-empty list")
        grid[name] = values
    for w in grid["widths"]:
        if isinstance(w, bool) or not float(w).is_integer() or w < 1:
            raise ValueError(f"widths must be positive ints, got {w!r}")
    cells = [
        _key(p, w, a, s)
        for p in grid["parametrizations"]
        for w in grid["widths"]
        for a in grid["log2_lrs"]
        for s in grid["seeds"]
    ]
    if len(set(cells)) != len(cells):
        raise ValueError(
            "the grid has repeated values (log2_lrs, widths, seeds or parametrizations)"
        )
    return cells


def _open_cache(path: Path):
    """The cache CSV opened for appending (header written if new), and its csv writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists() or path.stat().st_size == 0
    writer_file = open(path, "a", newline="")  # closed by lr_sweep, in a finally
    writer = csv.writer(writer_file)
    if new_file:
        writer.writerow(COLUMNS)
        writer_file.flush()
    return writer_file, writer


def _run_pool(train_fn, todo, workers, mp_context, record, bar) -> None:
    if mp_context is None:
        mp_context = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(mp_context)
    with cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker
    ) as pool:
        futures = {pool.submit(_run_cell, train_fn, *cell): cell for cell in todo}
        try:
            for future in cf.as_completed(futures):
                record(futures[future], future.result())
                if bar is not None:
                    bar.update(1)
        except BaseException:
            for f in futures:
                f.cancel()
            raise


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
