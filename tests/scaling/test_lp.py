"""The per-layer learning-rate LP (ntk.scaling.lp) against the static tables of Everett et al.
(2024), the greedy derivation of abc_rules, and its own constraints."""

from __future__ import annotations

import itertools
import math

import pytest

from ntk.scaling.abc_rules import (
    ALIGNMENT_EXPONENTS,
    ALIGNMENTS,
    OPTIMIZER_FAMILIES,
    PARAMETRIZATIONS,
    Alignment,
    abc_shift,
    abc_table,
    max_lr_exponents,
)
from ntk.scaling.lp import (
    InfeasibleExponentsError,
    constraint_violations,
    solve_lr_exponents,
)

CHAINS = [
    ["embedding", "readout"],
    ["embedding", "hidden", "readout"],
    ["embedding", "hidden", "hidden", "hidden", "readout"],
]
COMBOS = list(itertools.product(PARAMETRIZATIONS, OPTIMIZER_FAMILIES, ALIGNMENTS))


def _ab(name: str, opt: str, chain: list[str]) -> tuple[list[float], list[float]]:
    t = abc_table(name, opt, "full", chain)
    return [x.a for x in t], [x.b for x in t]


@pytest.mark.parametrize("name,opt,align", COMBOS)
def test_full_and_no_alignment_give_the_static_tables_exactly(name, opt, align):
    for chain in CHAINS[1:]:
        a, b = _ab(name, opt, chain)
        expected = [x.c for x in abc_table(name, opt, align, chain)]
        solution = solve_lr_exponents(a, b, chain, align, opt)
        assert solution.c == expected, (chain, solution.c, expected)
        assert all(r >= 0 for r in solution.r) and solution.r[-2] == 0


@pytest.mark.parametrize("opt,align", list(itertools.product(OPTIMIZER_FAMILIES, ALIGNMENTS)))
def test_abc_shifted_exponents_give_shifted_learning_rates(opt, align):
    # any (a, b) on the abc-symmetry orbit of muP: c follows the shift (Adam c - t, SGD c - 2t)
    chain = CHAINS[2]
    base = abc_table("mup", opt, align, chain)
    ts = [0.3, -0.2, 0.7, 0.1, -0.4]
    shifted = [abc_shift(x, t, opt) for x, t in zip(base, ts, strict=True)]
    solution = solve_lr_exponents([x.a for x in shifted], [x.b for x in shifted], chain, align, opt)
    assert solution.c == pytest.approx([x.c for x in shifted], abs=1e-9)


def test_agrees_with_the_greedy_derivation_for_uniform_alignment():
    # with alpha = u in every layer the greedy layer-by-layer solution of abc_rules is optimal
    chain = CHAINS[2]
    for name, opt in itertools.product(PARAMETRIZATIONS, OPTIMIZER_FAMILIES):
        a, b = _ab(name, opt, chain)
        for x in (0.5, 0.6, 0.75, 0.9, 1.0):
            al = Alignment(x, 0.5, x)
            greedy = max_lr_exponents(a, b, chain, opt, al)
            assert solve_lr_exponents(a, b, chain, al, opt).c == pytest.approx(greedy, abs=1e-9)


@pytest.mark.parametrize("name,opt", list(itertools.product(PARAMETRIZATIONS, OPTIMIZER_FAMILIES)))
def test_relaxed_alignment_gives_larger_learning_rates(name, opt):
    chain = CHAINS[2]
    a, b = _ab(name, opt, chain)
    full = solve_lr_exponents(a, b, chain, "full", opt).c
    for x in (0.9, 0.75, 0.6):
        relaxed = solve_lr_exponents(a, b, chain, Alignment(x, 0.5, x), opt).c
        assert all(r <= f + 1e-12 for r, f in zip(relaxed, full, strict=True)), (x, relaxed)
        # hidden layers gain exactly 1 - x: the units of alignment and c are the same
        assert [f - r for f, r in zip(full[1:4], relaxed[1:4], strict=True)] == pytest.approx(
            [1 - x] * 3, abs=1e-9
        )


def _grid() -> list[tuple[str, str, list[Alignment | None]]]:
    """Per-layer alignments on a grid, omega slightly above 1/2 in places (real inputs)."""
    cases = []
    for name, opt in itertools.product(("sp", "mup", "ntk"), OPTIMIZER_FAMILIES):
        for alpha, omega, u in itertools.product((0.55, 0.8, 1.0), (0.5, 0.55), (0.5, 0.7, 1.0)):
            layers = [
                None,
                Alignment(alpha, omega, u),
                Alignment(1.0, omega + 0.05, u * 0.9),
                Alignment(alpha * 0.9, 0.5, u),
                Alignment(alpha, 0.5, u),
            ]
            cases.append((name, opt, layers))
    return cases


