"""Bitwise resume of everything a run writes: every CSV of a run stopped and resumed equals the
uninterrupted run's (timing columns aside), the spectral monitor's warm starts included; the
Python and NumPy generators are seeded from the run's seed."""

import csv
import random
from pathlib import Path

import numpy as np
import pytest

from ntk.lm.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ntk.lm.train import Processes, setup, train

pytestmark = pytest.mark.usefixtures("single_thread")
TIMING = {"tokens_per_s", "time_s"}


def csv_files(out_dir: Path) -> dict[str, list[dict[str, str]]]:
    """Every CSV of a run, as text rows without the timing columns."""
    out = {}
    for path in sorted(Path(out_dir).glob("*.csv")):
        with open(path, newline="") as f:
            out[path.name] = [
                {k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)
            ]
    return out


@pytest.mark.parametrize("stop", [3, 8])  # before and after the first diagnostics (step 4)
def test_every_csv_of_a_resumed_run_equals_the_uninterrupted_runs(tiny, stop):
    diag = {"log.diag_every": 4, "train.tokens": 12 * 256}
    ref = tiny("ref", **diag)
    train(ref)
    part = tiny("part", **diag, **{"train.stop_step": stop, "checkpoint.every": 100})
    train(part)
    assert load_checkpoint(Path(part.log.out_dir) / CHECKPOINT_NAME)["step"] == stop
    train(tiny("part", **diag))
    a, b = csv_files(Path(ref.log.out_dir)), csv_files(Path(part.log.out_dir))
    assert set(a) == {"metrics.csv", "diagnostics.csv"} == set(b)
    assert {r["quantity"] for r in a["diagnostics.csv"]} >= {"spectral_rel_w", "spectral_rel_dw"}
    assert [r["step"] for r in a["diagnostics.csv"]][-1] == "12"
    for name in a:
        assert len(a[name]) == len(b[name]), name
        for ra, rb in zip(a[name], b[name], strict=True):
            assert ra == rb, (name, ra, rb)


def test_python_and_numpy_generators_are_seeded_from_the_run(tiny):
    draws = []
    for noise in (1, 2):
        random.seed(noise)
        np.random.seed(noise)
        setup(tiny("seeded", **{"train.seed": 7}), Processes())
        draws.append((random.random(), float(np.random.rand())))
    assert draws[0] == draws[1]
    setup(tiny("seeded", **{"train.seed": 8}), Processes())
    assert (random.random(), float(np.random.rand())) != draws[0]
