"""README statements that code can check: the abc-form muP table is what `param.table()`
prints, and the notebook run times agree with their one measured file."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ntk import Parametrization, ParametrizationConfig
from ntk.models import WideMLP

ROOT = Path(__file__).resolve().parents[1]


def _value(cell: str, env: dict[str, float]) -> float:
    """A README cell such as "σ/(√d √m)" or "-1/2" as a number."""
    expr = cell.replace("√", "sqrt_").replace(") (", ")*(")
    expr = re.sub(r"sqrt_(\w+)", r"math.sqrt(\1)", expr)
    expr = re.sub(r"\) math", ") * math", expr)
    expr = expr.replace("σ", "sigma").replace("η", "eta")
    return float(eval(expr, {"math": math}, env))  # our own README cells


def test_abc_table_is_what_param_table_prints():
    text = (ROOT / "README.md").read_text()
    section = text.split("| `param.table()` row |", 1)[1].split("\n\n", 1)[0]
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in section.splitlines()[2:]
        if line.startswith("|")
    ]
    assert len(rows) == 3
    d, width, base = 10, 256, 64
    table = Parametrization(
        WideMLP(d, width=width, depth=2),
        ParametrizationConfig("mup", lr=1.0, base_width=base),
    ).table()
    env = dict(m=width / base, d=d, fan_in=width, sigma=1.0, eta=1.0)
    columns = ["a", "b", "c", "multiplier", "init_std", "lr"]
    for row, (_, got) in zip(rows, table.iterrows(), strict=True):
        assert row[0].split()[0] == got["role"]
        for cell, column in zip(row[1:], columns, strict=True):
            assert _value(cell, env) == pytest.approx(got[column], rel=1e-9), (row[0], column)


def test_notebook_times_agree_with_their_one_file():
    done = subprocess.run(
        [sys.executable, ".ci/notebook_times.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
