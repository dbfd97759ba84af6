"""Sweep throughput: cells per second with 1 and 2 workers, and the scheduler's cost per cell.

    python bench/sweep.py            # ~1 minute on 2 idle cores
    python bench/sweep.py --dask     # also a dask.distributed LocalCluster (2 workers)

Throughput: `lr_sweep` over a grid of CPU-bound cells (each trains a small MLP for a fixed
number of full-batch SGD steps on one torch thread), once in this process (workers=1) and once
on a local pool of 2 processes, both writing to an SQLite cache. The speedup is the ratio of
cells per second; on 2 free cores it should be close to 2 (target >= 1.8).

Overhead: cells that return at once, so the time per cell is what the sweep itself costs:
claiming the cell, handing it to a worker, committing its result (one fsync per cell: a
power-loss-safe commit). Measured with the database in memory (no fsync) and on disk, in this
process, on the process pool and (with --dask) on dask.

The machine's load average is printed before and after: on a busy machine (load above the core
count) the numbers are not meaningful, and the script says so.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from ntk.scaling.sweep import lr_sweep

STEPS = 300  # SGD steps per cell: ~0.3 s on one core, long enough to hide the pool start


def train_cell(*, parametrization: str, width: int, lr: float, seed: int) -> float:
    """A CPU-bound cell: full-batch SGD on a depth-2 MLP, one torch thread; final MSE."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 32, generator=gen)
    y = torch.sin(x[:, :1])
    w1 = torch.randn(32, width, generator=gen) / 32**0.5
    w2 = torch.randn(width, width, generator=gen) / width**0.5
    w3 = torch.randn(width, 1, generator=gen) / width**0.5
    params = [w.requires_grad_() for w in (w1, w2, w3)]
    for _ in range(STEPS):
        loss = 0.5 * (torch.relu(torch.relu(x @ w1) @ w2) @ w3 - y).pow(2).mean()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= lr * g
    return float(loss)


def instant_cell(*, parametrization: str, width: int, lr: float, seed: int) -> float:
    return 0.0


def _timed_sweep(fn, grid: dict, **kwargs) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        lr_sweep(fn, **grid, cache=Path(tmp) / "bench.sqlite", progress=False, **kwargs)
        return time.perf_counter() - start


def throughput(n_widths: int = 3) -> dict:
    grid = dict(
        log2_lrs=[-6.0, -5.0, -4.0, -3.0],
        widths=[128, 192, 256][:n_widths],
        seeds=[0, 1],
        parametrizations=["sp"],
    )
    n = 4 * n_widths * 2
    torch.set_num_threads(1)
    train_cell(parametrization="sp", width=128, lr=0.01, seed=0)  # warm-up (first-call costs)
    one = _timed_sweep(train_cell, grid, workers=1)
    two = _timed_sweep(train_cell, grid, workers=2)
    return dict(cells=n, one_worker_cells_per_s=n / one, two_workers_cells_per_s=n / two)


def overhead(n: int = 200, dask: bool = False) -> dict:
    """Seconds per instant cell, by executor and storage."""
    grid = dict(log2_lrs=[float(a) for a in range(-n // 2, n - n // 2)], widths=[8], seeds=[0])
    grid["parametrizations"] = ["sp"]
    out = {}
    start = time.perf_counter()
    lr_sweep(instant_cell, **grid, progress=False)  # in memory, in this process
    out["inline, in memory"] = (time.perf_counter() - start) / n
    out["inline, SQLite file"] = _timed_sweep(instant_cell, grid) / n
    out["process pool (2), SQLite file"] = _timed_sweep(instant_cell, grid, workers=2) / n
    if dask:
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            executor = client.get_executor()
            _timed_sweep(instant_cell, {**grid, "log2_lrs": [0.0, 1.0]}, executor=executor)
            out["dask LocalCluster (2), SQLite file"] = (
                _timed_sweep(instant_cell, grid, executor=executor) / n
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dask", action="store_true", help="also time a dask LocalCluster")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    print(f"load average before: {load_before:.2f} on {cores} cores")

    t = throughput()
    ratio = t["two_workers_cells_per_s"] / t["one_worker_cells_per_s"]
    print(f"\nthroughput, {t['cells']} cells of {STEPS} SGD steps each:")
    print(f"  1 worker : {t['one_worker_cells_per_s']:.2f} cells/s")
    print(f"  2 workers: {t['two_workers_cells_per_s']:.2f} cells/s")
    print(f"  speedup 2 vs 1 workers: {ratio:.2f}x (target >= 1.8 on 2 free cores)")

    print("\nscheduler overhead per cell (instant cells):")
    for name, seconds in overhead(dask=args.dask).items():
        print(f"  {name:36s} {1e3 * seconds:7.2f} ms")

    load_after = os.getloadavg()[0]
    print(f"\nload average after: {load_after:.2f}")
    if max(load_before, load_after) > 0.5 * cores:
        print(
            f"NOTE: the machine was busy (load up to {max(load_before, load_after):.1f} on "
            f"{cores} cores): these numbers are not final; rerun on a quiet machine"
        )


if __name__ == "__main__":
    main()
