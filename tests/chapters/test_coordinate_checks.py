"""Chapter 07 (ntk.chapters.coordinate_checks): mup's runner next to ours, spectral logging."""

import math

import pytest
import torch
from mup import MuAdam

from ntk.chapters.coordinate_checks import (
    SpectralLog,
    exponent_table,
    mup_coord_data,
    spectral_exponents,
)
from ntk.data import load_digits_task
from ntk.models import WideMLP_MuP
from ntk.scaling.coord_check import coord_check

pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in conftest.py

WIDTHS, SEEDS, STEPS, LR = [32, 64], [0, 1], 2, 1e-2


def mup_model(width):
    model = WideMLP_MuP(64, width, 10, depth=2, weight_std=math.sqrt(2), base_width=32)
    return model, MuAdam(model.parameters(), lr=LR)


def test_mup_runner_matches_coord_check_and_spectra_are_logged():
    task = load_digits_task(seed=0)
    batch = (task.x_train[:32], task.y_train[:32])
    log = SpectralLog()
    ours = coord_check(
        mup_model, WIDTHS, batch, steps=STEPS, seeds=SEEDS, on_step=log.on_step("muP")
    )
    theirs = mup_coord_data(
        lambda w: mup_model(w)[0], WIDTHS, batch, lr=LR, steps=STEPS, seeds=SEEDS
    )
    both = ours.merge(theirs, on=["width", "module", "step", "seed"], suffixes=("", "_mup"))
    assert len(both) == len(ours) == len(theirs)
    rel = ((both["act_size"] - both["act_size_mup"]).abs() / both["act_size_mup"]).max()
    assert rel < 1e-5
    table = exponent_table(ours)
    assert list(table.columns) == [1, 2] and table.abs().max().max() < 0.5
    spectra = log.frame()
    assert set(spectra["step"]) == {0, 1, 2} and set(spectra["width"]) == set(WIDTHS)
    last = spectra[spectra["step"] == STEPS]
    exps = spectral_exponents(last, "muP")
    assert {"rel_w", "rel_dw"} <= set(exps.columns)
    assert torch.isfinite(torch.tensor(exps.to_numpy())).all()
