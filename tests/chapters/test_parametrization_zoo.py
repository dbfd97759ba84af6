"""Chapter 06 (ntk.chapters.parametrization_zoo): the training helpers behind the notebook."""

import math

import numpy as np
import pandas as pd
import pytest

from ntk.chapters.parametrization_zoo import (
    SP_GLOBAL_LR,
    adam_losses,
    config,
    probe_scales,
    slopes_by_parametrization,
    sp_global_lr_rule,
    sweep_cell,
    update_terms,
)
from ntk.fitting import fit_loglog_slope
from ntk.models import WideMLP
from ntk.scaling import Parametrization

pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in conftest.py


def test_sp_with_one_global_lr_is_the_constant_rule():
    cfg = config(SP_GLOBAL_LR, 0.01, 32)
    param = Parametrization(WideMLP(64, 128, 10, depth=2), cfg)
    assert [layer.c for layer in param.layers] == [0, 0, 0]
    assert {g["lr"] for g in param.param_groups} == {0.01}  # one learning rate everywhere
    assert config("mup", 0.01, 32).parametrization == "mup"
    deep = Parametrization(WideMLP(64, 128, 10, depth=3), config(SP_GLOBAL_LR, 0.01, 32))
    assert [layer.b for layer in deep.layers] == sp_global_lr_rule(3)["b"] == [0, 0.5, 0.5, 0.5]


def test_update_terms_add_up_and_scale_as_the_recursion_says():
    # one Adam step: dz = dW x + W dx + dW dx exactly (the third is the remainder, so check
    # the triangle inequality), the embedding's input does not move, and with one global lr
    # the first hidden layer's dW x grows like n^(alpha - e) = n^1 (Adam's sign step)
    cfg = config(SP_GLOBAL_LR, 2.0**-9, 64)
    rows = {w: update_terms(cfg, w, depth=2, batch=16) for w in (64, 256)}
    for terms in rows.values():
        assert len(terms) == 3  # embedding, hidden, readout
        assert terms[0]["dx"] == terms[0]["W dx"] == terms[0]["dW dx"] == 0
        for t in terms[1:]:
            assert t["dz"] <= t["dW x"] + t["W dx"] + t["dW dx"] + 1e-12
            assert t["dx"] > 0
    slope = fit_loglog_slope([64, 256], [rows[w][1]["dW x"] for w in (64, 256)])
    assert abs(slope - 1) < 0.1
    mup = [update_terms(config("mup", 2.0**-9, 64), w, depth=2, batch=16) for w in (64, 256)]
    assert abs(fit_loglog_slope([64, 256], [m[1]["dW x"] for m in mup])) < 0.1  # muP: Theta(1)


def test_abc_symmetry_holds_in_training_with_scaled_eps():
    # ntk is sp shifted along the abc-symmetry: identical losses when eps scales per layer
    sp, ntk = adam_losses("sp", 128, True, steps=5), adam_losses("ntk", 128, True, steps=5)
    assert np.abs(sp - ntk).max() < 1e-12
    assert sp[-1] < sp[0]


def test_probe_scales_and_slopes():
    rows = [
        dict(parametrization=p, width=w, **probe_scales(config(p, 2.0**-9, 64), w))
        for p in ("sp", "mup")
        for w in (64, 256)
    ]
    df = pd.DataFrame(rows)
    slopes = slopes_by_parametrization(df, "out_init")
    assert abs(slopes["sp"]) < 0.25 and abs(slopes["mup"] + 0.5) < 0.25  # O(1) vs n^-1/2
    assert (df.feature_change > 0).all()


def test_sweep_cell_scores_a_run():
    loss = sweep_cell("mup", 32, 2.0**-6, seed=0, steps=10)
    assert math.isfinite(loss) and 0 < loss < 1
    assert sweep_cell("mup", 32, 2.0**-6, seed=0, steps=10) == loss  # seeded
