"""muTransfer sweeps: learning rate x width x seed x parametrization, resumable, on any executor.

The claim under test (Yang et al. 2022, "Tensor Programs V: Tuning Large Neural Networks via
Zero-Shot Hyperparameter Transfer", arXiv:2203.03466): under muP the optimal learning rate is
(asymptotically) independent of the width, so it can be tuned on a narrow model and reused on
a wide one, and at that learning rate wider is better. Under the standard parametrization the
optimum drifts with width (for Adam roughly like 1 / width in the hidden and readout layers).

`lr_sweep` runs a user function `train_fn(parametrization=, width=, lr=, seed=) -> final loss`
on every cell of a grid of log2 learning rates. With `cache=` the cells live in an SQLite
database (`ntk.scaling.sweep_store`): each is claimed before it runs and committed when it
finishes, so an interrupted sweep resumes where it stopped, a kill loses at most the cells in
flight, and two sweeps on one database share the work instead of repeating it.

Cells run in this process (workers=1), on a local process pool (workers > 1), or on any
`concurrent.futures.Executor` (`executor=`), e.g. a `dask.distributed` client's
`client.get_executor()`; docs/sweeps.md shows SLURM (submitit) and Ray. Results flow back to
this process, which alone writes the database, so workers need no shared file system for it
(they must be able to import `train_fn`).

The analysis (`summarize`, `optima`, `lr_drift`, `plot_sweep`, `plot_transfer`) is in
`ntk.scaling.sweep_analysis`, re-exported here.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence

import pandas as pd

from ntk._checks import (
    check_bool,
    check_callable,
    check_choice,
    check_int_list,
    check_number_list,
    check_positive_int,
    check_sequence,
)
from ntk.scaling.sweep_analysis import lr_drift, optima, plot_sweep, plot_transfer, summarize
from ntk.scaling.sweep_store import COLUMNS, KEYS, Cell, SweepStore, cell_key

__all__ = [
    "COLUMNS",
    "lr_drift",
    "lr_sweep",
    "optima",
    "plot_sweep",
    "plot_transfer",
    "summarize",
]

TrainFn = Callable[..., float]
POLL_S = 0.5  # how often a sweep waiting on another sweep's cells looks again


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; threads inside would oversubscribe
    # Ctrl-C in a terminal reaches the whole process group: the driver alone handles it (and
    # ends the workers), so workers print no tracebacks of their own
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_cell(
    train_fn: TrainFn, hparam: str, parametrization, width, log2_lr, seed
) -> tuple[float, float]:
    """One cell, in a worker: (loss, seconds). The grid value 2**log2_lr goes to `hparam`."""
    start = time.perf_counter()
    value = {hparam: 2.0**log2_lr}
    loss = train_fn(parametrization=parametrization, width=width, seed=seed, **value)
    if isinstance(loss, (bool, complex, str, bytes)):
        raise TypeError(f"train_fn must return a float loss, got {type(loss).__name__}")
    try:
        loss = float(loss)
    except (TypeError, ValueError) as err:
        raise TypeError(f"train_fn must return a float loss, got {type(loss).__name__}") from err
    return loss, time.perf_counter() - start


class _InlineExecutor(cf.Executor):
    """Runs each cell at submit time in this process (workers=1): one code path for all."""

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # delivered through the future, as any executor does
            future.set_exception(err)
        return future


def lr_sweep(
    train_fn: TrainFn,
    *,
    log2_lrs: Sequence[float],
    widths: Sequence[int],
    seeds: Sequence[int] = (0,),
    parametrizations: Sequence[str] = ("sp", "mup"),
    cache: str | os.PathLike | None = None,
    workers: int = 1,
    progress: bool = True,
    mp_context: str | None = None,
    executor: cf.Executor | None = None,
    max_in_flight: int | None = None,
    hparam: str = "lr",
) -> pd.DataFrame:
    """Run `train_fn` on every (parametrization, width, log2 LR, seed) cell not yet finished.

    Args:
        train_fn: called as `train_fn(parametrization=p, width=n, lr=2**log2_lr, seed=s)`
            (`hparam=` renames `lr`); returns the final loss (a float; NaN or inf for a diverged run). On a process pool
            or a remote executor it must be picklable (a module-level function or
            functools.partial of one).
        log2_lrs, widths, seeds, parametrizations: the grid (finite log2 LRs whose 2**x is a
            positive float, ints >= 1, ints >= 0, non-empty names).
        cache: an SQLite database file (created if missing; see `ntk.scaling.sweep_store`);
            cells finished there are not run again. None keeps everything in memory. A CSV
            cache of an earlier version is refused with the command that imports it.
        workers: with `executor=None`, processes of a local pool (each using one torch
            thread); 1 runs the cells in this process.
        progress: show a tqdm bar.
        mp_context: start method of the local pool; default "fork" where available (so
            functions defined in a notebook work), else "spawn".
        executor: any `concurrent.futures.Executor` to run the cells on instead (it is not
            shut down here). Its workers get `train_fn` and the cell, and return the loss.
        max_in_flight: cells claimed and submitted at once; default 2 x workers for the local
            pool (so no worker waits), and every remaining cell for an `executor` (its own
            scheduler queues them). Bound it when several sweeps share one database.
        hparam: the keyword under which `train_fn` receives 2**x for each grid value x:
            "lr" by default; another name sweeps that log2-spaced hyperparameter instead (e.g.
            "output_mult", the learning rate then fixed inside `train_fn`, as Yang et al. 2022
            sweep one hyperparameter with the others fixed, fig. 4). The table keeps the
            column names log2_lr and lr for it, so that `summarize`, `optima`, `lr_drift` and
            `plot_transfer` read it unchanged; give such a sweep a cache of its own.

    Returns:
        the grid's rows (earlier ones included), columns parametrization, width, log2_lr,
        seed, lr, loss, sorted by the first four. An exception in `train_fn` stops the sweep
        and propagates; the cells finished before it stay in the cache, the claims of the
        cells in flight are released. Ctrl-C (KeyboardInterrupt) ends the local pool's
        workers at once and prints "N cells saved in FILE; run again to resume" (then
        re-raises KeyboardInterrupt with that message).
    """
    check_callable("train_fn", train_fn, "as train_fn(parametrization=, width=, lr=, seed=)")
    if not isinstance(hparam, str) or not hparam.isidentifier():
        raise TypeError(f"hparam must be a keyword argument name of train_fn, got {hparam!r}")
    check_positive_int("workers", workers)
    check_bool("progress", progress)
    if executor is not None and not isinstance(executor, cf.Executor):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}"
        )
    if max_in_flight is not None:
        check_positive_int("max_in_flight", max_in_flight)
    if mp_context is not None:
        check_choice("mp_context", mp_context, multiprocessing.get_all_start_methods())
    cells = grid_cells(log2_lrs, widths, seeds, parametrizations)

    results: dict[Cell, float] = {}
    try:
        with SweepStore(cache) as store:
            results.update(store.results(cells))
            todo = [c for c in cells if c not in results]
            bar = _progress_bar(progress, len(cells), len(cells) - len(todo))
            try:
                if todo:
                    pool, owned = _executor(executor, workers, len(todo), mp_context)
                    if max_in_flight is None:
                        # inline: one at a time, so a cell is claimed only right before it runs
                        max_in_flight = len(todo) if executor is not None else 2 * workers
                        if isinstance(pool, _InlineExecutor):
                            max_in_flight = 1
                    try:
                        cell_fn = functools.partial(_run_cell, train_fn, hparam)
                        _run(store, pool, cell_fn, todo, max_in_flight, results, bar)
                    except KeyboardInterrupt:
                        if owned:
                            _end_workers(pool)
                        raise
                    finally:
                        if owned:
                            pool.shutdown(wait=True, cancel_futures=True)
            finally:
                if bar is not None:
                    bar.close()
    except KeyboardInterrupt:  # the store is closed: claims released, finished cells committed
        message = _interrupted(len(results), cache)
        print(message, file=sys.stderr, flush=True)
        raise KeyboardInterrupt(message) from None
    rows = [(*c, 2.0 ** c[2], results[c]) for c in cells]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(KEYS, kind="stable").reset_index(drop=True)


def _interrupted(saved: int, cache: str | os.PathLike | None) -> str:
    if cache is None:
        return f"{saved} cells finished, none saved (cache=None): pass cache= to resume"
    return f"{saved} cells saved in {os.fspath(cache)}; run again to resume"


def _end_workers(pool: cf.Executor) -> None:
    """Terminate a local pool's worker processes now (their cells are lost, and released):
    waiting for the cells in flight could take minutes."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)


