"""Chapter 09's readouts on tables with known answers, and its script end to end (tiny)."""

import itertools

import numpy as np
import pandas as pd
import pytest

from ntk.chapters import mup_transformer as ch
from ntk.lm.coord import GROUPS, HIDDEN, SPEEDRUN_GROUPS

pytestmark = pytest.mark.usefixtures("single_thread")


def sweep_table(sp_opt, mup_opt, mup_best, widths=(16, 32, 64, 128), lrs=range(-7, 0)):
    """Losses (log2_lr - opt)^2 / 4 + best + seed noise: the optimum is known per width."""
    rows = []
    for (i, w), a, s in itertools.product(enumerate(widths), lrs, range(3)):
        for p, opt, best in (("sp", sp_opt[i], 3.0), ("mup", mup_opt[i], mup_best[i])):
            loss = (a - opt) ** 2 / 4 + best + 0.01 * (s - 1)
            rows.append(dict(parametrization=p, width=w, log2_lr=float(a), seed=s, loss=loss))
    df = pd.DataFrame(rows)
    return df.assign(lr=2.0 ** df["log2_lr"])[
        ["parametrization", "width", "log2_lr", "seed", "lr", "loss"]
    ]


def test_transfer_claims_read_drifts_and_the_margin():
    df = sweep_table(
        sp_opt=[-2, -3, -4, -5], mup_opt=[-3, -3, -3, -2], mup_best=[2.4, 2.3, 2.2, 2.1]
    )
    c = ch.transfer_claims(df)
    assert c["drift_steps"] == {"mup": 1.0, "sp": 3.0}
    assert c["transferred"] == -3.0
    assert not c["sp_wide_diverges"] and not c["at_edge"]
    # at -3 the widest muP model is 1 step from its optimum: 2.1 + 1/4 = 2.35 vs 2.4
    assert list(c["at_transfer"]["mean"]) == pytest.approx([2.4, 2.3, 2.2, 2.35])
    se = c["at_transfer"]["stderr"].iloc[0]
    assert c["margin_se"] == pytest.approx(0.05 / np.hypot(se, se))
    assert c["drops_se"] == pytest.approx(
        [0.1 / np.hypot(se, se), 0.1 / np.hypot(se, se), -0.15 / np.hypot(se, se)]
    )
    assert c["opt_slope"]["sp"] == pytest.approx(-1.0)
    assert c["near_drift_steps"] == {"mup": 1.0, "sp": 3.0}  # no ties: the argmin's drift


def test_near_drift_is_robust_to_a_tie_between_neighbouring_learning_rates():
    # width 128's optimum at -3.5: -3 and -4 tie, the argmin drift is 1 or 2 steps
    df = sweep_table(sp_opt=[-2, -3, -4, -5], mup_opt=[-2, -3, -3, -3.5], mup_best=[2.4] * 4)
    c = ch.transfer_claims(df)
    assert c["near_drift_steps"]["mup"] == 1.0
    summary = ch.summarize(df)
    assert ch.near_drift(summary, "mup", n_se=0.0) in (1.0, 2.0)
    with pytest.raises(ValueError, match="no finite"):
        ch.near_drift(summary, "ntk")


def test_transfer_claims_count_sp_divergence_at_the_narrow_optimum():
    df = sweep_table(sp_opt=[-2, -2, -2, -2], mup_opt=[-3] * 4, mup_best=[2.4, 2.3, 2.2, 2.1])
    wide = (df["parametrization"] == "sp") & (df["width"] == 128) & (df["log2_lr"] >= -2)
    df.loc[wide, "loss"] = np.inf
    c = ch.transfer_claims(df)
    assert c["sp_wide_diverges"]


def fits_table(mup_exp, sp_exp):
    rows = [
        dict(parametrization=p, group=g, quantity=q, step=t, mean=e, min=e - 0.05, max=e + 0.05)
        for p, e in (("mup", mup_exp), ("sp", sp_exp))
        for g in GROUPS.values()
        for q in ("act_size", "delta_size")
        for t in (1, 2)
    ]
    return pd.DataFrame(rows)


def test_coord_claims_read_group_means_and_module_extremes():
    c = ch.coord_claims(fits_table(0.02, 0.9), (2,))
    assert c["mup_max_abs"] == pytest.approx(0.02)
    assert c["mup_module_max_abs"] == pytest.approx(0.07)
    assert c["sp_hidden_min"] == pytest.approx(0.9)
    assert (c["mup_groups"], c["sp_hidden_groups"]) == (len(GROUPS), len(HIDDEN))
    assert c["sp_readout_min"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="no fitted exponents"):
        ch.coord_claims(fits_table(0.0, 1.0), (7,))


def test_script_runs_both_experiments_and_writes_the_figures(tmp_path):
    out = ch.main(["--scale", "smoke", "--workers", "1", "--out", str(tmp_path)])
    assert {p.name for p in tmp_path.glob("*.png")} == {"09_coord_check.png", "09_mutransfer.png"}
    assert len(out["results"]) == 2 * 2 * 2 * 2  # parametrizations x widths x lrs x seeds
    assert set(out["fits"]["group"]) == set(GROUPS.values()) - set(SPEEDRUN_GROUPS.values())


def test_zero_init_steps_reads_the_first_nonzero_step():
    rows = [
        dict(parametrization="mup", group=g, step=t, width=w, act_size=float(t >= first))
        for g, first in (("query", 2), ("attention logits", 2), ("readout (logits)", 1))
        for t in range(4)
        for w in (16, 32)
    ]
    df = pd.DataFrame(rows)
    assert ch.zero_init_steps(df) == {"query": 2, "attention logits": 2, "readout (logits)": 1}
    df.loc[(df["group"] == "query") & (df["step"] == 0) & (df["width"] == 32), "act_size"] = 1e-9
    assert ch.zero_init_steps(df)["query"] is None  # not exactly zero at init
