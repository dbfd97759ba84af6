"""Chapter 08 (ntk.chapters.mutransfer): one muTransfer run and the transferred-lr readout."""

import math

import pandas as pd
import pytest

from ntk.chapters.mutransfer import at_transferred_lr, payoff, train_mlp

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
    assert pay.loc[64, ("mup, lr tuned at the narrowest width", "mean")] == 0.3
    assert pay.loc[64, ("sp, lr tuned at the narrowest width", "mean")] == 0.9
    assert pay.loc[64, ("sp, lr tuned at every width", "mean")] == 0.45
    with pytest.raises(ValueError, match="parametrization 'ntk'"):
        at_transferred_lr(summary, opt, "ntk")
