"""Notebook run times from one measured file, .ci/notebook_times.json, into the README's
notebook table (and its total) and into each notebook header's "runs in about N s on an idle
2-core CPU" sentence (the .py and its .ipynb, outputs untouched).

    python .ci/notebook_times.py            # write README.md and the notebook headers
    python .ci/notebook_times.py --check    # exit 1 if any of them disagrees with the file
    python .ci/notebook_times.py --measure  # time strict nbval per notebook, rewrite the file
    python .ci/notebook_times.py --halves   # two lines: the notebooks in halves of equal time

Run from the repository root. `--measure` takes the notebooks' whole run time (about 9 minutes
on an idle 2-core CPU); run it on an idle machine, then without arguments.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat

TIMES = Path(".ci/notebook_times.json")
README = Path("README.md")
ROW = re.compile(r"^\| `(\d\d_\w+)` \|(.*)\| ([^|]+) \|$")
TOTAL = re.compile(r"all \d+\s+take about \d+ minutes")
# the header sentence: "Runs in about 20 seconds on an idle 2-core CPU" and its variants
HEADER = re.compile(
    r"(?P<verb>[Rr]uns in )(?:about |under )?(?:[^;.,]|\d\.\d)*? on an? (?:idle|busy)"
    r"(?P<s1>\s+(?:# ?)?)2-core(?P<s2>\s+(?:# ?)?)CPU"
)


def load() -> dict:
    return json.loads(TIMES.read_text())


def readme_text(text: str, seconds: dict[str, int]) -> str:
    lines = []
    for line in text.splitlines():
        m = ROW.match(line)
        if m and m.group(1) in seconds:
            line = f"| `{m.group(1)}` |{m.group(2)}| {seconds[m.group(1)]} s |"
        lines.append(line)
    minutes = round(sum(seconds.values()) / 60)
    out = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
    return TOTAL.sub(f"all {len(seconds)}\ntake about {minutes} minutes", out)


def header_text(text: str, s: int) -> str:
    # the line break (and the .py's comment mark) before "2-core" is kept: lines only shorten
    return HEADER.sub(
        lambda m: f"{m.group('verb')}about {s} s on an idle{m.group('s1')}2-core{m.group('s2')}CPU",
        text,
    )


def notebook_files(name: str) -> tuple[Path, Path]:
    return Path("notebooks") / f"{name}.py", Path("notebooks") / f"{name}.ipynb"


def updates(record: dict) -> dict[Path, str]:
    """path -> the text it should have (only files that differ)."""
    seconds, out = record["seconds"], {}
    text = README.read_text()
    if (new := readme_text(text, seconds)) != text:
        out[README] = new
    for name, s in seconds.items():
        py, ipynb = notebook_files(name)
        text = py.read_text()
        if (new := header_text(text, s)) != text:
            out[py] = new
        nb = nbformat.read(ipynb, as_version=4)
        changed = False
        for cell in nb.cells:
            if cell.cell_type == "markdown" and (new := header_text(cell.source, s)) != cell.source:
                cell.source, changed = new, True
        if changed:
            out[ipynb] = nbformat.writes(nb) + "\n"
    return out


def measure() -> dict:
    seconds = {}
    for ipynb in sorted(Path("notebooks").glob("[0-9][0-9]_*.ipynb")):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "--nbval", "-q", str(ipynb)], check=True)
        seconds[ipynb.stem] = round(time.perf_counter() - start)
        print(f"{ipynb.stem}: {seconds[ipynb.stem]} s", flush=True)
    return {
        "measured": datetime.date.today().isoformat(),
        "how": "strict nbval (pytest --nbval notebooks/NN.ipynb), python .ci/notebook_times.py "
        "--measure",
        "seconds": seconds,
    }


def halves(seconds: dict[str, int]) -> list[list[str]]:
    """Every notebook in one of two lists of about equal measured time (longest first, each to
    the shorter list), for two single-threaded replays side by side; an unmeasured notebook
    counts as the longest measured one."""
    paths = sorted(Path("notebooks").glob("*.ipynb"))
    guess = max(seconds.values(), default=60)
    out: list[list[str]] = [[], []]
    total = [0, 0]
    for path in sorted(paths, key=lambda p: -seconds.get(p.stem, guess)):
        i = total.index(min(total))
        out[i].append(str(path))
        total[i] += seconds.get(path.stem, guess)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="only check, exit 1 on a mismatch")
    group.add_argument("--measure", action="store_true", help="time the notebooks first")
    group.add_argument("--halves", action="store_true", help="print two lists of equal time")
    args = parser.parse_args()
    if args.halves:
        for half in halves(load()["seconds"]):
            print(" ".join(half))
        return 0
    if args.measure:
        TIMES.write_text(json.dumps(measure(), indent=1) + "\n")
    todo = updates(load())
    if args.check:
        for path in todo:
            print(f"{path}: run times differ from {TIMES}; run python .ci/notebook_times.py")
        return 1 if todo else 0
    for path, text in todo.items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
