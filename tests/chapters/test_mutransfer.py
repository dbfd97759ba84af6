"""Chapter 08 (ntk.chapters.mutransfer): one muTransfer run and the transferred-lr readout."""

import math

import pandas as pd
import pytest

from ntk.chapters.mutransfer import at_transferred_lr, train_mlp

pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in conftest.py


def test_train_mlp_is_seeded_and_finite_for_both_parametrizations():
    for parametrization in ("sp", "mup"):
        loss = train_mlp(parametrization, 32, 2.0**-6, seed=0)
        assert math.isfinite(loss) and loss < math.log(10)  # better than chance
        assert train_mlp(parametrization, 32, 2.0**-6, seed=0) == loss


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