def _progress_bar(progress: bool, total: int, initial: int):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="lr sweep", mininterval=1.0)


def _executor(
    executor: cf.Executor | None, workers: int, n_todo: int, mp_context: str | None
) -> tuple[cf.Executor, bool]:
    """The executor to use, and whether this sweep created it (and must shut it down)."""
    if executor is not None:
        return executor, False
    if workers == 1 or n_todo <= 1:
        return _InlineExecutor(), True
    if mp_context is None:
        mp_context = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(mp_context)
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
    return pool, True


def _run(
    store: SweepStore,
    pool: cf.Executor,
    cell_fn: Callable[..., tuple[float, float]],
    todo: list[Cell],
    max_in_flight: int,
    results: dict[Cell, float],
    bar,
) -> None:
    """Claim, submit, record, until every cell of `todo` is done (here or by another sweep).
    `cell_fn(*cell)` runs one cell and returns (loss, seconds).

    Only this (driver) process touches the database: a result is committed as soon as its
    future completes, one transaction per cell.
    """
    store.register()
    waiting = list(todo)  # not yet done, in grid order: those not in flight are candidates
    in_flight: dict[cf.Future, Cell] = {}
    try:
        while waiting:
            free = max_in_flight - len(in_flight)
            if free > 0:
                busy = set(in_flight.values())
                claimed, done_elsewhere = store.claim([c for c in waiting if c not in busy], free)
                if done_elsewhere:
                    found = store.results(done_elsewhere)
                    results.update(found)
                    waiting = [c for c in waiting if c not in found]
                    _advance(bar, len(found))
                for cell in claimed:
                    in_flight[pool.submit(cell_fn, *cell)] = cell
                store.start_heartbeat()  # after the first submit: a fork pool has forked
            if not in_flight:
                if waiting:  # the rest is held by other live sweeps: wait for them
                    time.sleep(POLL_S)
                continue
            finished, _ = cf.wait(in_flight, timeout=POLL_S, return_when=cf.FIRST_COMPLETED)
            # successes first: a failure next to them must not cost their results
            for future in sorted(finished, key=lambda f: f.exception() is not None):
                cell = in_flight.pop(future)
                loss, seconds = future.result()  # train_fn's exception propagates here
                store.record(cell, loss, seconds)
                results[cell] = loss
                waiting.remove(cell)
                _advance(bar, 1)
    finally:
        for future in in_flight:
            future.cancel()
        if in_flight:
            store.release(in_flight.values())


