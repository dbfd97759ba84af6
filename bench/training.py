"""Training throughput at width 10000 as a fraction of this machine's matmul peak.

The model is `WideMLP_MuP(32 -> 10000 -> 10000 -> 1)` (depth 2: one 10000 x 10000 hidden
matrix, ~1.0e8 parameters), trained by `ntk.training.train` with mup's optimizers. One
training step costs about 6 * params * batch floating-point operations in its matrix
multiplies (2 forward, 4 backward: input and weight gradients); elementwise work and the
optimizer update are not counted, so they show up as lost efficiency. The peak is the best
float32 rate of a large square `torch.matmul`, timed in the same run (same threads, same load).

    python bench/training.py            # prints the table
"""

from __future__ import annotations

import statistics
import time

import mup
import torch

from ntk.models.mlp import WideMLP_MuP
from ntk.training import train

WIDTH = 10_000
IN_FEATURES = 32


def matmul_peak(n: int = 4096, repeats: int = 5) -> float:
    """Best FLOP/s of an (n x n) @ (n x n) float32 matmul (2 n^3 operations)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def step_seconds(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: int, steps: int
) -> float:
    """Median seconds per update of `train` (full batch of `batch` rows), logs excluded."""
    x = torch.randn(batch, IN_FEATURES)
    y = torch.randn(batch, 1)
    stamps: list[float] = []

    def timer(state) -> None:  # called after every update
        stamps.append(time.perf_counter())

    train(
        model,
        x,
        y,
        steps=steps + 1,
        optimizer=optimizer,
        log_every=steps + 1,
        track_features=False,
        track_weights=False,
        callbacks=[timer],
        progress=False,
    )
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))


def run(batches: tuple[int, ...] = (256, 1024), steps: int = 3) -> list[dict]:
    """One row per (optimizer, batch): seconds per step, FLOP/s and fraction of the peak."""
    peak = matmul_peak()
    torch.manual_seed(0)
    model = WideMLP_MuP(IN_FEATURES, WIDTH, depth=2, base_width=64)
    params = sum(p.numel() for p in model.parameters())
    optimizers = {
        "MuSGD": lambda: mup.MuSGD(model.parameters(), lr=1e-3),
        "MuAdam (fused)": lambda: mup.MuAdam(model.parameters(), lr=1e-4, fused=True),
    }
    rows = []
    for name, make in optimizers.items():
        for batch in batches:
            seconds = step_seconds(model, make(), batch, steps)
            flops = 6 * params * batch / seconds
            rows.append(
                {
                    "optimizer": name,
                    "width": WIDTH,
                    "params": params,
                    "batch": batch,
                    "s_per_step": seconds,
                    "flop_per_s": flops,
                    "peak_flop_per_s": peak,
                    "fraction_of_peak": flops / peak,
                }
            )
    return rows


if __name__ == "__main__":
    rows = run()
    print(
        f"matmul peak: {rows[0]['peak_flop_per_s'] / 1e9:.0f} GFLOP/s (float32, "
        f"{torch.get_num_threads()} threads); model params {rows[0]['params']:.3g}"
    )
    print(f"{'optimizer':16s} {'batch':>6s} {'s/step':>8s} {'GFLOP/s':>8s} {'of peak':>8s}")
    for r in rows:
        print(
            f"{r['optimizer']:16s} {r['batch']:6d} {r['s_per_step']:8.3f} "
            f"{r['flop_per_s'] / 1e9:8.1f} {100 * r['fraction_of_peak']:7.1f}%"
        )
