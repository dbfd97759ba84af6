"""The one power-law fit (ntk.fitting), against scipy's linear regression."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ntk.fitting import fit_loglog_slope, fit_mean_power_law, fit_power_law, loglog_fit


def test_fit_power_law():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    fit = fit_power_law(x, 3.0 * x**-0.5)
    assert fit.exponent == pytest.approx(-0.5) and fit.prefactor == pytest.approx(3.0)
    assert fit(16.0) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="positive"):
        fit_power_law(x, -x)


def test_fit_loglog_slope_skips_unusable_points():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    y = 5.0 * x**-1.0
    y[2] = np.nan  # a diverged run: left out, not propagated
    assert abs(fit_loglog_slope(x, y) + 1.0) < 1e-12
    with pytest.raises(ValueError, match="at least two"):
        fit_loglog_slope([1.0, 2.0], [1.0, 0.0])


def test_loglog_fit_matches_scipy_linregress():
    rng = np.random.default_rng(0)
    x = np.array([16.0, 32.0, 64.0, 128.0, 256.0, 512.0])
    y = 2.0 * x**-0.5 * np.exp(0.1 * rng.standard_normal(len(x)))
    slope, intercept, stderr = loglog_fit(x, y)
    ref = stats.linregress(np.log(x), np.log(y))
    assert slope == pytest.approx(ref.slope, rel=1e-12)
    assert intercept == pytest.approx(ref.intercept, rel=1e-12)
    assert stderr == pytest.approx(ref.stderr, rel=1e-10)
    fit = fit_power_law(x, y)
    assert fit.exponent == slope and fit.prefactor == pytest.approx(np.exp(intercept))


def test_loglog_fit_degenerate_cases():
    assert all(np.isnan(loglog_fit(np.array([4.0]), np.array([1.0]))))
    assert all(np.isnan(loglog_fit(np.array([4.0, 4.0]), np.array([1.0, 2.0]))))
    slope, _, stderr = loglog_fit(np.array([1.0, 4.0]), np.array([1.0, 2.0]))
    assert slope == pytest.approx(0.5) and np.isnan(stderr)  # two points: exact, no error bar


def test_fit_mean_power_law_fits_the_means():
    df = pd.DataFrame(
        dict(width=[10, 10, 100, 100, 1000, 1000], err=[0.9, 1.1, 0.27, 0.36, 0.1, 0.1])
    )
    fit = fit_mean_power_law(df, "err")
    means = df.groupby("width").err.mean()
    assert fit.exponent == pytest.approx(fit_power_law(means.index, means.values).exponent)
    assert -0.6 < fit.exponent < -0.4
