"""abc-rules (ntk.scaling.abc_rules): the exponent tables of Everett et al. (2024), derived,
against the paper's values, the stability conditions and the abc-symmetry."""

from __future__ import annotations

import itertools

import pytest

from ntk.scaling.abc_rules import (
    ABC,
    ALIGNMENTS,
    OPTIMIZER_FAMILIES,
    PARAMETRIZATIONS,
    ROLES,
    abc_shift,
    abc_table,
    max_lr_exponents,
    role_exponents,
    stability_violations,
    update_exponents,
)

CHAIN = ["embedding", "hidden", "hidden", "hidden", "readout"]
COMBOS = list(itertools.product(PARAMETRIZATIONS, OPTIMIZER_FAMILIES, ALIGNMENTS))


@pytest.mark.parametrize("name,opt,align", COMBOS)
def test_tables_are_stable_and_maximal(name, opt, align):
    abcs = abc_table(name, opt, align, CHAIN)
    assert stability_violations(abcs, CHAIN) == []
    a, b, c = ([x[i] for x in abcs] for i in range(3))
    r = update_exponents(a, b, c, CHAIN, opt, align)
    assert all(x >= 0 for x in r), r  # stable after a step
    assert r[:-1] == [0.0] * 4, r  # embedding and hidden features move Theta(1)
    # maximal: a larger learning rate for any one layer breaks a constraint
    for i in range(len(CHAIN)):
        c2 = list(c)
        c2[i] -= 0.1
        r2 = update_exponents(a, b, c2, CHAIN, opt, align)
        capped = opt == "sgd" and CHAIN[i] == "readout" and a[i] + c2[i] < b[i]
        assert min(r2) < 0 or capped, (i, r2)


def test_known_values():
    t = {p: role_exponents(p, "adam", "full") for p in PARAMETRIZATIONS}
    assert [t["mup"][r] for r in ROLES] == [ABC(-0.5, 0.5, 0.5), ABC(0, 0.5, 1), ABC(0.5, 0.5, 0.5)]
    assert [t["sp"][r].c for r in ROLES] == [0, 1, 1]  # SP + Adam with per-layer lr (Everett)
    sgd = role_exponents("mup", "sgd", "full")
    assert [sgd[r].c for r in ROLES] == [0, 0, 0]  # Tensor Programs IV: muP, c = 0
    assert [x.c for x in role_exponents("mfp", "sgd", "full").values()] == [-1, -1, -1]  # lr ~ n
    # the mup package's convention (embedding a = 0, readout a = 1, Yang et al. 2022 Table 3):
    # Adam lr / width on hidden weights only; SGD lr * width on embedding and readout weights
    for opt, c_pkg in [("adam", (0, 1, 0)), ("sgd", (-1, 0, -1))]:
        m = role_exponents("mup", opt, "full")
        pkg = [abc_shift(m["embedding"], 0.5, opt), m["hidden"], abc_shift(m["readout"], 0.5, opt)]
        assert [(x.a, x.b) for x in pkg] == [(0, 0), (0, 0.5), (1, 0)]
        assert tuple(x.c for x in pkg) == c_pkg


@pytest.mark.parametrize("opt,align", list(itertools.product(OPTIMIZER_FAMILIES, ALIGNMENTS)))
def test_abc_symmetry(opt, align):
    for a_name, b_name in [("sp", "ntk"), ("mup", "mfp")]:
        x, y = role_exponents(a_name, opt, align), role_exponents(b_name, opt, align)
        for role in ROLES:
            assert abc_shift(x[role], y[role].a - x[role].a, opt) == y[role], (a_name, role)
        # and the predicted dynamics (r exponents) agree
        rx = update_exponents(
            *zip(*abc_table(a_name, opt, align, CHAIN), strict=True), CHAIN, opt, align
        )
        ry = update_exponents(
            *zip(*abc_table(b_name, opt, align, CHAIN), strict=True), CHAIN, opt, align
        )
        assert rx == ry
    # and the c derivation is itself symmetric: shift (a, b) arbitrarily, c follows
    base = abc_table("mup", opt, align, CHAIN)
    ts = [0.3, -0.2, 0.7, 0.1, -0.4]
    shifted = [abc_shift(x, t, opt) for x, t in zip(base, ts, strict=True)]
    c = max_lr_exponents([x.a for x in shifted], [x.b for x in shifted], CHAIN, opt, align)
    assert c == pytest.approx([x.c for x in shifted])


def test_table_errors():
    with pytest.raises(ValueError, match="parametrization"):
        abc_table("spp")
    with pytest.raises(ValueError, match="optimizer"):
        abc_table("mup", "rmsprop")
    with pytest.raises(ValueError, match="alignment"):
        abc_table("mup", "adam", "partial")
    with pytest.raises(ValueError, match="roles"):
        abc_table("mup", "adam", "full", ["embedding", "output"])
    with pytest.raises(ValueError, match="unstable"):  # hidden a + b < 1/2
        max_lr_exponents([0, 0, 0], [0, 0, 0.5], ["embedding", "hidden", "readout"])
    assert stability_violations([ABC(0, 0.5, 0)], ["embedding"]) != []
    roles = ["embedding", "hidden", "readout"]
    with pytest.raises(TypeError, match="roles must be a sequence"):  # not ['h', 'i', ...]
        abc_table("mup", "adam", "full", "hidden")
    with pytest.raises(ValueError, match="c must have one exponent per layer"):
        update_exponents([0, 0, 0], [0, 0.5, 0.5], [0], roles)
    with pytest.raises(ValueError, match=r"a\[1\] must be a finite number"):
        max_lr_exponents([0, float("nan"), 0], [0, 0.5, 0.5], roles)
    with pytest.raises(ValueError, match="abcs and roles"):
        stability_violations([ABC(0, 0, 0)], roles)
    with pytest.raises(TypeError, match="abc must be an ABC"):
        abc_shift(0.5, 0.1)
    with pytest.raises(TypeError, match="t must be a number"):
        abc_shift(ABC(0, 0, 0), "1")
    # plain (a, b, c) triples are accepted where an ABC is expected
    assert abc_shift((0, 0.5, 1), 0.5, "sgd") == ABC(0.5, 0.0, 0.0)
    assert stability_violations([(0, 0, 0), (0, 0.5, 1), (0.5, 0.5, 1)], roles) == []
