"""abc-parametrizations: the width-scaling rules of Everett et al. (2024), derived, not typed in.

Everett et al., "Scaling Exponents Across Parameterizations and Optimizers" (ICML 2024,
arXiv:2407.05872), following Yang & Hu's abc-parametrizations (Tensor Programs IV,
arXiv:2011.14522). Layer l computes z_l = n^(-a_l) W_l x_{l-1} with W_l initialized with std
proportional to n^(-b_l) and trained with learning rate proportional to n^(-c_l). n is the width,
the dimension that grows: the fan-out of the embedding (input) layer, the fan-in of hidden and
readout layers. Finite dimensions (input size d, number of classes) only enter constants.

Stability at initialization (activations O(1), logits at most O(1)):
    embedding a_1 + b_1 = 0,   hidden a_l + b_l = 1/2,   readout a_{L+1} + b_{L+1} >= 1/2.

The four named parametrizations fix (a, b) per role (Table 1 of the paper):

    role        sp          ntk         mup           mfp
    embedding   (0, 0)      (0, 0)      (-1/2, 1/2)   (0, 0)
    hidden      (0, 1/2)    (1/2, 0)    (0, 1/2)      (1/2, 0)
    readout     (0, 1/2)    (1/2, 0)    (1/2, 1/2)    (1, 0)

Learning-rate exponents c (derived in `max_lr_exponents`). After one step the pre-activations of
layer l move by n^(-r_l); with e_l the exponent of the per-entry change of the effective weight
n^(-a_l) W_l (Adam: e_l = a_l + c_l, since Adam's update is O(1) per entry whatever the gradient
scale; SGD: e_l = 2 a_l + c_l + g_l, with g_l the exponent of dL/dz_l: g_{L+1} = 0 and
g_l = a_{L+1} + b_{L+1} below the readout), the paper's alignment-general recursion is

    embedding  r_1 = e_1                                   (finite fan-in: no alignment sum)
    hidden     r_l = min(e_l - alpha, e_l + r_{l-1} - u, a_l + b_l + r_{l-1} - omega)
    readout    r_{L+1} = min(a + b + r_L - omega, e - alpha, e + r_L - u)

where alpha, omega, u are the log-alignment exponents of dW x, W dx and dW dx: full alignment
is (alpha, omega, u) = (1, 1/2, 1), no alignment (1/2, 1/2, 1/2). Stability needs r_l >= 0;
the maximal learning rate is the smallest c_l that keeps it, layer by layer from the input.
For SGD one more condition: the readout weights carry the backward scale g_l of every other
layer, so their update may not outgrow their init, a_{L+1} + c_{L+1} >= b_{L+1}. (It binds only
for mup/mfp without alignment; without it those two readout exponents would be 1/2 lower.)

The result (embedding, hidden, readout):

    adam  full   sp (0, 1, 1)         ntk (0, 1/2, 1/2)     mup (1/2, 1, 1/2)   mfp (0, 1/2, 0)
    adam  no     sp (0, 1/2, 1/2)     ntk (0, 0, 0)         mup (1/2, 1/2, 0)   mfp (0, 0, -1/2)
    sgd   full   sp (-1/2, 1/2, 1)    ntk (-1/2, -1/2, 0)   mup (0, 0, 0)       mfp (-1, -1, -1)
    sgd   no     sp (-1/2, 0, 1/2)    ntk (-1/2, -1, -1/2)  mup (0, -1/2, 0)    mfp (-1, -3/2, -1)

Checks against known values: mup + Adam + full is (1/2, 1, 1/2) (embedding a = -1/2, as in
Everett et al.'s Table 1);
mup + SGD + full is c = 0 everywhere, Tensor Programs IV's muP; shifted to the `mup` package's
convention (embedding a = 0, readout a = 1) mup gives c = (0, 1, 0) for Adam (MuAdam: lr / width
on hidden weights only) and c = (-1, 0, -1) for SGD (MuSGD: lr * width on vector-like weights).

Muon (Jordan et al. 2024; `ntk.scaling.muon`) trains the hidden matrices with an orthogonalized
update at the spectral scale sqrt(fan_out / fan_in) (Yang, Simon & Bernstein 2023,
arXiv:2310.17813) times n^-(a + c): an orthogonal map keeps |dW x| = |x| for ANY x, so its
terms need no alignment exponent: r_l = min(a + c, a + c + r_{l-1}, a + b + r_{l-1} - omega),
hence c = -a (0 under muP); embeddings, readout and vectors stay on Adam with Adam's terms.

abc-symmetry: (a, b, c) -> (a + t, b - t, c - t) for Adam, (a + t, b - t, c - 2t) for SGD leaves
the function and its training trajectory unchanged, so ntk is sp and mfp is mup in another guise.
Adam's epsilon breaks it (it is compared with the gradient of w, whose scale moves with a);
`ntk.scaling.parametrization` can scale eps per layer as n^(-a_l) to restore it exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from ntk._checks import (
    check_choice,
    check_choices,
    check_numbers,
    check_parametrization,
    is_finite_number,
)
from ntk.registry import WIDTH_RULES

if TYPE_CHECKING:
    import pandas as pd

ROLES = ("embedding", "hidden", "readout")
PARAMETRIZATIONS = WIDTH_RULES  # the width rules of `ntk.registry`
# The update rules the exponents distinguish: "adam" stands for any Adam-like, scale-invariant
# optimizer (the names `ntk.training.train` accepts are `ntk.training.OPTIMIZERS`).
OPTIMIZER_FAMILIES = ("adam", "sgd")
# ... and "muon": hidden matrices on Muon at the spectral scale, the other roles on Adam
ENGINE_OPTIMIZERS = (*OPTIMIZER_FAMILIES, "muon")
ALIGNMENTS = ("full", "no")
# "abc": each layer's largest stable lr exponent c; "global": c = 0, one lr for every layer
LR_RULES = ("abc", "global")


class ABC(NamedTuple):
    """Scaling exponents of one layer: multiplier n^-a, init std ~ n^-b, learning rate ~ n^-c."""

    a: float
    b: float
    c: float


class Alignment(NamedTuple):
    """Log-alignment exponents of dW x (alpha), W dx (omega) and dW dx (u)."""

    alpha: float
    omega: float
    u: float


ALIGNMENT_EXPONENTS = {"full": Alignment(1.0, 0.5, 1.0), "no": Alignment(0.5, 0.5, 0.5)}

# (a, b) per role, Everett et al. (2024) Table 1.
AB_EXPONENTS: dict[str, dict[str, tuple[float, float]]] = {
    "sp": {"embedding": (0.0, 0.0), "hidden": (0.0, 0.5), "readout": (0.0, 0.5)},
    "ntk": {"embedding": (0.0, 0.0), "hidden": (0.5, 0.0), "readout": (0.5, 0.0)},
    "mup": {"embedding": (-0.5, 0.5), "hidden": (0.0, 0.5), "readout": (0.5, 0.5)},
    "mfp": {"embedding": (0.0, 0.0), "hidden": (0.5, 0.0), "readout": (1.0, 0.0)},
}


def _check_roles(roles: Sequence[str]) -> list[str]:
    return check_choices("roles", roles, ROLES)


def _check_lengths(roles: list[str], **exponents: Sequence[float]) -> None:
    """One finite exponent per layer in each of `exponents` (clear errors naming them)."""
    for name, values in exponents.items():
        check_numbers(name, values, len(roles), "one exponent per layer, as roles")


def backward_exponent(a: Sequence[float], b: Sequence[float], roles: Sequence[str]) -> float:
    """g: dL/dz_l = Theta(n^-g) below the readout, set by the readout's a + b (SGD only).

    The loss gradient w.r.t. the logits is O(1); the readout (finite fan-out, no sum over n)
    multiplies it by its effective weights n^-(a+b); hidden layers (a + b = 1/2) keep the scale.
    """
    readouts = [i for i, r in enumerate(roles) if r == "readout"]
    if not readouts:
        raise ValueError(
            "SGD exponents need a layer with role 'readout' (it sets the gradient scale)"
        )
    i = readouts[-1]
    return a[i] + b[i]


def max_lr_exponents(
    a: Sequence[float],
    b: Sequence[float],
    roles: Sequence[str],
    optimizer: str = "adam",
    alignment: str | Alignment = "full",
) -> list[float]:
    """Smallest c_l (largest learning rates) that keep every r_l >= 0, layers in forward order.

    Solves the recursion of the module docstring greedily from the input: each layer takes the
    smallest c_l with r_l >= 0 given r_{l-1} (for alpha = u a larger r_{l-1} never lowers c_l,
    so greedy is optimal). Raises if the (a, b) make a layer unstable for every c.
    """
    roles = _check_roles(roles)
    check_choice("optimizer", optimizer, ENGINE_OPTIMIZERS)
    if isinstance(alignment, str):
        alignment = ALIGNMENT_EXPONENTS[check_choice("alignment", alignment, ALIGNMENTS)]
    else:  # a custom (alpha, omega, u)
        alignment = Alignment(*check_numbers("alignment", alignment, 3, "(alpha, omega, u)"))
    _check_lengths(roles, a=a, b=b)
    alpha, omega, u = alignment
    g = backward_exponent(a, b, roles) if optimizer == "sgd" else 0.0
    cs, r_prev = [], 0.0
    for i, (a_l, b_l, role) in enumerate(zip(a, b, roles, strict=True)):
        if role == "embedding":
            e = 0.0  # r_1 = e_1 >= 0
        else:
            if a_l + b_l + r_prev - omega < -1e-12:
                raise ValueError(
                    f"layer {i} ({role}) is unstable for any learning rate: "
                    f"a + b + r_prev - omega = {a_l + b_l + r_prev - omega} < 0"
                )
            e = max(alpha, u - r_prev)
            if optimizer == "muon" and role == "hidden":  # orthogonal: no alignment sum
                e = max(0.0, -r_prev)
        if optimizer != "sgd":
            c = e - a_l
        else:
            g_l = 0.0 if role == "readout" else g
            c = e - 2 * a_l - g_l
        bound = lr_lower_bound(a_l, b_l, role, optimizer)  # SGD readout: at most its init
        c = c if bound is None else max(c, bound)
        cs.append(float(c))
        r_prev = _update_exponent(a_l, b_l, c, role, r_prev, optimizer, alignment, g)
    return cs


class Term(NamedTuple):
    """One argument of the min() that gives r_l: const + c * c_l + r * r_{l-1}.

    `what` names the product the term bounds ("dW x", "dW dx", "W dx", "embedding update").
    """

    const: float
    c: float
    r: float
    what: str

    def value(self, c_l: float, r_prev: float) -> float:
        return self.const + self.c * c_l + self.r * r_prev


def update_terms(
    a: float, b: float, role: str, optimizer: str, alignment: Alignment, g: float = 0.0
) -> list[Term]:
    """The affine terms whose minimum is r_l (the recursion of the module docstring).

    e_l = a + c (Adam) or 2a + c + g_l (SGD, g_l = 0 at the readout) is the exponent of the
    per-entry change of the effective weight; the embedding has r = e, hidden and readout
    layers r = min(e - alpha, e + r_prev - u, a + b + r_prev - omega). `max_lr_exponents`,
    `update_exponents` and the linear program of `ntk.scaling.lp` all read the rules here.
    """
    alpha, omega, u = alignment
    e0 = a if optimizer != "sgd" else 2 * a + (0.0 if role == "readout" else g)
    if role == "embedding":
        return [Term(e0, 1.0, 0.0, "embedding update")]
    if optimizer == "muon" and role == "hidden":  # |O x| = |x|: alignment-free
        alpha = u = 0.0
    return [
        Term(e0 - alpha, 1.0, 0.0, "dW x"),
        Term(e0 - u, 1.0, 1.0, "dW dx"),
        Term(a + b - omega, 0.0, 1.0, "W dx"),
    ]


def lr_lower_bound(a: float, b: float, role: str, optimizer: str) -> float | None:
    """A bound c_l >= value besides r_l >= 0, or None: with SGD the readout's update may not
    outgrow its init (a + c >= b), since it carries the backward scale of every other layer."""
    return b - a if optimizer == "sgd" and role == "readout" else None


def _update_exponent(
    a: float,
    b: float,
    c: float,
    role: str,
    r_prev: float,
    optimizer: str,
    alignment: Alignment,
    g: float,
) -> float:
    """r_l of one layer given r_{l-1} (the recursion of the module docstring)."""
    return float(min(t.value(c, r_prev) for t in update_terms(a, b, role, optimizer, alignment, g)))


def update_exponents(
    a: Sequence[float],
    b: Sequence[float],
    c: Sequence[float],
    roles: Sequence[str],
    optimizer: str = "adam",
    alignment: str | Alignment = "full",
    backward: float | None = None,
) -> list[float]:
    """r_l: after one step the pre-activations of layer l move by Theta(n^-r_l) (r >= 0 stable).

    `backward` overrides the SGD gradient exponent g (default: from the readout's a + b).
    """
    roles = _check_roles(roles)
    check_choice("optimizer", optimizer, ENGINE_OPTIMIZERS)
    if isinstance(alignment, str):
        alignment = ALIGNMENT_EXPONENTS[check_choice("alignment", alignment, ALIGNMENTS)]
    _check_lengths(roles, a=a, b=b, c=c)
    if optimizer == "sgd" and backward is None:
        backward = backward_exponent(a, b, roles)
    rs, r_prev = [], 0.0
    for a_l, b_l, c_l, role in zip(a, b, c, roles, strict=True):
        r_prev = _update_exponent(
            a_l, b_l, c_l, role, r_prev, optimizer, alignment, backward or 0.0
        )
        rs.append(r_prev)
    return rs


def role_exponents(
    parametrization: str, optimizer: str = "adam", alignment: str = "full"
) -> dict[str, ABC]:
    """(a, b, c) per role for a named parametrization, c from `max_lr_exponents`."""
    parametrization = check_parametrization("parametrization", parametrization, PARAMETRIZATIONS)
    ab = AB_EXPONENTS[parametrization]
    chain = [
        "embedding",
        "hidden",
        "hidden",
        "readout",
    ]  # two hidden layers: c must not depend on l
    a = [ab[r][0] for r in chain]
    b = [ab[r][1] for r in chain]
    c = max_lr_exponents(a, b, chain, optimizer, alignment)
    assert c[1] == c[2], "hidden exponents must not depend on depth"
    return {role: ABC(*ab[role], c[chain.index(role)]) for role in ROLES}


def abc_table(
    parametrization: str,
    optimizer: str = "adam",
    alignment: str = "full",
    roles: Sequence[str] = ("embedding", "hidden", "readout"),
    lr_rule: str = "abc",
) -> list[ABC]:
    """(a, b, c) for each entry of `roles`, e.g. roles = ["embedding"] + ["hidden"] * 3 + ["readout"].

    `lr_rule` "abc": c is the largest stable exponent (`max_lr_exponents`); "global": c = 0 for
    every layer, one learning rate at every width (with "sp": SP as usually run).
    """
    check_choice("lr_rule", lr_rule, LR_RULES)
    table = role_exponents(parametrization, optimizer, alignment)
    if lr_rule == "global":
        return [ABC(table[role].a, table[role].b, 0.0) for role in _check_roles(roles)]
    return [table[role] for role in _check_roles(roles)]


def abc_shift(abc: ABC, t: float, optimizer: str = "adam") -> ABC:
    """The abc-symmetry: (a + t, b - t, c - t) for Adam, (a + t, b - t, c - 2t) for SGD.

    Multiplying the multiplier by n^-t and the weights by n^t leaves the function unchanged;
    the gradient of the weights shrinks by n^-t, so SGD needs n^(2t) more learning rate and
    Adam (scale-invariant up to eps) n^t more for the same change of the effective weights;
    Muon (scale-invariant) is Adam's case.
    """
    check_choice("optimizer", optimizer, ENGINE_OPTIMIZERS)
    abc = _as_abc(abc, "abc")
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"t must be a number, got {type(t).__name__}")
    return ABC(abc.a + t, abc.b - t, abc.c - (t if optimizer != "sgd" else 2 * t))


def _as_abc(abc: object, name: str) -> ABC:
    """An ABC from an ABC or any (a, b, c) triple of finite numbers (values kept as given)."""
    if isinstance(abc, str) or not hasattr(abc, "__len__") or len(abc) != 3:
        raise TypeError(f"{name} must be an ABC or an (a, b, c) triple, got {abc!r}")
    if not all(is_finite_number(v) for v in abc):
        raise ValueError(f"{name} must hold three finite numbers (a, b, c), got {abc!r}")
    return abc if isinstance(abc, ABC) else ABC(*abc)


def stability_violations(
    abcs: Sequence[ABC], roles: Sequence[str], tol: float = 1e-12
) -> list[str]:
    """Violated init-stability conditions (empty if stable): a_1 + b_1 = 0 (embedding),
    a_l + b_l = 1/2 (hidden), a_{L+1} + b_{L+1} >= 1/2 (readout)."""
    roles = _check_roles(roles)
    abcs = [_as_abc(x, f"abcs[{i}]") for i, x in enumerate(abcs)]
    if len(abcs) != len(roles):
        raise ValueError(
            f"abcs and roles must have the same length, got {len(abcs)} and {len(roles)}"
        )
    bad = []
    for i, (abc, role) in enumerate(zip(abcs, roles, strict=True)):
        s = abc.a + abc.b
        if role == "embedding" and abs(s) > tol:
            bad.append(f"layer {i} (embedding): a + b = {s}, needs 0")
        elif role == "hidden" and abs(s - 0.5) > tol:
            bad.append(f"layer {i} (hidden): a + b = {s}, needs 1/2")
        elif role == "readout" and s < 0.5 - tol:
            bad.append(f"layer {i} (readout): a + b = {s}, needs >= 1/2")
    return bad


def table_frame() -> pd.DataFrame:
    """Every named parametrization x optimizer x alignment x role as one long DataFrame."""
    import pandas as pd  # here: importing the rules should not cost a pandas import

    rows = []
    for p in PARAMETRIZATIONS:
        for opt in OPTIMIZER_FAMILIES:
            for al in ALIGNMENTS:
                for role, abc in role_exponents(p, opt, al).items():
                    rows.append(
                        dict(
                            parametrization=p,
                            optimizer=opt,
                            alignment=al,
                            role=role,
                            **abc._asdict(),
                        )
                    )
    return pd.DataFrame(rows)
