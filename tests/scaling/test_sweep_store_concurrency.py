"""Fault injection under concurrency: 4 sweeps share one SQLite file while one of them is
killed with SIGKILL every few cells (and replaced), until the grid is complete. Every cell ends
in the database exactly once, none is lost, the results are bit for bit those of a clean run,
and a cell runs again only if its sweep was killed while running it."""

import os
import random
import signal
import sqlite3
import time

import pandas as pd

from ntk.scaling.sweep import lr_sweep
from ntk.scaling.sweep_store import SweepStore, load_sweep
from tests.scaling.sweep_helpers import GRID, expected_table, logged_free
from tests.scaling.test_sweep_store import N_CELLS, _assert_exact, _runs, _start_sweep

SWEEPS, MAX_KILLS = 4, 8


def test_four_sweeps_one_killed_every_few_cells_complete_the_grid_exactly(tmp_path):
    db, rng = tmp_path / "shared.sqlite", random.Random(0)
    procs, outs, finished = {}, {}, []
    spawned = 0

    def spawn(slot: int) -> None:
        nonlocal spawned
        outs[slot] = f"out{spawned}.csv"
        # workers=1: inline, one cell claimed at a time (a kill loses at most that one)
        procs[slot] = _start_sweep(tmp_path, db, outs[slot], workers=1, sleep=0.15)
        spawned += 1

    for slot in range(SWEEPS):
        spawn(slot)
    kills, next_kill = 0, rng.randint(2, 5)
    deadline = time.monotonic() + 240
    while procs:
        assert time.monotonic() < deadline, "the sweeps did not complete the grid in 240 s"
        for slot, proc in list(procs.items()):
            if proc.poll() is not None:  # finished by itself
                assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
                finished.append(outs[slot])
                del procs[slot]
        ran = _runs(tmp_path).sum()
        if procs and kills < MAX_KILLS and ran >= next_kill:
            slot = rng.choice(sorted(procs))
            os.killpg(procs[slot].pid, signal.SIGKILL)
            procs[slot].wait()
            kills += 1
            _assert_exact(load_sweep(db))  # readable after every kill, and exact
            spawn(slot)
            next_kill = ran + rng.randint(2, 5)
        time.sleep(0.01)
    assert kills == MAX_KILLS, f"only {kills} kills: the grid finished first, nothing was tested"
    expected = expected_table()
    assert len(finished) >= SWEEPS
    for out in finished:  # every sweep that finished returned the whole, exact grid
        got = pd.read_csv(tmp_path / out, dtype={"parametrization": str})
        pd.testing.assert_frame_equal(got, expected)
    with sqlite3.connect(db) as conn:  # each cell once, done, and no claim left behind
        rows = conn.execute(
            "SELECT parametrization, width, log2_lr, seed, COUNT(*), MIN(status) FROM cells "
            "GROUP BY parametrization, width, log2_lr, seed"
        ).fetchall()
    assert len(rows) == N_CELLS and all(n == 1 and s == "done" for *_, n, s in rows)
    runs = _runs(tmp_path)
    assert len(runs) == N_CELLS  # every cell ran
    assert runs.sum() - N_CELLS <= kills  # again only if killed while running it (inline)
    pd.testing.assert_frame_equal(lr_sweep(logged_free, **GRID, cache=db, progress=False), expected)
    with SweepStore(db) as store:
        assert store.counts() == {"done": N_CELLS}
