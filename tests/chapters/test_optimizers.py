"""Chapter 14's variants and readouts on inputs with known answers (tiny)."""

import itertools

import pandas as pd
import pytest

from ntk.chapters import optimizers as ch

pytestmark = pytest.mark.usefixtures("single_thread")


def test_variants_map_to_the_engine():
    assert ch.options("adamw-mup", 0.01) == ("mup", {})
    name, opts = ch.options("muon-sp-global", 0.01)
    assert name == "sp" and opts["lr_rule"] == "global" and opts["muon_rule"] == "keller"
    assert opts["muon_lr"] == pytest.approx(ch.MUON_LR_RATIO * 0.01)


def test_moonshot_global_undoes_the_engines_correction():
    lrs = {}
    for v in ("muon-moonshot", "muon-moonshot-global"):
        _, opt = ch.mlp_model(v, 256, lr=0.01, base_width=64)
        lrs[v] = opt.muon.param_groups[0]["lr"]
    assert lrs["muon-moonshot-global"] == pytest.approx(2 * lrs["muon-moonshot"])  # (256/64)^1/2


def test_transfer_table_reads_drift_and_losses():
    rows = []
    for (v, opt), w, a in itertools.product(
        [("flat", -6), ("moving", None)], (32, 64, 128), range(-8, -3)
    ):
        best = opt if opt is not None else {32: -5, 64: -6, 128: -7}[w]
        loss = (a - best) ** 2 + 4.0 - w / 1000
        rows.append(dict(parametrization=v, width=w, log2_lr=float(a), seed=0, loss=loss))
    df = pd.DataFrame(rows).assign(lr=lambda d: 2.0 ** d["log2_lr"])
    t = ch.transfer_table(df)
    assert t.loc["flat", "drift_steps"] == 0 and t.loc["moving", "drift_steps"] == 2
    assert t.loc["moving", "tuned_log2_lr"] == -5
    assert t.loc["flat", "loss@128"] == pytest.approx(4.0 - 0.128)
