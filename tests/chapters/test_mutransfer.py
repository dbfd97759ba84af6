"""Chapter 08 (ntk.chapters.mutransfer): one muTransfer run and the transferred-lr readout."""

import math

import numpy as np
import pandas as pd
import pytest

from ntk.chapters.mutransfer import (
    at_transferred_lr,
    labelled,
    largest_stable_lr,
    payoff,
    train_mlp,
    widening_z,
    width_slope,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in conftest.py


def test_train_mlp_is_seeded_and_finite_for_both_parametrizations():
    for parametrization in ("sp", "mup"):
        loss = train_mlp(parametrization, 32, 2.0**-6, seed=0)
        assert math.isfinite(loss) and loss < math.log(10)  # better than chance
        assert train_mlp(parametrization, 32, 2.0**-6, seed=0) == loss


def test_mup_is_sp_at_the_base_width_and_differs_above():
    # the same draws and, at width_mult 1, MuAdam/MuSGD are Adam/SGD: identical runs
    assert train_mlp("mup", 32, 2.0**-5, seed=1) == train_mlp("sp", 32, 2.0**-5, seed=1)
    sgd = dict(optimizer="sgd", depth=3)
    assert train_mlp("mup", 32, 0.5, seed=1, **sgd) == train_mlp("sp", 32, 0.5, seed=1, **sgd)
    assert train_mlp("mup", 64, 2.0**-5, seed=1) != train_mlp("sp", 64, 2.0**-5, seed=1)


def test_at_transferred_lr_reads_the_narrowest_muP_optimum():
    opt = pd.DataFrame(
        dict(
            parametrization=["mup", "mup", "sp"], width=[64, 32, 32], log2_lr_opt=[-5.0, -6.0, -3.0]
        )
    )
    summary = pd.DataFrame(
        dict(
            parametrization=["mup"] * 4 + ["sp"],
            width=[32, 64, 32, 64, 32],
            log2_lr=[-6.0, -6.0, -5.0, -5.0, -6.0],
            mean=[0.5, 0.4, 0.6, 0.3, 9.0],
            stderr=[0.01] * 5,
        )
    )
    transferred, at = at_transferred_lr(summary, opt)
    assert transferred == -6.0
    assert list(at.index) == [32, 64] and list(at["mean"]) == [0.5, 0.4]


def test_payoff_compares_transfer_with_the_sp_optimum():
    summary = pd.DataFrame(
        dict(
            parametrization=["mup"] * 4 + ["sp"] * 4,
            width=[32, 32, 64, 64] * 2,
            log2_lr=[-6.0, -5.0] * 4,
            mean=[0.5, 0.6, 0.3, 0.4, 0.5, 0.6, 0.9, 0.45],
            stderr=[0.01] * 8,
        )
    )
    opt = pd.DataFrame(
        dict(
            parametrization=["mup", "mup", "sp", "sp"],
            width=[32, 64, 32, 64],
            log2_lr_opt=[-6.0, -6.0, -6.0, -5.0],
            loss_opt=[0.5, 0.3, 0.5, 0.45],
            stderr_opt=[0.01] * 4,
        )
    )
    pay = payoff(summary, opt)
    assert pay.loc[64, ("muP, lr tuned at the narrowest width", "mean")] == 0.3
    assert pay.loc[64, ("global-lr SP, lr tuned at the narrowest width", "mean")] == 0.9
    assert pay.loc[64, ("global-lr SP, lr tuned at every width", "mean")] == 0.45
    with pytest.raises(ValueError, match="parametrization 'ntk'"):
        at_transferred_lr(summary, opt, "ntk")


def test_width_slope_is_signed_octaves_per_doubling():
    widths = [32, 64, 128, 256]
    table = pd.DataFrame(
        dict(
            parametrization=["sp"] * 4 + ["mup"] * 4 + ["up"] * 4,
            width=widths * 3,
            log2_lr_opt=[-4.0, -5.0, -6.0, -7.0] + [-4.0] * 4 + [-7.0, -6.0, -5.0, -4.0],
        )
    )
    slopes = width_slope(table, "log2_lr_opt")
    assert slopes["sp"] == pytest.approx(-1.0)  # the 1/n law
    assert slopes["mup"] == pytest.approx(0.0, abs=1e-12)
    assert slopes["up"] == pytest.approx(1.0)  # a rightward drift has the opposite sign
    table.loc[0, "log2_lr_opt"] = math.nan
    assert math.isnan(width_slope(table, "log2_lr_opt")["sp"])
    with pytest.raises(ValueError, match="'loss'"):
        width_slope(table, "loss")


def test_largest_stable_lr_skips_diverged_learning_rates():
    summary = pd.DataFrame(
        dict(
            parametrization=["sp"] * 6,
            width=[32, 32, 32, 64, 64, 64],
            log2_lr=[-1.0, 0.0, 1.0] * 2,
            mean=[0.3, 0.2, 0.5, 0.3, np.inf, np.inf],
        )
    )
    stable = largest_stable_lr(summary)
    assert list(stable["log2_lr_stable"]) == [1.0, -1.0]
    assert width_slope(stable, "log2_lr_stable")["sp"] == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="summarize"):
        largest_stable_lr(summary.drop(columns="mean"))


def test_init_std_and_output_multiplier_keep_mup_equal_to_sp_at_the_base_width():
    for hp in (dict(weight_std=0.5), dict(output_mult=0.25)):
        sp = train_mlp("sp", 32, 2.0**-4, seed=0, **hp)
        assert train_mlp("mup", 32, 2.0**-4, seed=0, **hp) == sp
        assert sp != train_mlp("sp", 32, 2.0**-4, seed=0)  # the hyperparameter acts


def test_widening_z_flags_a_loss_that_grows_with_width():
    summary = pd.DataFrame(
        dict(
            parametrization=["mup"] * 4,
            width=[32, 64, 32, 64],
            log2_lr=[0.0, 0.0, 1.0, 1.0],
            mean=[0.5, 0.3, 0.5, 0.7],
            stderr=[0.03, 0.04, 0.03, 0.04],
        )
    )
    z = widening_z(summary, "mup")
    assert z[0.0] == pytest.approx(-4.0) and z[1.0] == pytest.approx(4.0)
    assert labelled(summary)["parametrization"].unique().tolist() == ["muP"]
    with pytest.raises(ValueError, match="'sp'"):
        widening_z(summary, "sp")
