"""Fail when a jupytext pair is out of sync: the .py and the .ipynb must hold the same cells."""

import sys
from pathlib import Path

import jupytext
import nbformat


def cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def main() -> int:
    bad = []
    for py in sorted(Path("notebooks").glob("*.py")):
        if "jupytext" not in py.read_text():
            continue
        ipynb = py.with_suffix(".ipynb")
        if not ipynb.exists():
            bad.append(f"{py}: no paired {ipynb.name}")
            continue
        if cells(jupytext.read(py)) != cells(nbformat.read(ipynb, as_version=4)):
            bad.append(f"{py} and {ipynb.name} differ: run python .ci/build_notebooks.py {py}")
        nb = nbformat.read(ipynb, as_version=4)
        if any(
            c.cell_type == "code" and c.get("execution_count") is None
            for c in nb.cells
            if c.source.strip()
        ):
            bad.append(f"{ipynb}: has unexecuted code cells; store the outputs of a real run")
    for line in bad:
        print(line)
    print(f"jupytext pairs: {'OUT OF SYNC' if bad else 'in sync'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
