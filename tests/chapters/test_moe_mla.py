"""Chapter 15's routing readouts on a tiny MoE GPT, and its entropy slopes on known tables."""

from dataclasses import replace

import pandas as pd
import pytest

from ntk.chapters import moe_mla as ch

pytestmark = pytest.mark.usefixtures("single_thread")


def test_entropy_slopes_are_per_doubling_of_the_width():
    df = pd.DataFrame(
        dict(width=[16, 32, 64, 16], seed=[0, 0, 0, 1], load=[0.9, 0.8, 0.7, 0.9], token=0.5)
    )
    slopes = ch.entropy_slopes(df)
    assert slopes["load"] == pytest.approx(-0.1)
    assert slopes["token"] == pytest.approx(0.0, abs=1e-12)


def test_routing_by_width_measures_entropies_in_units_of_log_e():
    scale = replace(
        ch.NOTEBOOK["moe"],
        coord=replace(ch.NOTEBOOK["moe"].coord, base_width=16, block_size=8),
        coord_widths=(16, 32),
        coord_seeds=(0,),
    )
    df = ch.routing_by_width(scale, "mup", steps=1, batch_size=2)
    assert list(df["width"]) == [16, 32]
    assert ((df[["load", "token"]] > 0) & (df[["load", "token"]] <= 1 + 1e-9)).all().all()
