"""The command line shared by the chapter scripts: arguments, a headless backend, figures.

Every chapter's `main(argv)` builds its parser with `parser`, starts with `start` (figures
folder, Agg backend, clock), saves each figure with `save` and ends with `finish`; it returns
its results as a dict, so `main([...])` is also usable from Python. As a command it runs
through `run`, the error boundary of `ntk.errors`: a bad argument prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from ntk.errors import ArgumentParser, InvalidValue, run_cli, user_input

DPI = 120


def run(main: Callable[[list[str]], object]) -> NoReturn:
    """Run a chapter's `main` as a command (sys.argv), with the error boundary."""
    run_cli(main)


def parser(description: str) -> argparse.ArgumentParser:
    """A parser with the chapter's description, defaults in --help, --seed, --out, --debug."""
    p = ArgumentParser(
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
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InvalidValue(f"--out {str(args.out)!r} is a file: give a folder for the figures")
    with user_input(OSError):  # a folder we may not create
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
