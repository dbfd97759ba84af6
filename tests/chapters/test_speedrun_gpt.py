"""Chapter 13's broken-muP builders and its readouts on tables with known answers."""

import pandas as pd
import pytest

from ntk.chapters import speedrun_gpt as ch
from ntk.lm.coord import GROUPS
from ntk.lm.speedrun import Scalar
from ntk.lm.transfer import build

pytestmark = pytest.mark.usefixtures("single_thread")
SETUP = ch.NOTEBOOK.coord


def lrs(model, optimizer) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in optimizer.param_groups}


def test_each_broken_rule_changes_only_its_own_component():
    good = build("mup", 128, 0.01, 0, SETUP)  # m = 2
    for rule in ch.BROKEN:
        model, optimizer = ch.broken_build(rule)("mup", 128, 0.01, 0, SETUP)
        changed = {name for name, lr in lrs(model, optimizer).items() if lr != lrs(*good)[name]}
        scale = model.blocks[0].attn.softmax_scale
        if rule.startswith("value"):
            assert changed == {"value_embeds.0"}
        elif rule.startswith("scalar"):
            (rest,) = [g for g in optimizer.param_groups if g["name"] == "rest"]
            assert changed == {"rest"} and rest["lr"] == 0.005
            assert len(rest["params"]) == sum(isinstance(m, Scalar) for m in model.modules())
        else:
            assert not changed and scale == pytest.approx(32**-0.5)  # SP's 1/sqrt(d), d = 32
        if not rule.startswith("attention"):
            assert scale == pytest.approx(16**0.5 / 32)  # muP's sqrt(d0) / d
    with pytest.raises(ValueError, match="rule must be one of"):
        ch.broken_build("no rule")


def fits_table(mup: float, sp: float, broken: float) -> pd.DataFrame:
    variants = {"mup": mup, "sp": sp, **{f"muP, {r}": broken for r in ch.BROKEN}}
    rows = [
        dict(variant=v, group=g, quantity=q, step=t, mean=e, min=e, max=e)
        for v, e in variants.items()
        for g in GROUPS.values()
        for q in ("act_size", "delta_size")
        for t in (5, 6)
    ]
    return pd.DataFrame(rows)


def test_coord_claims_read_the_variants():
    c = ch.coord_claims(fits_table(0.03, 0.8, -1.0), (5, 6))
    assert c["mup_max_abs"] == pytest.approx(0.03) and c["mup_groups"] == len(GROUPS)
    assert c["sp_min"] == pytest.approx(0.8)
    assert c["broken"] == pytest.approx({r: 1.0 for r in ch.BROKEN})


def test_precision_and_tokens_to_target_readouts():
    prec = pd.DataFrame(
        dict(autocast=["none", "none", "bf16", "bf16"], seed=[0, 1, 0, 1], loss=[3, 3.2, 3, 3.4])
    )
    p = ch.precision_claims(prec)
    assert p["diff"] == pytest.approx(0.1) and p["fp32_std"] == pytest.approx(0.2 / 2**0.5)
    curves = pd.DataFrame(
        dict(
            block=["nanogpt"] * 3 + ["speedrun"] * 3,
            seed=0,
            tokens=[10, 20, 30] * 2,
            loss=[5.0, 4.0, 3.0, 4.5, 2.9, 2.5],
        )
    )
    assert ch.tokens_to_target(curves) == dict(target=3.0, tokens=20, total=30, speedrun_final=2.5)
