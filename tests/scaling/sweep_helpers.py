"""Train functions for the sweep tests, importable by subprocesses and dask workers.

Each returns a loss that is an exact function of the cell, so any result read back from a
database can be checked bit for bit; `logged` also appends the cell to a log file (one
O_APPEND write per line, atomic), so a test can count how often every cell ran.
"""

from __future__ import annotations

import math
import os
import sys
import time

import pandas as pd


def loss_of(parametrization: str, width: int, lr: float, seed: int) -> float:
    """A parabola in log2 lr around -3, wider is better; NaN / inf for some cells, as diverged
    runs give."""
    a = math.log2(lr)
    if a >= 0 and seed == 1:
        return math.nan
    if a >= 0 and seed == 2:
        return math.inf
    return (a + 3.0) ** 2 + 1.0 / math.log2(width) + 1e-3 * seed + 0.5 * (parametrization == "sp")


def logged(*, parametrization: str, width: int, lr: float, seed: int) -> float:
    """`loss_of`, after sleeping SWEEP_SLEEP seconds; appends the cell to SWEEP_LOG."""
    time.sleep(float(os.environ.get("SWEEP_SLEEP", "0")))
    line = f"{parametrization},{width},{math.log2(lr)!r},{seed}\n"
    fd = os.open(os.environ["SWEEP_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return loss_of(parametrization, width, lr, seed)


def where_run(*, parametrization: str, width: int, lr: float, seed: int) -> float:
    """`loss_of`, appending the running process's pid to SWEEP_LOG."""
    fd = os.open(os.environ["SWEEP_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return loss_of(parametrization, width, lr, seed)


def fail_on_width_64(*, parametrization: str, width: int, lr: float, seed: int) -> float:
    if width == 64 and seed == 1:
        raise ArithmeticError(f"cell {parametrization}, {width}, {lr}, {seed} failed")
    return loss_of(parametrization, width, lr, seed)


def main() -> None:
    """Run one sweep: python -m tests.scaling.sweep_helpers DB OUT.csv WORKERS [START_FILE].

    Waits for START_FILE to exist (so two sweeps start together), then writes the returned
    table to OUT.csv.
    """
    from ntk.scaling.sweep import lr_sweep

    db, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if len(sys.argv) > 4:
        while not os.path.exists(sys.argv[4]):
            time.sleep(0.01)
    df = lr_sweep(logged, **GRID, cache=db, workers=workers, progress=False)
    df.to_csv(out, index=False)


GRID = dict(
    log2_lrs=[-4.0, -3.0, -2.0, -1.0, 0.0],
    widths=[16, 64],
    seeds=[0, 1, 2],
    parametrizations=["sp", "mup"],
)


def expected_table() -> pd.DataFrame:
    from ntk.scaling.sweep import lr_sweep

    return lr_sweep(logged_free, **GRID, progress=False)


def logged_free(*, parametrization: str, width: int, lr: float, seed: int) -> float:
    return loss_of(parametrization, width, lr, seed)


if __name__ == "__main__":
    main()
