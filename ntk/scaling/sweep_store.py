"""Sweep results in SQLite: each cell claimed before it runs and committed when it finishes.

A learning-rate sweep is a grid of cells (parametrization, width, log2 LR, seed), each one
training run. `SweepStore` keeps them in one SQLite database (stdlib `sqlite3`, write-ahead
log), one row per cell:

* a cell is *claimed* (status "claimed", with the claiming process as owner) in a
  transaction before it is handed to a worker, so two sweeps on one database never run the
  same cell;
* its result is committed in a transaction of its own when it comes back (status "done"),
  so a kill at any moment loses at most the cells in flight, and SQLite's journal guarantees
  that a finished cell is never read back torn;
* claims of a dead owner are released by the next sweep that looks: an owner on this host
  whose process is gone, or any owner whose heartbeat (renewed every `HEARTBEAT_S` by a
  thread while it runs) is older than `lease` seconds.

The database lives with the process that calls `lr_sweep` (the driver); workers only compute
and return losses, so they need no shared file system. SQLite stores NaN as NULL: a done row
with a NULL loss is a NaN (diverged) result. `import_csv` reads the CSV caches of earlier
versions (strictly: a torn last line is dropped, any other damaged line refused);
`load_sweep` and `SweepStore.to_frame` export to pandas, `export_csv` to a CSV file.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import socket
import sqlite3
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pandas as pd

KEYS = ["parametrization", "width", "log2_lr", "seed"]
COLUMNS = [*KEYS, "lr", "loss"]
Cell = tuple[str, int, float, int]

SCHEMA_VERSION = "1"
HEARTBEAT_S = 5.0
SQLITE_MAGIC = b"SQLite format 3\x00"
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS owners (
        owner TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,
        started TEXT NOT NULL, heartbeat REAL NOT NULL)""",
    # a done row with a NULL loss is NaN: SQLite stores NaN as NULL
    """CREATE TABLE IF NOT EXISTS cells (
        parametrization TEXT NOT NULL, width INTEGER NOT NULL, log2_lr REAL NOT NULL,
        seed INTEGER NOT NULL, status TEXT NOT NULL CHECK (status IN ('claimed', 'done')),
        loss REAL, owner TEXT, claimed_at REAL, finished_at REAL, seconds REAL,
        PRIMARY KEY (parametrization, width, log2_lr, seed)) WITHOUT ROWID""",
]


def cell_key(parametrization: str, width: int, log2_lr: float, seed: int) -> Cell:
    """The normalized key of a cell: log2 LRs rounded to 9 decimals (0.1 + 0.2 matches 0.3)."""
    return (str(parametrization), int(width), round(float(log2_lr), 9), int(seed))


