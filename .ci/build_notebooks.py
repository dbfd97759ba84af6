"""Rebuild notebooks from their percent .py sources and execute them in place, timing each.

python .ci/build_notebooks.py                       # every notebook
python .ci/build_notebooks.py notebooks/01_*.py     # some
"""

import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient


def build(py: Path) -> float:
    nb = jupytext.read(py)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(py.parent)}}
    ).execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, py.with_suffix(".ipynb"))
    return seconds


def main(paths: list[str]) -> None:
    pys = [Path(p) for p in paths] or sorted(
        p for p in Path("notebooks").glob("*.py") if "jupytext" in p.read_text()
    )
    for py in pys:
        print(f"{py}: executed in {build(py):.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
