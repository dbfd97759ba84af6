"""Plot helpers shared by several chapters."""

from __future__ import annotations

import pandas as pd

from ntk.fitting import PowerLaw


def plot_error_vs_width(errs: pd.DataFrame, fit: PowerLaw, ax, label: str) -> None:
    """Per-network errors (dots), their mean per width and the fitted power law."""
    ax.loglog(errs.width, errs.rel_error, ".", color="0.6", label="single networks")
    mean = errs.groupby("width").rel_error.mean()
    ax.loglog(mean.index, mean.values, "o", label="mean")
    ax.loglog(mean.index, fit(mean.index), "-", label=f"fit: slope {fit.exponent:.3f}")
    ax.set(xlabel="width", ylabel=label)
    ax.legend(fontsize=8)


def finish_figure(fig, axes, fontsize: int = 8):
    """Legends on every panel and a tight layout; returns the figure."""
    for ax in axes:
        ax.legend(fontsize=fontsize)
    fig.tight_layout()
    return fig


def plain_log_ticks(ax) -> None:
    """Log-axis tick labels as plain numbers (0.02, 0.1, 300) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
