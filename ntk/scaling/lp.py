"""The largest stable per-layer learning rates for given alignment exponents: a linear program.

Everett et al., "Scaling Exponents Across Parameterizations and Optimizers" (ICML 2024,
arXiv:2407.05872), Section 3 and Appendix: with layer l computing n^(-a_l) W_l x_{l-1}, W_l of
init std ~ n^(-b_l) and learning rate ~ n^(-c_l), the pre-activations of layer l move by
Theta(n^(-r_l)) during training, where (`ntk.scaling.abc_rules.update_terms`, the one place
these rules are written)

    embedding  r_l = e_l
    hidden     r_l = min(e_l - alpha_l, e_l + r_{l-1} - u_l, a_l + b_l + r_{l-1} - omega_l)
    readout    the same form: r_{L+1} >= 0 keeps the logits' change bounded (stable logits)

with e_l = a_l + c_l for Adam, 2 a_l + c_l + g_l for SGD (g_l the backward exponent), and
(alpha, omega, u) the alignment exponents of dW x, W dx and dW dx (`ntk.scaling.alignment`).
The program:

    minimize    sum_l c_l                       (the largest learning rates)
    subject to  r_l = the min() above            (exactly, one binary per term)
                r_l >= 0                         (stability, every layer)
                r_F = 0                          (feature learning: F the last hidden layer)
                a + c >= b at an SGD readout     (`abc_rules.lr_lower_bound`)
                |c_l| <= C_BOUND

The min() is not linear: r_l <= every term is, and r_l >= term_k - M (1 - y_lk) with binaries
y_lk, sum_k y_lk = 1, makes r_l equal to the smallest term (big-M; scipy's HiGHS `milp`, no
other solver). Layers are chained in the order given (module order for a real model). Ties
(raising c_{l-1} by t lowers c_l by t when u_l - r_{l-1} > alpha_l) are broken toward larger
learning rates in earlier layers, as the greedy derivation of the static tables does.

With full or no alignment the program returns the static tables of `abc_rules` exactly; with
measured exponents it returns what they allow. Inputs with no solution raise
`InfeasibleExponentsError`, naming the layer and the constraint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from ntk._checks import check_bool, check_choice, is_finite_number
from ntk.scaling.abc_rules import (
    ALIGNMENT_EXPONENTS,
    ALIGNMENTS,
    OPTIMIZER_FAMILIES,
    Alignment,
    _check_lengths,
    _check_roles,
    backward_exponent,
    lr_lower_bound,
    update_terms,
)

__all__ = [
    "C_BOUND",
    "InfeasibleExponentsError",
    "LPSolution",
    "constraint_violations",
    "solve_lr_exponents",
]

C_BOUND = 4.0  # |c_l| <= 4: learning rates between n^-4 and n^4, beyond any sensible width
_TOL = 1e-7  # HiGHS' primal feasibility tolerance is 1e-7


class InfeasibleExponentsError(ValueError):
    """No learning-rate exponents satisfy the constraints for these (a, b, alignment)."""


@dataclass(frozen=True)
class LPSolution:
    """The program's answer: c per layer, the resulting r (exact recursion), binding terms."""

    c: list[float]
    r: list[float]
    binding: list[str]  # per layer, the term that sets r_l ("dW x", "dW dx", "W dx", ...)
    feature_layer: int | None