def test_every_solution_satisfies_every_constraint_and_no_c_can_be_lowered():
    chain = CHAINS[2]
    solved = 0
    for name, opt, al in _grid():
        a, b = _ab(name, opt, chain)
        solution = solve_lr_exponents(a, b, chain, al, opt)
        solved += 1
        assert constraint_violations(a, b, solution.c, chain, al, opt) == []
        # optimality (necessary): lowering any single c breaks a constraint
        for i in range(len(chain)):
            c = list(solution.c)
            c[i] -= 0.01
            assert constraint_violations(a, b, c, chain, al, opt), (name, opt, al, i)
    assert solved == len(_grid())


def test_omega_above_one_half_is_paid_for_upstream():
    # W dx of layer 2 needs r_1 >= omega_2 - 1/2: the LP lowers earlier learning rates
    chain = ["embedding", "hidden", "hidden", "readout"]
    a, b = _ab("mup", "adam", chain)
    al = [None, Alignment(0.8, 0.5, 0.7), Alignment(0.8, 0.6, 0.7), Alignment(0.9, 0.9, 0.9)]
    solution = solve_lr_exponents(a, b, chain, al, "adam")
    assert solution.r[1] == pytest.approx(0.1, abs=1e-9)
    assert solution.r[2] == 0.0  # feature learning in the last hidden layer
    assert solution.c == pytest.approx([0.6, 0.9, 0.8, 0.4], abs=1e-9)


def test_infeasible_inputs_name_the_layer_and_the_constraint():
    # SP's readout has a + b = 1/2: with omega = 1 there (its W_0 and dx aligned) the logits
    # stay bounded only if the last hidden layer's features move by n^-1/2: no feature learning
    chain = ["embedding", "hidden", "hidden", "readout"]
    a, b = _ab("sp", "adam", chain)
    al = [None, Alignment(1, 0.5, 1), Alignment(1, 0.5, 1), Alignment(1, 1.0, 1)]
    with pytest.raises(InfeasibleExponentsError) as err:
        solve_lr_exponents(a, b, chain, al, "adam", names=["in", "h1", "h2", "out"])
    msg = str(err.value)
    assert "'out' (readout)" in msg and "W dx" in msg and "'h2'" in msg
    assert "feature learning" in msg and "0.5" in msg
    # without the feature-learning requirement the same inputs are feasible (r_2 = 1/2)
    solution = solve_lr_exponents(a, b, chain, al, "adam", feature_learning=False)
    assert solution.r[2] == pytest.approx(0.5)
    # muP's readout (a + b = 1) absorbs omega = 1
    a, b = _ab("mup", "adam", chain)
    assert solve_lr_exponents(a, b, chain, al, "adam").c == [0.5, 1.0, 1.0, 0.5]


def test_ratios_are_not_exponents():
    # a prototype fed the ratio rho ~ sqrt(n) (or rho / n) where log(rho) / log(n) belongs
    chain = ["embedding", "hidden", "readout"]
    a, b = _ab("mup", "adam", chain)
    n = 512
    rho = math.sqrt(n)
    with pytest.raises(ValueError, match=r"alpha = 22\.6.* > 1: alignment exponents"):
        solve_lr_exponents(
            a, b, chain, [None, Alignment(rho, rho, rho), Alignment(1, 1, 1)], "adam"
        )
    with pytest.raises(ValueError, match="log\\(ratio\\) / log\\(n\\)"):
        solve_lr_exponents(a, b, chain, Alignment(1.0, rho, 1.0), "adam")
    # the exponent itself is accepted and lands on the table
    half = Alignment(*(math.log(rho) / math.log(n),) * 3)
    assert solve_lr_exponents(a, b, chain, half, "adam").c == pytest.approx(
        [x.c for x in abc_table("mup", "adam", "no", chain)], abs=1e-12
    )


def test_bad_inputs_are_named():
    chain = ["embedding", "hidden", "readout"]
    a, b = _ab("mup", "adam", chain)
    with pytest.raises(ValueError, match="roles"):
        solve_lr_exponents(a, b, ["embedding", "middle", "readout"])
    with pytest.raises(ValueError, match="a must have"):
        solve_lr_exponents(a[:2], b, chain)
    with pytest.raises(ValueError, match=r"alignments\[1\]\.omega must be a finite"):
        solve_lr_exponents(a, b, chain, [None, Alignment(1, math.nan, 1), None])
    with pytest.raises(TypeError, match=r"alignments\[2\] \(readout\)"):
        solve_lr_exponents(a, b, chain, [None, ALIGNMENT_EXPONENTS["full"], None])
    with pytest.raises(ValueError, match="one Alignment per layer"):
        solve_lr_exponents(a, b, chain, [ALIGNMENT_EXPONENTS["full"]] * 2)
    with pytest.raises(ValueError, match="optimizer"):
        solve_lr_exponents(a, b, chain, "full", "lion")
    with pytest.raises(ValueError, match="alignments must be one of"):
        solve_lr_exponents(a, b, chain, "partial")
