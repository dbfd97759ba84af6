"""The sweep database under faults: SIGKILL at random moments, two sweeps at once, a dead
sweep's claims, truncated files, CSV caches of the earlier format, export.

Every loss in these tests is an exact function of its cell (`sweep_helpers.loss_of`), so a
result read back from a database is checked bit for bit: nothing misread, nothing lost.
"""

import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ntk.scaling.sweep import lr_sweep
from ntk.scaling.sweep_store import (
    COLUMNS,
    SweepStore,
    cell_key,
    export_csv,
    import_csv,
    load_sweep,
)
from tests.scaling.sweep_helpers import GRID, expected_table, logged_free, loss_of

ROOT = Path(__file__).resolve().parents[2]
N_CELLS = 5 * 2 * 3 * 2


def _env(tmp_path: Path, sleep: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.update(SWEEP_LOG=str(tmp_path / "runs.log"), SWEEP_SLEEP=str(sleep))
    return env


def _start_sweep(tmp_path: Path, db: Path, out: str, workers: int, sleep: float, start=None):
    """A sweep in its own process group (its pool workers die with it, as in a crash)."""
    args = [sys.executable, "-m", "tests.scaling.sweep_helpers", str(db), str(tmp_path / out)]
    args += [str(workers)] + ([str(start)] if start else [])
    return subprocess.Popen(
        args, cwd=ROOT, env=_env(tmp_path, sleep), start_new_session=True, stderr=subprocess.PIPE
    )


def _runs(tmp_path: Path) -> pd.Series:
    """How many times each cell ran, from the log the train function appends to."""
    log = tmp_path / "runs.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return pd.Series(lines, dtype=str).value_counts()


def _assert_exact(df: pd.DataFrame) -> None:
    """Every row's loss is exactly loss_of(cell) (NaN where it is NaN)."""
    for r in df.itertuples(index=False):
        want = loss_of(r.parametrization, r.width, 2.0**r.log2_lr, r.seed)
        assert r.loss == want or (math.isnan(r.loss) and math.isnan(want)), r


def test_sigkill_at_random_moments_loses_only_cells_in_flight(tmp_path):
    db = tmp_path / "sweep.sqlite"
    rng = random.Random(0)
    kills, in_flight = 0, 4  # 2 workers, 2 x workers claimed and submitted
    for _ in range(4):
        before = _runs(tmp_path).sum()
        proc = _start_sweep(tmp_path, db, "out.csv", workers=2, sleep=0.02)
        # kill once this sweep has run a cell (startup takes seconds on a busy machine), at a
        # random moment of its next ~0.3 s: in a claim, a commit, or between them
        while proc.poll() is None and _runs(tmp_path).sum() == before:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        _assert_exact(load_sweep(db))  # readable after every kill, and exact
    assert kills >= 3, "the sweep finished before most kills: the test did not test anything"
    final = lr_sweep(logged_free, **GRID, cache=db, progress=False)
    pd.testing.assert_frame_equal(final, expected_table())
    runs = _runs(tmp_path)
    # each kill can lose at most the cells in flight (claimed and submitted, not committed)
    assert runs.sum() - len(runs) <= kills * in_flight
    with SweepStore(db) as store:
        assert store.counts() == {"done": N_CELLS}  # no claim outlives its dead owner


def test_two_concurrent_sweeps_share_the_work(tmp_path):
    db, start = tmp_path / "shared.sqlite", tmp_path / "start"
    procs = [_start_sweep(tmp_path, db, f"out{i}.csv", 1, 0.05, start) for i in range(2)]
    time.sleep(0.2)
    start.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
    runs = _runs(tmp_path)
    assert len(runs) == N_CELLS and (runs == 1).all()  # every cell ran exactly once
    expected = expected_table()
    for i in range(2):
        got = pd.read_csv(tmp_path / f"out{i}.csv", dtype={"parametrization": str})
        pd.testing.assert_frame_equal(got, expected)
    with sqlite3.connect(db) as conn:  # both did part of the work (they started together)
        owners = conn.execute("SELECT owner, COUNT(*) FROM cells GROUP BY owner").fetchall()
    assert len(owners) == 2 and sum(n for _, n in owners) == N_CELLS, owners


def test_claims_of_a_dead_sweep_are_taken_over_at_once(tmp_path):
    db = tmp_path / "dead.sqlite"
    proc = _start_sweep(tmp_path, db, "out.csv", workers=1, sleep=30.0)  # stuck in cell 1
    deadline = time.time() + 60
    while time.time() < deadline:
        if db.exists():
            with SweepStore(db) as store:
                if store.counts().get("claimed"):
                    break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    start = time.perf_counter()
    df = lr_sweep(logged_free, **GRID, cache=db, progress=False)
    assert time.perf_counter() - start < 30  # not waiting out the lease (120 s)
    pd.testing.assert_frame_equal(df, expected_table())


def test_owners_elsewhere_are_trusted_until_their_lease_expires(tmp_path):
    db = tmp_path / "lease.sqlite"
    cell = cell_key("sp", 16, -3.0, 0)
    with SweepStore(db) as other:  # a sweep on another host: its pid cannot be checked
        other._conn.execute(
            "INSERT INTO owners VALUES ('far:1:x', 'far-away-host', 1, '', ?)", (time.time(),)
        )
        other._conn.execute(
            "INSERT INTO cells (parametrization, width, log2_lr, seed, status, owner) "
            "VALUES (?, ?, ?, ?, 'claimed', 'far:1:x')",
            cell,
        )
    with SweepStore(db, lease=60.0) as store:
        assert store.claim([cell], 1) == ([], [])  # its heartbeat is fresh
    with SweepStore(db, lease=0.0) as store:
        assert store.claim([cell], 1) == ([cell], [])  # expired: taken over
        store.record(cell, 1.5)
    assert load_sweep(db)["loss"].tolist() == [1.5]


@pytest.fixture(scope="module")
def big_database(tmp_path_factory) -> bytes:
    """A closed database of ~2300 finished cells (~20 pages), as bytes."""
    db = tmp_path_factory.mktemp("big") / "full.sqlite"
    cells = [cell_key("sp", w, a, s) for w in range(2, 200) for a in (-2.0, 0.0) for s in range(6)]
    with SweepStore(db) as store:
        store.record_many((c, loss_of(c[0], c[1], 2.0 ** c[2], c[3]), 0.0) for c in cells)
    return db.read_bytes()


@pytest.mark.parametrize("fraction", [0.0001, 0.01, 0.3, 0.5, 0.9])
def test_a_truncated_database_is_refused_never_misread(tmp_path, big_database, fraction):
    cut = tmp_path / "cut.sqlite"
    cut.write_bytes(big_database[: max(1, int(len(big_database) * fraction))])
    with pytest.raises(ValueError, match="damaged SQLite database"):
        lr_sweep(logged_free, **GRID, cache=cut, progress=False)


def test_a_database_cut_in_its_last_page_reads_exactly_or_is_refused(tmp_path, big_database):
    # the last bytes of the last page are often unused: whatever SQLite accepts is exact
    cut = tmp_path / "cut.sqlite"
    for drop in (1, 100, 1000):
        cut.write_bytes(big_database[:-drop])
        try:
            df = load_sweep(cut)
        except ValueError as err:
            assert "damaged" in str(err)
            continue
        assert len(df) == 198 * 2 * 6
        _assert_exact(df)


def _old_csv(path: Path, rows: list, *, torn: str | None = None) -> None:
    """A cache as the earlier lr_sweep wrote it: header, repr'd floats, CRLF line ends."""
    text = ",".join(COLUMNS) + "\r\n"
    for p, w, a, s in rows:
        loss = loss_of(p, w, 2.0**a, s)
        text += f"{p},{w},{a!r},{s},{2.0**a!r},{loss!r}\r\n"
    path.write_text(text + (torn or ""), newline="")


def test_csv_caches_are_imported_strictly(tmp_path):
    cells = [("sp", 16, -4.0, 0), ("sp", 16, -4.0, 1), ("sp", 16, 0.0, 1), ("mup", 64, 0.0, 2)]
    old = tmp_path / "old.csv"
    _old_csv(old, cells, torn="sp,16,-3.0,0,0.125,0.")  # killed while writing a row
    with pytest.raises(ValueError, match=r"CSV cache of an earlier lr_sweep.*import_csv"):
        lr_sweep(logged_free, **GRID, cache=old, progress=False)
    db = tmp_path / "new.sqlite"
    with pytest.warns(UserWarning, match="dropped the torn last line"):
        assert import_csv(old, db) == 4
    imported = load_sweep(db)
    _assert_exact(imported)
    assert imported["loss"].isna().sum() == 1 and math.isinf(imported["loss"].max())
    os.environ["SWEEP_LOG"] = str(tmp_path / "runs.log")
    try:
        from tests.scaling.sweep_helpers import logged

        df = lr_sweep(logged, **GRID, cache=db, progress=False)
    finally:
        del os.environ["SWEEP_LOG"]
    pd.testing.assert_frame_equal(df, expected_table())
    assert len(_runs(tmp_path)) == N_CELLS - 4  # the imported cells did not run again
    # a torn row followed by the next one on the same line (the old writer's resume bug)
    glued = tmp_path / "glued.csv"
    _old_csv(glued, cells[:2], torn="sp,16,-3.0,0,0.125,0.sp,16,-2.0,0,0.25,1.2\r\n")
    with pytest.raises(ValueError, match=r"1 damaged line.*line 4: 11 fields"):
        import_csv(glued, tmp_path / "glued.sqlite")
    # a number cut short inside the file is refused too
    cut = tmp_path / "cut.csv"
    cut.write_text(",".join(COLUMNS) + "\r\nsp,16,-3.0,0,0.125,0.\r\nsp,16,-2.0,0,0.25,1.5\r\n")
    with pytest.raises(ValueError, match=r"line 2: loss '0.' is not written as the sweep"):
        import_csv(cut, tmp_path / "cut.sqlite")
    assert not (tmp_path / "cut.sqlite").exists()


def test_export_round_trips_nan_and_inf(tmp_path):
    db = tmp_path / "sweep.sqlite"
    df = lr_sweep(logged_free, **GRID, cache=db, progress=False)
    out = export_csv(db, tmp_path / "sweep.csv")
    back = pd.read_csv(tmp_path / "sweep.csv", dtype={"parametrization": str})
    pd.testing.assert_frame_equal(back, out)
    pd.testing.assert_frame_equal(out[COLUMNS], df)
    assert back["loss"].isna().any() and back["loss"].eq(math.inf).any()
    assert (back["seconds"] >= 0).all()
    with pytest.raises(FileNotFoundError, match="no sweep database"):
        load_sweep(tmp_path / "missing.sqlite")


def test_foreign_and_incompatible_files_are_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(ValueError, match="not an SQLite database of an lr_sweep"):
        lr_sweep(logged_free, **GRID, cache=text, progress=False)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema', '99')")
    with pytest.raises(ValueError, match="schema 99"):
        lr_sweep(logged_free, **GRID, cache=other, progress=False)
    empty = tmp_path / "empty.sqlite"
    empty.touch()  # an empty file is a new database
    assert len(lr_sweep(logged_free, **GRID, cache=empty, progress=False)) == N_CELLS