def _check_alignments(
    alignments: str | Alignment | Sequence[Alignment | None], roles: list[str]
) -> list[Alignment | None]:
    """One Alignment per layer (None allowed for embeddings), each entry an exponent <= 1."""
    if isinstance(alignments, str):
        alignments = ALIGNMENT_EXPONENTS[check_choice("alignments", alignments, ALIGNMENTS)]
    if isinstance(alignments, Alignment):
        alignments = [alignments] * len(roles)
    if not hasattr(alignments, "__len__") or len(alignments) != len(roles):
        raise ValueError(
            f"alignments must be 'full', 'no', one Alignment, or one Alignment per layer "
            f"({len(roles)}), got {alignments!r}"
        )
    out: list[Alignment | None] = []
    for i, (x, role) in enumerate(zip(alignments, roles, strict=True)):
        if x is None and role == "embedding":
            out.append(None)
            continue
        if not (hasattr(x, "__len__") and len(x) == 3):
            raise TypeError(
                f"alignments[{i}] ({role}) must be an Alignment(alpha, omega, u), got {x!r}"
            )
        for name, v in zip(Alignment._fields, x, strict=True):
            if not is_finite_number(v):
                raise ValueError(f"alignments[{i}].{name} must be a finite number, got {v!r}")
            # |A v| <= |A|_F |v| bounds every alignment ratio by n: exponents are <= 1.
            # A larger value is a plain ratio (e.g. sqrt(n)), not log(ratio) / log(n).
            if v > 1 + 1e-9:
                raise ValueError(
                    f"alignments[{i}].{name} = {v!r} > 1: alignment exponents are "
                    "log(ratio) / log(n) <= 1; convert measured ratios with "
                    "ntk.scaling.alignment.exponent(ratio, n)"
                )
        out.append(Alignment(*(float(v) for v in x)))
    return out


def _feature_layer(roles: list[str], feature_learning: bool) -> int | None:
    """The last layer that is not a readout (the features the readout reads), or None."""
    if not feature_learning:
        return None
    last = [i for i, r in enumerate(roles) if r != "readout"]
    return last[-1] if last else None


def _layer_terms(a, b, roles, alignments, optimizer):
    g = backward_exponent(a, b, roles) if optimizer == "sgd" else 0.0
    return [
        update_terms(a_l, b_l, role, optimizer, al or ALIGNMENT_EXPONENTS["full"], g)
        for a_l, b_l, role, al in zip(a, b, roles, alignments, strict=True)
    ]


def _names(names: Sequence[str] | None, roles: list[str]) -> list[str]:
    if names is None:
        return [f"layer {i} ({r})" for i, r in enumerate(roles)]
    if len(names) != len(roles):
        raise ValueError(f"names must have one entry per layer ({len(roles)}), got {len(names)}")
    return [f"layer {i} {n!r} ({r})" for i, (n, r) in enumerate(zip(names, roles, strict=True))]


def constraint_violations(
    a: Sequence[float],
    b: Sequence[float],
    c: Sequence[float],
    roles: Sequence[str],
    alignments: str | Alignment | Sequence[Alignment | None] = "full",
    optimizer: str = "adam",
    feature_learning: bool = True,
    tol: float = 1e-6,
) -> list[str]:
    """Every constraint of the program that (a, b, c) violates (empty: all hold).

    r is computed by the exact recursion (`abc_rules.update_exponents`), not taken from a
    solver, so this checks a solution independently of how it was found.
    """
    roles = _check_roles(roles)
    _check_lengths(roles, a=a, b=b, c=c)
    check_choice("optimizer", optimizer, OPTIMIZER_FAMILIES)
    alignments = _check_alignments(alignments, roles)
    r = _recursion(a, b, c, roles, alignments, optimizer)
    bad = []
    for i, (r_l, role) in enumerate(zip(r, roles, strict=True)):
        if r_l < -tol:
            bad.append(f"layer {i} ({role}): r = {r_l:.6g} < 0 (unstable)")
        bound = lr_lower_bound(a[i], b[i], role, optimizer)
        if bound is not None and c[i] < bound - tol:
            bad.append(f"layer {i} ({role}): c = {c[i]:.6g} < b - a = {bound:.6g}")
        if abs(c[i]) > C_BOUND + tol:
            bad.append(f"layer {i} ({role}): |c| = {abs(c[i]):.6g} > {C_BOUND}")
    f = _feature_layer(roles, feature_learning)
    if f is not None and abs(r[f]) > tol:
        bad.append(f"layer {f} ({roles[f]}): r = {r[f]:.6g} != 0 (no feature learning)")
    return bad


