"""Run every benchmark in one process and print one table: ours vs the reference, side by side.

    python bench/run.py            # full sizes (a few minutes, ~7 GB for the N=20,000 check)
    python bench/run.py --quick    # smaller sizes, no memory check

Each row times ours and the reference (neural-tangents, or the machine's matmul peak) in the
same run, so the ratio is meaningful even on a busy machine; the absolute seconds are not.
Where a suite alternates ours and the reference over several rounds (the GPT rows), ours/ref
is the median of the per-round ratios.
The rows are also written to bench/results/latest.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import torch

from ntk.errors import ArgumentParser, run_cli


def _fmt(v: object, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _training_row(r: dict) -> dict:
    """A training-throughput row in the common form: the reference is the same step at the
    measured matmul peak, so ours/ref = 1 / (fraction of peak)."""
    return dict(
        name=f"train step {r['optimizer']} width={r['width']} batch={r['batch']} f32",
        ours_s=r["s_per_step"],
        reference_s=6 * r["params"] * r["batch"] / r["peak_flop_per_s"],
        notes=f"{100 * r['fraction_of_peak']:.0f}% of the measured matmul peak "
        f"({r['peak_flop_per_s'] / 1e9:.0f} GFLOP/s); 6 x params x batch FLOP per step",
    )


def _sweep_row(t: dict) -> dict:
    """Sweep throughput in the common form: 2 worker processes vs 1 on the same grid; ideal
    ours/ref on 2 free cores is 0.5."""
    n = t["cells"]
    return dict(
        name=f"lr_sweep {n} cells, 2 workers vs 1 (SQLite cache)",
        ours_s=n / t["two_workers_cells_per_s"],
        reference_s=n / t["one_worker_cells_per_s"],
        notes=f"speedup {t['two_workers_cells_per_s'] / t['one_worker_cells_per_s']:.2f}x "
        "(2 free cores: ideal 2x)",
    )


def _dynamic_lr_rows(bench, rounds: int) -> list[dict]:
    """`DynamicLR.step()` every k = 20 steps against the same training step without it."""
    rows = []
    for name, build in (("mlp", bench.mlp_case), ("gpt", bench.gpt_case)):
        r = bench.measure_case(name, build, 20, rounds, time.perf_counter)
        rows.append(
            dict(
                name=f"dynamic per-layer lr, DynamicLR.step() every 20 steps, muP {name}",
                ours_s=r["step_s"] * (1 + r["overhead"]),
                reference_s=r["step_s"],
                notes=f"overhead {r['overhead']:+.1%} of a plain step, amortized (target <= 5%;"
                f" end to end {r['end_to_end']:+.1%}); one measurement "
                f"{1e3 * r['measurement_s']:.0f} ms, hooks {1e6 * r['hooks_s']:.0f} us",
            )
        )
    return rows


def _sweep_throughput(quick: bool) -> dict:
    # imported last: bench/sweep.py sets OMP_NUM_THREADS=1, which the other suites must not see
    import sweep

    return sweep.throughput(n_widths=2 if quick else 3)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, skip the memory check")
    parser.add_argument(
        "--only",
        choices=("analytic", "empirical", "training", "lm", "dynamic_lr", "muon", "sweep"),
        help="run one benchmark",
    )
    args = parser.parse_args(argv)

    import analytic
    import dynamic_lr
    import empirical
    import lm
    import muon
    import training

    suites = {
        # the empirical bench starts a child process first, while this process is small
        "empirical": lambda: empirical.run(quick=args.quick),
        "analytic": lambda: analytic.run(memory_check=not args.quick, quick=args.quick),
        "training": lambda: [
            _training_row(r)
            for r in (training.run(batches=(256,), steps=2) if args.quick else training.run())
        ],
        "lm": lambda: lm.run_table_rows(lm.run(quick=args.quick)),
        "dynamic_lr": lambda: _dynamic_lr_rows(dynamic_lr, rounds=2 if args.quick else 5),
        "muon": lambda: muon.rows(muon.run(quick=args.quick)),
        "sweep": lambda: [_sweep_row(_sweep_throughput(quick=args.quick))],
    }
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load}")
    rows = []
    for name, run in suites.items():
        if args.only in (None, name):
            rows += [dict(r, suite=name) for r in run()]

    print(f"\n{'benchmark':<70} {'ours s':>8} {'ref s':>8} {'ours/ref':>9}  notes")
    for r in rows:
        ref = r.get("reference_s")
        # a suite may give its own ratio (e.g. the median of interleaved rounds' ratios)
        ratio = r.get("ratio", r["ours_s"] / ref if ref else None)
        peak = f"peak {r['peak_gb']:.2f} GB; " if r.get("peak_gb") else ""
        print(
            f"{r['name']:<70} {_fmt(r['ours_s'], '8.3f')} {_fmt(ref, '8.3f')} "
            f"{_fmt(ratio, '9.3f')}  {peak}{r.get('notes', '')}"
        )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    run_cli(main, prog="python bench/run.py")
