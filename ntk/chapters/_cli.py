"""The command line shared by the chapter scripts: arguments, a headless backend, figures.

Every chapter's `main(argv)` builds its parser with `parser`, starts with `start` (figures
folder, Agg backend, clock), saves each figure with `save` and ends with `finish`; it returns
its results as a dict, so `main([...])` is also usable from Python.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

DPI = 120


def parser(description: str) -> argparse.ArgumentParser:
    """A parser with the chapter's description, defaults in --help, and --seed and --out."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--seed", type=int, default=0, help="seed of data, init and batches")
    p.add_argument("--out", type=Path, default=Path("figures"), help="output folder")
    return p


def add_int_list(
    parser: argparse.ArgumentParser, flag: str, default: Sequence[int], help: str
) -> None:
    """An option taking one or more ints (e.g. --widths 64 128 256)."""
    parser.add_argument(flag, type=int, nargs="+", default=list(default), help=help)


def start(args: argparse.Namespace) -> float:
    """Create the figures folder and select the headless Agg backend; return the start time."""
    import matplotlib

    matplotlib.use("Agg")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return time.perf_counter()


def save(fig, out: str | Path, name: str) -> Path:
    """Lay out `fig`, write it to out/name (PNG, 120 dpi) and close it."""
    import matplotlib.pyplot as plt

    path = Path(out) / name
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def finish(out: str | Path, names: list[str], start_time: float) -> None:
    """Print where the figures went and how long the chapter took."""
    seconds = time.perf_counter() - start_time
    print(f"figures written to {Path(out)}/: {', '.join(names)} ({seconds:.0f} s)", flush=True)