def _recursion(a, b, c, roles, alignments, optimizer) -> list[float]:
    """r_l by the exact recursion, each layer with its own alignment exponents."""
    g = backward_exponent(a, b, roles) if optimizer == "sgd" else None
    r, r_prev = [], 0.0
    for i, role in enumerate(roles):
        al = alignments[i] or ALIGNMENT_EXPONENTS["full"]  # embeddings: unused
        # one layer at a time: update_exponents on a one-layer chain with the given r_prev
        terms = update_terms(a[i], b[i], role, optimizer, al, g or 0.0)
        r_prev = min(t.value(c[i], r_prev) for t in terms)
        r.append(float(r_prev))
    return r


def _diagnose(a, b, roles, alignments, optimizer, f, names) -> None:
    """Raise InfeasibleExponentsError if the layers after the feature layer need r_F > 0.

    A 'W dx' term a + b + r_{l-1} - omega cannot be raised by layer l's own learning rate:
    it needs r_{l-1} >= r_l - (a + b - omega). Walking back from the output (r >= 0 there),
    these needs add up along the chain; layers before the feature layer F can always meet
    theirs with smaller learning rates upstream, but feature learning fixes r_F = 0.
    """
    terms = _layer_terms(a, b, roles, alignments, optimizer)
    need, sources = 0.0, []  # r_{i-1} >= need, because of the layers in `sources`
    for i in range(len(roles) - 1, f, -1):
        w_dx = [t for t in terms[i] if t.what == "W dx"]
        if not w_dx:  # an embedding reads no earlier layer: the chain restarts
            need, sources = 0.0, []
            continue
        need = max(need, 0.0) - w_dx[0].const
        if w_dx[0].const < 0:
            sources.append(i)
    if need > _TOL:
        i = sources[-1]  # the one nearest the feature layer
        al = alignments[i]
        others = [names[j] for j in sources[:-1]]
        raise InfeasibleExponentsError(
            f"{names[i]}: its 'W dx' term a + b + r_prev - omega (a + b = "
            f"{a[i] + b[i]:.4g}, omega = {al.omega:.4g}) needs r >= {need:.4g} in "
            f"{names[f]}, but feature learning needs r = 0 there"
            + (f" (also needed by {others})" if others else "")
            + ": the features cannot move Theta(1) while the later layers stay stable"
        )


def solve_lr_exponents(
    a: Sequence[float],
    b: Sequence[float],
    roles: Sequence[str],
    alignments: str | Alignment | Sequence[Alignment | None] = "full",
    optimizer: str = "adam",
    feature_learning: bool = True,
    names: Sequence[str] | None = None,
) -> LPSolution:
    """The smallest c_l (largest learning rates) with every r_l >= 0 and r_F = 0.

    `alignments`: "full", "no", one `Alignment(alpha, omega, u)` for every layer, or one per
    layer (None for embeddings, which sum over a finite input), in exponent units (see
    `ntk.scaling.alignment`). `names` label layers in errors. Raises
    `InfeasibleExponentsError` naming the layer and the constraint when there is no solution.
    """
    roles = _check_roles(roles)
    check_choice("optimizer", optimizer, OPTIMIZER_FAMILIES)
    check_bool("feature_learning", feature_learning)
    _check_lengths(roles, a=a, b=b)
    a, b = [float(x) for x in a], [float(x) for x in b]
    alignments = _check_alignments(alignments, roles)
    labels = _names(names, roles)
    f = _feature_layer(roles, feature_learning)
    if f is not None:
        _diagnose(a, b, roles, alignments, optimizer, f, labels)
    terms = _layer_terms(a, b, roles, alignments, optimizer)
    res = _solve(a, b, roles, terms, optimizer, f)
    if res.status != 0 or res.x is None:
        raise InfeasibleExponentsError(
            f"no learning-rate exponents within |c| <= {C_BOUND} satisfy the constraints "
            f"({res.message}); layers: {labels}"
        )
    n = len(roles)
    c = [_clean(x) for x in res.x[:n]]
    bad = constraint_violations(a, b, c, roles, alignments, optimizer, feature_learning)
    if bad:  # a solver answer is checked by the exact recursion, never trusted blindly
        raise RuntimeError(f"the LP solution violates {bad}; please report this input")
    r = _recursion(a, b, c, roles, alignments, optimizer)
    binding = [
        min(ts, key=lambda t, i=i: t.value(c[i], r[i - 1] if i else 0.0)).what
        for i, ts in enumerate(terms)
    ]
    return LPSolution(c=c, r=r, binding=binding, feature_layer=f)


