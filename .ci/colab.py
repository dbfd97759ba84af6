"""The one place that sets where the notebooks install the package from on Colab.

Each notebook's first code cell installs, on Colab only, the package from a git repository:
`ntk-lab @ git+REPOSITORY` (the distribution is called ntk-lab, since `ntk` on PyPI is an
unrelated project; the import name stays `ntk`). The repository is not published yet:
REPOSITORY is the address it is meant to have, to be set here by whoever publishes it, then
`python .ci/colab.py` writes the cell into every notebook (the .py, then the .ipynb through
`jupytext --update`, outputs kept). `python .ci/colab.py --check` (and tests/test_packaging.py)
verifies every notebook holds exactly this cell. Outside Colab the cell does nothing.

    python .ci/colab.py [--check]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "ntk-lab"
# To be set by whoever publishes the repository (it does not exist yet, so on Colab the
# install fails with pip's error until it does).
REPOSITORY = "https://github.com/ntk-lab/ntk"

CELL = f'''if "google.colab" in sys.modules:  # install only what Colab lacks (it has torch)
    import subprocess

    # set in one place, .ci/colab.py, which writes this cell; brings mup and the rest
    package = "{DISTRIBUTION} @ git+{REPOSITORY}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)
'''
# the block the cell replaces: from the Colab test to the pip call
BLOCK = re.compile(r'if "google\.colab" in sys\.modules:.*?check=True\)\n', re.S)


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def stale() -> list[str]:
    """The notebooks whose install cell is not exactly CELL."""
    return [p.name for p in notebooks() if p.read_text(encoding="utf-8").count(CELL) != 1]


def write() -> None:
    for path in notebooks():
        text = path.read_text(encoding="utf-8")
        new, n = BLOCK.subn(lambda _: CELL, text, count=1)
        if n != 1:
            raise SystemExit(f"{path.name}: no Colab install cell found")
        if new == text:
            continue
        path.write_text(new, encoding="utf-8")
        ipynb = path.with_suffix(".ipynb")
        metadata = json.loads(ipynb.read_text(encoding="utf-8"))["metadata"]
        subprocess.run(["jupytext", "--to", "ipynb", "--update", "-q", str(path)], check=True)
        nb = json.loads(ipynb.read_text(encoding="utf-8"))
        nb["metadata"] = metadata  # jupytext --update rewrites it; keep the stored one
        ipynb.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"updated {path.name}")


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        bad = stale()
        if bad:
            print(f"install cell differs from .ci/colab.py in: {', '.join(bad)}", file=sys.stderr)
            sys.exit(1)
        print("Colab install cells: in sync")
    else:
        write()