def _advance(bar, n: int) -> None:
    if bar is not None and n:
        bar.update(n)


def grid_cells(
    log2_lrs: Sequence[float],
    widths: Sequence[int],
    seeds: Sequence[int],
    parametrizations: Sequence[str],
) -> list[Cell]:
    """Every (parametrization, width, log2_lr, seed) cell of the grid, checked, in grid order."""
    lrs = check_number_list("log2_lrs", log2_lrs)
    for i, a in enumerate(lrs):
        try:
            ok = 2.0**a > 0.0
        except OverflowError:
            ok = False
        if not ok:
            raise ValueError(
                f"log2_lrs[{i}] = {a!r} gives a learning rate 2**{a!r} that is not a positive "
                "float; use log2 learning rates between -1074 and 1023"
            )
    widths = check_int_list("widths", widths, minimum=1)
    seeds = check_int_list("seeds", seeds, minimum=0)
    names = check_sequence("parametrizations", parametrizations, "names (strings)")
    for i, p in enumerate(names):
        if not isinstance(p, str) or not p:
            raise TypeError(f"parametrizations[{i}] must be a non-empty string, got {p!r}")
    cells = [cell_key(p, w, a, s) for p in names for w in widths for a in lrs for s in seeds]
    if len(set(cells)) != len(cells):
        raise ValueError(
            "the grid has repeated values (log2_lrs, widths, seeds or parametrizations)"
        )
    return cells