def _clean(x: float) -> float:
    """Snap solver noise: vertices of this program are rational with small denominators."""
    q = round(x * 1e6) / 1e6
    return float(q) if abs(q - x) < 1e-8 else float(x)


def _solve(a, b, roles, terms, optimizer, f):
    """Assemble and solve the mixed-integer program; variables [c (n), r (n), y (binaries)]."""
    n = len(roles)
    r_max = C_BOUND + max(abs(t.const) for ts in terms for t in ts) + 1.0
    big_m = 2 * (C_BOUND + r_max) + max(abs(t.const) for ts in terms for t in ts)
    pairs = [(i, k) for i, ts in enumerate(terms) if len(ts) > 1 for k in range(len(ts))]
    ys = {pair: 2 * n + j for j, pair in enumerate(pairs)}  # binary y_ik: term k sets r_i
    nvar = 2 * n + len(ys)
    rows, lo, hi = [], [], []

    def row(entries: dict[int, float], lower: float, upper: float) -> None:
        v = np.zeros(nvar)
        for j, x in entries.items():
            v[j] += x
        rows.append(v)
        lo.append(lower)
        hi.append(upper)

    for i, ts in enumerate(terms):
        for k, t in enumerate(ts):
            # r_i - t.c c_i - t.r r_{i-1} <= t.const  (r_i <= term)
            e = {n + i: 1.0, i: -t.c}
            if t.r and i > 0:
                e[n + i - 1] = e.get(n + i - 1, 0.0) - t.r
            if len(ts) == 1:
                row(e, t.const, t.const)  # r = the single term
                continue
            row(e, -np.inf, t.const)
            # r_i >= term - M (1 - y): r_i - term + M (1 - y) >= 0
            e2 = dict(e)
            e2[ys[i, k]] = -big_m
            row(e2, t.const - big_m, np.inf)
        if len(ts) > 1:
            row({ys[i, k]: 1.0 for k in range(len(ts))}, 1.0, 1.0)
    lb = np.concatenate([np.full(n, -C_BOUND), np.zeros(n), np.zeros(len(ys))])
    ub = np.concatenate([np.full(n, C_BOUND), np.full(n, r_max), np.ones(len(ys))])
    for i, role in enumerate(roles):
        bound = lr_lower_bound(a[i], b[i], role, optimizer)
        if bound is not None:
            lb[i] = max(lb[i], bound)
    if f is not None:
        ub[n + f] = 0.0
    # sum c, ties toward larger learning rates in earlier layers (weights 1 + 1e-3 (n-1-i)/n)
    objective = np.zeros(nvar)
    objective[:n] = 1.0 + 1e-3 * (n - 1 - np.arange(n)) / n
    integrality = np.concatenate([np.zeros(2 * n), np.ones(len(ys))])
    res = milp(
        objective,
        integrality=integrality,
        bounds=Bounds(lb, ub),
        constraints=LinearConstraint(np.array(rows), lo, hi),
        options={"mip_rel_gap": 0.0},
    )
    return res
