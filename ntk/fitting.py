"""Power laws fitted on log-log axes: the exponents every chapter compares with theory.

One least-squares fit, `loglog_fit`: the slope p and intercept of log y = log c + p log x, and
the slope's standard error from the residuals. The other functions are views of it: the
`PowerLaw` through positive points, the slope through the usable points of a sweep (diverged
runs left out), and the power law through per-width means of a table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class PowerLaw:
    """y ~ prefactor * x^exponent fitted by least squares on log-log axes."""

    exponent: float
    prefactor: float
    stderr: float  # standard error of the exponent

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.prefactor * np.asarray(x, dtype=float) ** self.exponent


def _floats(name: str, v: object) -> np.ndarray:
    try:
        return np.asarray(v, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array of numbers, got {type(v).__name__}") from err


def loglog_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(slope, intercept, stderr) of the least-squares line through (log x, log y).

    x, y > 0, finite, 1-D, same length (else ValueError). Fewer than two distinct x give NaN
    everywhere; exactly two points give an exact line with stderr NaN (no residual degrees of
    freedom).
    """
    x, y = _floats("x", x), _floats("y", y)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    for name, v in (("x", x), ("y", y)):
        if not (np.isfinite(v) & (v > 0)).all():
            raise ValueError(f"{name} must be finite and > 0 to fit on log-log axes")
    lx, ly = np.log(x), np.log(y)
    n = len(lx)
    if n < 2 or np.ptp(lx) == 0:
        return math.nan, math.nan, math.nan
    lxc = lx - lx.mean()
    slope = float(lxc @ (ly - ly.mean()) / (lxc @ lxc))
    intercept = float(ly.mean() - slope * lx.mean())
    if n == 2:
        return slope, intercept, math.nan
    resid = ly - ly.mean() - slope * lxc
    return slope, intercept, float(math.sqrt(resid @ resid / (n - 2) / (lxc @ lxc)))


def fit_power_law(x: np.ndarray, y: np.ndarray) -> PowerLaw:
    """The power law through (x, y); needs >= 2 distinct x, and x, y > 0."""
    x, y = _floats("x", x), _floats("y", y)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"x and y must be 1-D of equal length >= 2, got {x.shape} and {y.shape}")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("x and y must be positive to fit a power law on log-log axes")
    if np.ptp(x) == 0:
        raise ValueError("x must have at least two distinct values to fit a power law")
    slope, intercept, stderr = loglog_fit(x, y)
    return PowerLaw(slope, math.exp(intercept), stderr)


def fit_loglog_slope(x: object, y: object) -> float:
    """The exponent p of y ~ x^p, using only the finite, positive points (at least two)."""
    x, y = _floats("x", x), _floats("y", y)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if keep.sum() < 2:
        raise ValueError("need at least two finite, positive points to fit a log-log slope")
    return fit_power_law(x[keep], y[keep]).exponent


def fit_mean_power_law(df: pd.DataFrame, column: str, by: str = "width") -> PowerLaw:
    """The power law through the mean of `column` per value of `by` (e.g. over networks)."""
    mean = df.groupby(by)[column].mean()
    return fit_power_law(mean.index.to_numpy(), mean.to_numpy())