def _process_start(pid: int) -> str:
    """An identity for a process beyond its pid (pids are reused): its start time on Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]  # field 22, after the command name
    except (OSError, IndexError):
        return ""


def _process_alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return not started or _process_start(pid) == started


class SweepStore:
    """One sweep database. Use as a context manager, or call `close()`.

    Args:
        path: the database file (created if missing), or None for an in-memory store.
        lease: seconds after which the claims of an owner that stopped renewing its heartbeat
            are released (the backstop for owners on other hosts; owners on this host are
            released as soon as their process is gone).
    """

    def __init__(self, path: str | os.PathLike | None, *, lease: float = 120.0) -> None:
        self.path = None if path is None else Path(path)
        self.lease = float(lease)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"
        self._conn = self._connect()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._live: dict[str, bool] = {}

    # ------------------------------------------------------------------ opening
    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            conn = sqlite3.connect(":memory:", isolation_level=None)
            for statement in _SCHEMA:
                conn.execute(statement)
            return conn
        _refuse_foreign_file(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            problems = [r[0] for r in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            with _transaction(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if row is None:
                    conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                elif row[0] != SCHEMA_VERSION:
                    raise ValueError(
                        f"cache {self.path} has sweep schema {row[0]}, this ntk reads "
                        f"{SCHEMA_VERSION}"
                    )
        except sqlite3.DatabaseError as err:
            conn.close()
            raise ValueError(
                f"cache {self.path} is a damaged SQLite database ({err}); its results cannot "
                "be trusted. Move it aside (the sqlite3 shell's .recover may salvage rows) and "
                "start a new cache"
            ) from err
        return conn

    def close(self) -> None:
        """Release this owner's claims (its unfinished cells) and close the database."""
        if self._conn is None:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with contextlib.suppress(sqlite3.Error), _transaction(self._conn):
            self._conn.execute(
                "DELETE FROM cells WHERE owner = ? AND status = 'claimed'", (self.owner,)
            )
            self._conn.execute("DELETE FROM owners WHERE owner = ?", (self.owner,))
        self._conn.close()
        self._conn = None

    def __enter__(self) -> SweepStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ ownership
    def register(self) -> None:
        """Register this process as an owner (before its first claim), heartbeat now."""
        with _transaction(self._conn):
            self._conn.execute(
                "INSERT OR REPLACE INTO owners VALUES (?, ?, ?, ?, ?)",
                (self.owner, self.host, self.pid, _process_start(self.pid), time.time()),
            )

    def start_heartbeat(self) -> None:
        """Renew this owner's heartbeat from a thread (registering it first if needed).

        Start it after a local process pool has forked its workers: forking a process with
        more threads than the forking one risks copying a lock some thread holds.
        """
        if self._heartbeat is not None:
            return
        if not self._conn.execute("SELECT 1 FROM owners WHERE owner = ?", (self.owner,)).fetchone():
            self.register()
        if self.path is None:
            return

        def beat() -> None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            try:
                while not self._stop.wait(HEARTBEAT_S):
                    with contextlib.suppress(sqlite3.OperationalError):  # busy: next beat
                        conn.execute(
                            "UPDATE owners SET heartbeat = ? WHERE owner = ?",
                            (time.time(), self.owner),
                        )
            finally:
                conn.close()

        self._heartbeat = threading.Thread(target=beat, name="sweep-heartbeat", daemon=True)
        self._heartbeat.start()

    def _owner_alive(self, owner: str | None) -> bool:
        if owner == self.owner:
            return True
        if owner not in self._live:
            row = self._conn.execute(
                "SELECT host, pid, started, heartbeat FROM owners WHERE owner = ?", (owner,)
            ).fetchone()
            alive = row is not None and time.time() - row[3] < self.lease
            if alive and row[0] == self.host:
                alive = _process_alive(row[1], row[2])
            self._live[owner] = alive
        return self._live[owner]

    # ------------------------------------------------------------------ cells
    def claim(self, candidates: Sequence[Cell], n: int) -> tuple[list[Cell], list[Cell]]:
        """Claim up to `n` of `candidates` (in order) that nobody finished or holds.

        Cells held by dead owners are taken over. Returns (claimed, found done): the second
        list holds candidates that another sweep has finished, so the caller can stop waiting
        for them.
        """
        claimed, done = [], []
        self._live.clear()
        now = time.time()
        with _transaction(self._conn):
            for cell in candidates:
                if len(claimed) >= n:
                    break
                row = self._conn.execute(
                    "SELECT status, owner FROM cells WHERE parametrization = ? AND width = ? "
                    "AND log2_lr = ? AND seed = ?",
                    cell,
                ).fetchone()
                if row is not None and row[0] == "done":
                    done.append(cell)
                elif row is None or not self._owner_alive(row[1]):
                    self._conn.execute(
                        "INSERT OR REPLACE INTO cells (parametrization, width, log2_lr, seed, "
                        "status, owner, claimed_at) VALUES (?, ?, ?, ?, 'claimed', ?, ?)",
                        (*cell, self.owner, now),
                    )
                    claimed.append(cell)
            if any(not alive for alive in self._live.values()):
                self._drop_dead_owners()
        return claimed, done

    def _drop_dead_owners(self) -> None:
        dead = [o for o, alive in self._live.items() if not alive and o is not None]
        for owner in dead:
            self._conn.execute("DELETE FROM owners WHERE owner = ?", (owner,))

    def record(self, cell: Cell, loss: float, seconds: float = math.nan) -> None:
        """Commit a finished cell (its own durable transaction). A cell already done keeps its
        first result; a cell claimed by someone else is still recorded (the result is valid)."""
        self.record_many([(cell, loss, seconds)])

    def record_many(self, rows: Iterable[tuple[Cell, float, float]]) -> None:
        """Commit several finished (cell, loss, seconds) in one transaction (all or none)."""
        now = time.time()
        with _transaction(self._conn, durable=True):
            self._conn.executemany(
                "INSERT INTO cells (parametrization, width, log2_lr, seed, status, loss, owner, "
                "finished_at, seconds) VALUES (?, ?, ?, ?, 'done', ?, ?, ?, ?) "
                "ON CONFLICT (parametrization, width, log2_lr, seed) DO UPDATE SET "
                "status = 'done', loss = excluded.loss, owner = excluded.owner, "
                "finished_at = excluded.finished_at, seconds = excluded.seconds "
                "WHERE status != 'done'",
                [(*c, float(loss), self.owner, now, float(sec)) for c, loss, sec in rows],
            )

    def release(self, cells: Iterable[Cell]) -> None:
        """Give back this owner's claims on `cells` (they will be run by the next sweep)."""
        with _transaction(self._conn):
            self._conn.executemany(
                "DELETE FROM cells WHERE parametrization = ? AND width = ? AND log2_lr = ? "
                "AND seed = ? AND status = 'claimed' AND owner = ?",
                [(*c, self.owner) for c in cells],
            )

    def results(self, cells: Iterable[Cell] | None = None) -> dict[Cell, float]:
        """Losses of the finished cells among `cells` (all if None); NaN for a NULL loss."""
        rows = self._conn.execute(
            "SELECT parametrization, width, log2_lr, seed, loss FROM cells WHERE status = 'done'"
        ).fetchall()
        found = {tuple(r[:4]): (math.nan if r[4] is None else float(r[4])) for r in rows}
        if cells is None:
            return found
        return {c: found[c] for c in cells if c in found}

    def to_frame(self) -> pd.DataFrame:
        """Every finished cell: parametrization, width, log2_lr, seed, lr, loss, seconds."""
        rows = self._conn.execute(
            "SELECT parametrization, width, log2_lr, seed, loss, seconds FROM cells "
            "WHERE status = 'done'"
        ).fetchall()
        df = pd.DataFrame(rows, columns=[*KEYS, "loss", "seconds"], dtype=object)
        df = df.astype({"width": int, "log2_lr": float, "seed": int, "loss": float})
        df["parametrization"] = df["parametrization"].astype(str)
        df["seconds"] = df["seconds"].astype(float)
        df.insert(4, "lr", 2.0 ** df["log2_lr"])
        return df.sort_values(KEYS, kind="stable").reset_index(drop=True)

    def counts(self) -> dict[str, int]:
        """Number of cells per status, e.g. {"done": 40, "claimed": 2}."""
        return dict(self._conn.execute("SELECT status, COUNT(*) FROM cells GROUP BY status"))


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, durable: bool = False) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): the write lock is taken up front, so
    two writers never deadlock upgrading a read lock.

    Every commit survives a killed process (it is in the OS's cache); a `durable` one is also
    fsynced, so it survives a power loss. Only results need that: a lost claim costs nothing,
    and skipping its fsync halves the time per cell (one fsync is ~7 ms on a plain disk).
    """
    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _refuse_foreign_file(path: Path) -> None:
    """A cache must be an SQLite database (or missing, or empty): refuse anything else clearly."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        return
    if SQLITE_MAGIC.startswith(head):  # cut inside the 16-byte header
        raise ValueError(
            f"cache {path} is a damaged SQLite database (truncated to {len(head)} bytes); "
            "move it aside and start a new cache"
        )
    with open(path, newline="") as f:
        first = f.readline().strip()
    if first == ",".join(COLUMNS):
        new = path.with_suffix(".sqlite")
        raise ValueError(
            f"cache {path} is a CSV cache of an earlier lr_sweep; results now live in SQLite. "
            f"Import it once with ntk.scaling.sweep_store.import_csv({str(path)!r}, "
            f"{str(new)!r}) and pass cache={str(new)!r}"
        )
    raise ValueError(f"cache {path} exists but is not an SQLite database of an lr_sweep")


# ---------------------------------------------------------------------- import / export


def _parse_csv_row(fields: list[str]) -> tuple[Cell, float]:
    """One row of the old CSV cache, or ValueError: every number must be exactly what the old
    writer printed (repr of the float), so a row cut short ("0." for "0.25") is caught."""
    if len(fields) != len(COLUMNS):
        raise ValueError(f"{len(fields)} fields instead of {len(COLUMNS)}")
    p, w, a, s, lr, loss = fields
    numbers = {"width": (w, int), "seed": (s, int), "log2_lr": (a, float), "lr": (lr, float)}
    numbers["loss"] = (loss, float)
    values = {}
    for name, (text, kind) in numbers.items():
        try:
            values[name] = kind(text)
        except ValueError:
            raise ValueError(f"{name} {text!r} is not a number") from None
        if repr(values[name]) != text:
            raise ValueError(f"{name} {text!r} is not written as the sweep writes numbers")
    cell = cell_key(p, values["width"], values["log2_lr"], values["seed"])
    if not p or cell[2] != values["log2_lr"] or values["lr"] != 2.0 ** cell[2]:
        raise ValueError("parametrization empty, or lr != 2**log2_lr")
    return cell, values["loss"]


def import_csv(csv_path: str | os.PathLike, db_path: str | os.PathLike) -> int:
    """Import a CSV cache of an earlier `lr_sweep` into the SQLite database `db_path`.

    The old writer ended every row with a line break, so a last line without one is a row
    torn by a kill: it is dropped (with a warning) and that cell runs again. Any other line
    that is not exactly a row as the writer printed it (wrong field count, a cut or glued
    number) means the file was damaged, and the import is refused naming the lines. Cells
    already in the database keep their result. Returns the number of cells imported.
    """
    csv_path = Path(csv_path)
    with open(csv_path, newline="") as f:  # keep line ends as written: a torn row has none
        text = f.read()
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != ",".join(COLUMNS):
        raise ValueError(f"{csv_path} does not start with the header {','.join(COLUMNS)}")
    if not lines[-1].endswith("\n"):
        warnings.warn(
            f"{csv_path}: dropped the torn last line {lines[-1]!r} (its cell will run again)",
            stacklevel=2,
        )
        lines = lines[:-1]
    rows, bad = {}, []
    for number, line in enumerate(lines[1:], start=2):
        try:
            cell, loss = _parse_csv_row(next(csv.reader([line])))
        except (ValueError, StopIteration) as err:
            bad.append(f"line {number}: {err}")
            continue
        rows.setdefault(cell, loss)  # duplicates from concurrent writers: the first wins
    if bad:
        raise ValueError(
            f"{csv_path} has {len(bad)} damaged line(s), refusing to import it: "
            + "; ".join(bad[:5])
            + ". Delete those lines to run their cells again."
        )
    with SweepStore(db_path) as store:
        before = len(store.results())
        store.record_many((cell, loss, math.nan) for cell, loss in rows.items())
        return len(store.results()) - before


def load_sweep(path: str | os.PathLike) -> pd.DataFrame:
    """The finished cells of a sweep database as a DataFrame (see `SweepStore.to_frame`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no sweep database at {path}")
    with SweepStore(path) as store:
        return store.to_frame()


def export_csv(path: str | os.PathLike, csv_path: str | os.PathLike) -> pd.DataFrame:
    """Write a sweep database's finished cells to CSV, atomically (temp file, fsync, rename)."""
    df = load_sweep(path)
    csv_path = Path(csv_path)
    fd, tmp = tempfile.mkstemp(dir=csv_path.parent, prefix=csv_path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            df.to_csv(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, csv_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return df
