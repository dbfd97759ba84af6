"""muTransfer sweep: caching and resuming, process pool, optimum and drift on known objectives.

The database itself (kills, concurrent sweeps, damaged files, CSV import) is tested in
test_sweep_store.py, executors (dask) in test_sweep_executors.py.
"""

import glob
import math
import os
import signal
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from ntk.scaling.sweep import lr_drift, lr_sweep, optima, plot_sweep, plot_transfer, summarize
from ntk.scaling.sweep_store import load_sweep
from tests.scaling.sweep_helpers import expected_table

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
    full = lr_sweep(objective, **GRID, cache=tmp_path / "full.sqlite", progress=False)
    assert len(full) == 6 * 3 * 3 * 2
    assert list(full.columns) == ["parametrization", "width", "log2_lr", "seed", "lr", "loss"]
    calls, stop = [], {"at": 17}

    def flaky(**kw):
        if len(calls) == stop["at"]:
            raise Interrupt("killed")
        calls.append(kw)
        return objective(**kw)

    cache = tmp_path / "sub" / "resume.sqlite"
    with pytest.raises(Interrupt):
        lr_sweep(flaky, **GRID, cache=cache, progress=False)
    assert len(load_sweep(cache)) == 17  # every finished cell is on disk
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
    pooled = lr_sweep(objective, **grid, workers=2, cache=tmp_path / "c.sqlite", progress=False)
    pd.testing.assert_frame_equal(serial, pooled)
    assert len(load_sweep(tmp_path / "c.sqlite")) == len(serial)
    # interrupted inside a worker: the error propagates, finished cells stay cached
    FAIL_AT["cell"] = ("mup", 64, 1)
    cache = tmp_path / "d.sqlite"
    try:
        with pytest.raises(Interrupt):
            lr_sweep(objective_or_fail, **grid, workers=2, cache=cache, progress=False)
    finally:
        FAIL_AT["cell"] = None
    assert 0 < len(load_sweep(cache)) < len(serial)
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
    bad_grids = [
        ("widths", [], ValueError, "widths must be a non-empty"),
        ("widths", [1.5], TypeError, r"widths\[0\] must be an int"),
        ("widths", [0], ValueError, r"widths\[0\] must be >= 1"),
        ("seeds", [0, 0], ValueError, "repeated"),
        ("seeds", [0.5], TypeError, r"seeds\[0\] must be an int"),
        ("parametrizations", "sp", TypeError, "parametrizations must be a sequence"),
        ("parametrizations", ["sp", 3], TypeError, r"parametrizations\[1\]"),
        ("log2_lrs", [math.nan], ValueError, r"log2_lrs\[0\] must be a finite"),
        ("log2_lrs", [0.0, 1e6], ValueError, r"log2_lrs\[1\] = 1000000.0 gives"),
        ("log2_lrs", [-2000.0], ValueError, r"log2_lrs\[0\]"),
        ("log2_lrs", 3.0, TypeError, "log2_lrs must be a sequence"),
    ]
    for name, value, kind, message in bad_grids:
        with pytest.raises(kind, match=message):
            lr_sweep(objective, **{**GRID, name: value}, progress=False)
    with pytest.raises(ValueError, match="workers"):
        lr_sweep(objective, **GRID, workers=0)
    with pytest.raises(TypeError, match="progress must be a bool"):
        lr_sweep(objective, **GRID, progress=1)
    with pytest.raises(ValueError, match="mp_context"):
        lr_sweep(objective, **GRID, mp_context="threads")
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        lr_sweep(objective, **GRID, executor=object())
    with pytest.raises(ValueError, match="max_in_flight"):
        lr_sweep(objective, **GRID, max_in_flight=0)
    for loss in ("x", True, 1j, None):
        with pytest.raises(TypeError, match="train_fn must return a float"):
            lr_sweep(lambda loss=loss, **kw: loss, **GRID, progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an SQLite database"):
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


def _session_processes(sid: int) -> list[int]:
    """Pids of live processes in session `sid` (the driver's workers, if any survive it)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            found.append(int(stat.split("/")[2]))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_ctrl_c_ends_the_workers_and_says_how_to_resume(tmp_path):
    """One Ctrl-C (SIGINT to the terminal's process group: driver and workers) with workers=2:
    the workers end, no traceback from them, one line says how many cells are saved where;
    running again runs exactly the others."""
    db, log = tmp_path / "s.sqlite", tmp_path / "cells.log"
    cmd = [sys.executable, "-m", "tests.scaling.sweep_helpers", str(db), str(tmp_path / "o.csv")]
    env = {**os.environ, "SWEEP_LOG": str(log), "SWEEP_SLEEP": "0.3", "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [*cmd, "2"], env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.time() + 120
    while (not log.exists() or len(log.read_text().splitlines()) < 4) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    saved = len(load_sweep(db))
    assert 4 <= saved < 60
    assert f"{saved} cells saved in {db}; run again to resume" in err
    assert err.count("Traceback") <= 1, err  # the driver's KeyboardInterrupt, none from workers
    time.sleep(0.5)
    assert _session_processes(proc.pid) == []  # no worker outlives the sweep
    first = len(log.read_text().splitlines())
    env["SWEEP_SLEEP"] = "0"
    subprocess.run([*cmd, "2"], env=env, check=True, timeout=300, capture_output=True)
    assert len(log.read_text().splitlines()) - first == 60 - saved  # only the missing cells
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "o.csv"), expected_table())


def test_interrupt_in_this_process_keeps_finished_cells(tmp_path, capsys):
    """workers=1: a KeyboardInterrupt inside the 4th cell leaves 3 cells saved, says so, and
    the claim of the interrupted cell is released (a rerun runs the rest)."""
    calls = []

    def train(**cell):
        calls.append(cell)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return 1.0

    db = tmp_path / "i.sqlite"
    grid = dict(log2_lrs=[-2.0, -1.0], widths=[8, 16], seeds=[0], parametrizations=["mup"])
    with pytest.raises(KeyboardInterrupt, match="3 cells saved in .*i.sqlite; run again"):
        lr_sweep(train, **grid, cache=db, progress=False)
    assert f"3 cells saved in {db}; run again to resume" in capsys.readouterr().err
    assert len(load_sweep(db)) == 3
    df = lr_sweep(lambda **cell: 1.0, **grid, cache=db, progress=False)
    assert len(df) == 4 and df["loss"].notna().all()
    with pytest.raises(KeyboardInterrupt, match="none saved .cache=None."):
        lr_sweep(lambda **c: (_ for _ in ()).throw(KeyboardInterrupt), **grid, progress=False)


def multiplier_objective(parametrization: str, width: int, seed: int, output_mult: float) -> float:
    """`objective` with the swept value arriving as `output_mult` (no `lr` argument)."""
    return objective(parametrization, width, output_mult, seed)


def test_hparam_sweeps_another_log2_hyperparameter():
    """hparam="output_mult": train_fn gets 2**x under that name, the table is the lr table's."""
    by_lr = lr_sweep(objective, **GRID, progress=False)
    by_mult = lr_sweep(multiplier_objective, **GRID, progress=False, hparam="output_mult")
    pd.testing.assert_frame_equal(by_mult, by_lr)
    with pytest.raises(TypeError, match="hparam must be a keyword argument name"):
        lr_sweep(objective, **GRID, progress=False, hparam="output mult")
