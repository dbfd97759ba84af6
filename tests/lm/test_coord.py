"""The GPT's coordinate check: every group recorded, attention logits included, zero inits."""

import pytest

from ntk.lm.coord import (
    GROUPS,
    HIDDEN,
    OUTER,
    SPEEDRUN_GROUPS,
    fit_groups,
    gpt_coord_check,
    group_of,
    worst_exponents,
)
from ntk.lm.transfer import LMSetup

pytestmark = pytest.mark.usefixtures("single_thread")

SETUP = LMSetup(level="char", n_layer=2, n_head=2, block_size=8, base_width=16)


def test_group_of_names_every_recorded_module():
    assert group_of("wte") == "embedding"
    assert group_of("blocks.1.attn.attn_logits") == "attention logits"
    assert group_of("blocks.0.mlp.down") == "mlp down"
    assert group_of("blocks.3") == "residual stream"
    assert group_of("blocks.0.ln_1") is None and group_of("ln_f") is None
    assert group_of("value_embeds.0") == "value embedding" and group_of("skips.1") == "skip terms"
    assert group_of("blocks.0.x0_mix.b") == "x0 term" and group_of("blocks.0.x0_mix.a") is None
    assert len(HIDDEN) == len(GROUPS) - len(OUTER)


@pytest.fixture(scope="module")
def records():
    run = dict(lr=2.0**-4, setup=SETUP, steps=2, seeds=(0,), batch_size=2)
    return {p: gpt_coord_check(p, (16, 32), **run) for p in ("sp", "mup")}


def test_every_group_is_recorded_with_the_attention_logits(records):
    for df in records.values():
        assert set(df["group"]) == set(GROUPS.values()) - set(SPEEDRUN_GROUPS.values())
        logits = df[df["group"] == "attention logits"]
        assert set(logits["module"]) == {"blocks.0.attn.attn_logits", "blocks.1.attn.attn_logits"}


def test_mup_zero_inits_show_in_the_records(records):
    mup, sp = records["mup"], records["sp"]
    at0 = mup[mup["step"] == 0].groupby("group")["act_size"].max()
    assert at0["query"] == 0 and at0["attention logits"] == 0 and at0["readout (logits)"] == 0
    assert at0["key"] > 0
    sp0 = sp[sp["step"] == 0].groupby("group")["act_size"].min()
    assert (sp0 > 0).all()


def test_fit_groups_leaves_out_exact_zeros(records):
    fits = fit_groups(records["mup"])
    assert set(fits.columns) == {"group", "quantity", "step", "mean", "min", "max"}
    logits = fits[fits["group"] == "attention logits"]
    assert 0 not in set(logits["step"])  # zero at step 0 at every width: nothing to fit
    lo, hi = worst_exponents(fit_groups(records["sp"]), HIDDEN, [2])
    assert lo <= hi
    with pytest.raises(ValueError, match="no fitted exponents"):
        worst_exponents(fits, ["query"], [99])
