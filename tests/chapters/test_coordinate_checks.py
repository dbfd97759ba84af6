"""Chapter 07 (ntk.chapters.coordinate_checks): mup's runner next to ours, spectral logging."""

import math

import numpy as np
import pytest
import torch
from mup import MuAdam

from ntk.chapters.coordinate_checks import (
    SpectralLog,
    exponent_table,
    gaussian_rel_w_exponent,
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


def test_gaussian_rel_w_exponent_matches_sampled_matrices():
    widths = [64, 128, 256, 512]
    shapes = {  # (fan_out, fan_in) per width: input layer, hidden layer, readout
        "input": [(n, 64) for n in widths],
        "hidden": [(n, n) for n in widths],
        "readout": [(10, n) for n in widths],
    }
    gen = torch.Generator().manual_seed(0)
    for name, dims in shapes.items():
        ratios = []
        for fan_out, fan_in in dims:
            w = torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64) / fan_in**0.5
            ratios.append(float(torch.linalg.matrix_norm(w, ord=2)) / (fan_out / fan_in) ** 0.5)
        measured = np.polyfit(np.log(widths), np.log(ratios), 1)[0]
        predicted = gaussian_rel_w_exponent(widths, [d[1] for d in dims], [d[0] for d in dims])
        assert measured == pytest.approx(predicted, abs=0.05), name
    assert gaussian_rel_w_exponent(widths, widths, widths) == pytest.approx(0.0, abs=1e-12)
    # the readout tends to 1/2 (std 1/sqrt(n) where the spectral condition asks for 1/n)
    assert 0.45 < gaussian_rel_w_exponent([2**20, 2**21], [2**20, 2**21], [10, 10]) < 0.5
    with pytest.raises(ValueError, match="equal length"):
        gaussian_rel_w_exponent(widths, [64] * 3, widths)
    with pytest.raises(ValueError, match="> 0"):
        gaussian_rel_w_exponent(widths, [0] * 4, widths)
