"""Power laws fitted on log-log axes: the exponents every chapter compares with theory."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLaw:
    """y ~ prefactor * x^exponent fitted by least squares on log-log axes."""

    exponent: float
    prefactor: float
    stderr: float  # standard error of the exponent

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.prefactor * np.asarray(x, dtype=float) ** self.exponent


def fit_power_law(x: np.ndarray, y: np.ndarray) -> PowerLaw:
    """Least-squares line through (log x, log y); needs >= 2 points with x, y > 0."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"x and y must be 1-D of equal length >= 2, got {x.shape} and {y.shape}")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("x and y must be positive to fit a power law on log-log axes")
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    dof = len(x) - 2
    lxc = lx - lx.mean()
    stderr = math.sqrt(resid @ resid / dof / (lxc @ lxc)) if dof > 0 else math.nan
    return PowerLaw(float(slope), float(math.exp(intercept)), float(stderr))


def fit_loglog_slope(x: object, y: object) -> float:
    """The exponent p of y ~ x^p, using only the finite, positive points (at least two)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if keep.sum() < 2:
        raise ValueError("need at least two finite, positive points to fit a log-log slope")
    return fit_power_law(x[keep], y[keep]).exponent
