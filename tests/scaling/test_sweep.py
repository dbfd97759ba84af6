"""muTransfer sweep: caching and resuming, process pool, optimum and drift on known objectives."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from ntk.scaling.sweep import lr_drift, lr_sweep, optima, plot_sweep, plot_transfer, summarize

GRID = dict(
    log2_lrs=[-6.0, -5.0, -4.0, -3.0, -2.0, -1.0],
    widths=[16, 64, 256],
    seeds=[0, 1, 2],
    parametrizations=["sp", "mup"],
)


def objective(parametrization: str, width: int, lr: float, seed: int) -> float:
    """A synthetic transfer curve: parabola in log2 LR around an optimum that stays at -3 for
    muP and moves by -1 per doubling of the width for SP; wider is better; seeds add noise;
    the SP runs diverge at large learning rates (NaN) as a real network would."""
    a = math.log2(lr)
    opt = -3.0 if parametrization == "mup" else -3.0 - math.log2(width / 16) / 2
    if parametrization == "sp" and a > opt + 1.5:
        return math.nan
    noise = 0.01 * math.sin(12.9898 * seed + 78.233 * width + a)
    return (a - opt) ** 2 + 1.0 / math.log2(width) + noise


class Interrupt(RuntimeError):
    pass


FAIL_AT = {"cell": None}  # set before a pool forks: workers inherit it


def objective_or_fail(**kw) -> float:
    if (kw["parametrization"], kw["width"], kw["seed"]) == FAIL_AT["cell"]:
        raise Interrupt("killed")
    return objective(**kw)


def test_resumed_sweep_equals_uninterrupted(tmp_path):
    full = lr_sweep(objective, **GRID, cache=tmp_path / "full.csv", progress=False)
    assert len(full) == 6 * 3 * 3 * 2
    assert list(full.columns) == ["parametrization", "width", "log2_lr", "seed", "lr", "loss"]
    calls, stop = [], {"at": 17}

    def flaky(**kw):
        if len(calls) == stop["at"]:
            raise Interrupt("killed")
        calls.append(kw)
        return objective(**kw)

    cache = tmp_path / "sub" / "resume.csv"
    with pytest.raises(Interrupt):
        lr_sweep(flaky, **GRID, cache=cache, progress=False)
    assert len(pd.read_csv(cache)) == 17  # every finished cell is on disk
    stop["at"] = None
    resumed = lr_sweep(flaky, **GRID, cache=cache, progress=False)
    assert len(calls) == len(full)  # the 17 cached cells were not run again
    pd.testing.assert_frame_equal(resumed, full)
    # a third call runs nothing; a cache shared with a smaller grid returns only that grid
    again = lr_sweep(lambda **kw: 1 / 0, **GRID, cache=cache, progress=False)
    pd.testing.assert_frame_equal(again, full)
    small = lr_sweep(lambda **kw: 1 / 0, **{**GRID, "widths": [64]}, cache=cache, progress=False)
    pd.testing.assert_frame_equal(small, full[full["width"] == 64].reset_index(drop=True))
    assert full["loss"].isna().sum() > 0  # diverged runs are kept as NaN


def test_process_pool_gives_the_same_table(tmp_path):
    grid = {**GRID, "widths": [16, 64], "seeds": [0, 1]}
    serial = lr_sweep(objective, **grid, progress=False)
    pooled = lr_sweep(objective, **grid, workers=2, cache=tmp_path / "c.csv", progress=False)
    pd.testing.assert_frame_equal(serial, pooled)
    assert len(pd.read_csv(tmp_path / "c.csv")) == len(serial)
    # interrupted inside a worker: the error propagates, finished cells stay cached
    FAIL_AT["cell"] = ("mup", 64, 1)
    cache = tmp_path / "d.csv"
    try:
        with pytest.raises(Interrupt):
            lr_sweep(objective_or_fail, **grid, workers=2, cache=cache, progress=False)
    finally:
        FAIL_AT["cell"] = None
    assert 0 < len(pd.read_csv(cache)) < len(serial)
    resumed = lr_sweep(objective_or_fail, **grid, workers=2, cache=cache, progress=False)
    pd.testing.assert_frame_equal(resumed, serial)


def test_optima_and_drift_on_a_known_objective():
    df = lr_sweep(objective, **GRID, progress=False)
    opt = optima(df, n_boot=50).set_index(["parametrization", "width"])
    assert (opt.loc["mup", "log2_lr_opt"] == -3.0).all()
    np.testing.assert_array_equal(opt.loc["sp", "log2_lr_opt"], [-3.0, -4.0, -5.0])
    assert (opt["log2_lr_std"] == 0).all()  # the noise is far below the curvature
    assert (opt["grid_step"] == 1.0).all() and not opt["at_edge"].any()
    drift = lr_drift(optima(df, n_boot=0))
    assert drift["mup"] == 0.0 and drift["sp"] == 2.0
    # wider is better at the transferred learning rate
    stats = summarize(df).query("parametrization == 'mup' and log2_lr == -3.0")
    assert stats["mean"].is_monotonic_decreasing
    sp = summarize(df).query("parametrization == 'sp'")
    assert (sp["diverged"].isin([0, 3])).all() and np.isinf(sp.query("diverged > 0")["mean"]).all()


def test_optimum_uncertainty_and_divergence():
    rows = []
    rng = np.random.default_rng(0)
    for seed in range(8):
        for a in [-2.0, -1.0, 0.0, 1.0]:
            # two nearly tied learning rates: the bootstrap argmin flips between them
            loss = {-2.0: 1.0, -1.0: 0.5, 0.0: 0.5, 1.0: math.inf}[a] + 0.1 * rng.standard_normal()
            rows.append(("mup", 32, a, seed, 2.0**a, loss))
            rows.append(("sp", 32, a, seed, 2.0**a, math.nan))  # everything diverged
    df = pd.DataFrame(rows, columns=["parametrization", "width", "log2_lr", "seed", "lr", "loss"])
    opt = optima(df, n_boot=200).set_index("parametrization")
    assert opt.loc["mup", "log2_lr_opt"] in (-1.0, 0.0)
    assert 0.2 < opt.loc["mup", "log2_lr_std"] <= 0.5
    assert math.isnan(opt.loc["sp", "log2_lr_opt"]) and math.isnan(opt.loc["sp", "log2_lr_std"])
    assert math.isnan(lr_drift(optima(df))["sp"])


def test_bad_input(tmp_path):
    with pytest.raises(TypeError, match="train_fn"):
        lr_sweep("f", **GRID)
    with pytest.raises(ValueError, match="widths"):
        lr_sweep(objective, **{**GRID, "widths": []})
    with pytest.raises(ValueError, match="widths"):
        lr_sweep(objective, **{**GRID, "widths": [1.5]})
    with pytest.raises(ValueError, match="repeated"):
        lr_sweep(objective, **{**GRID, "seeds": [0, 0]})
    with pytest.raises(ValueError, match="workers"):
        lr_sweep(objective, **GRID, workers=0)
    with pytest.raises(TypeError, match="float"):
        lr_sweep(lambda **kw: "x", **GRID, progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        lr_sweep(objective, **GRID, cache=bad)
    with pytest.raises(ValueError, match="lr_sweep"):
        optima(pd.DataFrame({"loss": [1.0]}))


def test_plots():
    df = lr_sweep(objective, **GRID, progress=False)
    fig = plot_transfer(df, ["sp", "mup"])
    assert len(fig.axes) == 2
    ax = fig.axes[1]
    assert len(ax.get_legend().get_texts()) == 3
    with pytest.raises(ValueError, match="parametrization"):
        plot_sweep(df)
    with pytest.raises(ValueError, match="no rows"):
        plot_sweep(df, "ntk")
