"""Figures of a run directory or of a sweep's: `python -m ntk.lm.train --plot DIR`.

A directory with a metrics.csv is one run (`ntk.lm.run_log.plot_run`). A directory without
one, holding runs below it (a config's `sweep:` grid writes one run per point in
`out_dir/<key>=<value>`; `sweep_cell` writes `out_dir/<parametrization>/<cell>`), is a sweep:
`plot_sweep` overlays its runs, one line per run, labelled by its path below DIR.
"""

from __future__ import annotations

from pathlib import Path

from ntk.lm.run_log import METRICS, plot_run, read_metrics


def sweep_runs(directory: str | Path) -> list[Path]:
    """The run directories (those with a metrics.csv) below `directory`, sorted by path."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{str(directory)!r} is not a directory")
    runs = sorted(p.parent for p in directory.rglob(METRICS))
    if not runs:
        raise FileNotFoundError(
            f"{str(directory)!r} holds no run: no {METRICS} in it or in its subdirectories"
        )
    return runs


def plot_sweep(directory: str | Path, *, smooth: int = 20):
    """Three panels overlaying every run below `directory`: training loss (running mean over
    `smooth` steps) and validation loss at the longest length against tokens, and the learning
    rate against step. Returns the figure."""
    import matplotlib.pyplot as plt

    directory = Path(directory)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for run in sweep_runs(directory):
        df = read_metrics(run)
        label = str(run.relative_to(directory))
        line = axes[0].plot(
            df["tokens"], df["loss"].rolling(smooth, min_periods=1).mean(), lw=1, label=label
        )[0]
        val = df[df["val_loss_max"].notna()]
        axes[1].plot(val["tokens"], val["val_loss_max"], "o-", ms=3, lw=1, color=line.get_color())
        axes[2].plot(df["step"], df["lr"], lw=1, color=line.get_color())
    axes[0].set(xlabel="tokens", ylabel="loss (nats/token)", title="training loss")
    axes[1].set(xlabel="tokens", ylabel="loss (nats/token)", title="val_loss_max")
    axes[2].set(xlabel="step", ylabel="lr (base width)", title="learning rate")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_directory(directory: str | Path):
    """`plot_run` of a run directory, `plot_sweep` of a directory of runs."""
    if (Path(directory) / METRICS).is_file():
        return plot_run(directory)
    return plot_sweep(directory)
