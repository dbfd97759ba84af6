"""Shared weights under an abc-parametrization: one matrix in several roles.

A tied embedding and readout (GPT-2, BERT's masked-LM head) is one matrix W used twice:
h_0 = n^(-a_e) W[x] and logits = n^(-a_r) h W^T. One tensor has one init std (n^-b) and one
learning rate (n^-c), while the two roles prescribe their own (a, b, c). The abc-symmetry
(Everett et al. 2024, arXiv:2407.05872, section 2) moves each role along

    Adam:  (a, b, c) -> (a + t, b - t, c - t)        invariant: b - c   (and a + b)
    SGD:   (a, b, c) -> (a + t, b - t, c - 2t)       invariant: 2b - c  (and a + b)

without changing the function or its training, so the roles can share W exactly when their
invariants agree. muP with Adam: embedding (-1/2, 1/2, 1/2) ~ (0, 0, 0) and readout
(1/2, 1/2, 1/2) ~ (1, 0, 0): b - c = 0 for both, so one matrix with b = 0, c = 0 (the
embedding's width-independent init and learning rate) and a readout multiplier n^-1 is muP
exactly, which is what the `mup` package's `MuSharedReadout` does (output multiplier
1 / width_mult). With SGD, muP's 2b - c = 1 for both roles; mfp is muP in another guise.
SP and NTK have no such representative (Adam: b - c = 0 for the embedding, -1/2 for the
readout): one matrix cannot follow both rules, and `tie_exponents` refuses.

The representative chosen: the embedding's with a = 0 (its lookup used as it is, as in mup), or,
without an embedding in the group, the first layer's own; every other role is shifted to the
same b.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ntk.scaling.abc_rules import ABC, abc_shift
from ntk.scaling.base_shapes import Weight

__all__ = ["check_unlisted_sharing", "symmetry_invariant", "tie_exponents", "tie_groups"]


def symmetry_invariant(abc: ABC, optimizer: str) -> float:
    """The quantity the abc-symmetry keeps besides a + b: b - c (Adam) or 2b - c (SGD)."""
    return abc.b - abc.c if optimizer == "adam" else 2 * abc.b - abc.c


def tie_exponents(
    abcs: Sequence[ABC], roles: Sequence[str], names: Sequence[str], optimizer: str
) -> list[ABC]:
    """Symmetry representatives of the tied layers' exponents with one common b and c.

    Returns one shifted ABC per layer (same order); raises ValueError naming the layers, their
    invariants and what to do when no representative exists.
    """
    anchor = roles.index("embedding") if "embedding" in roles else 0
    t0 = -abcs[anchor].a if roles[anchor] == "embedding" else 0.0
    base = abc_shift(abcs[anchor], t0, optimizer)
    invariants = [symmetry_invariant(x, optimizer) for x in abcs]
    if max(invariants) - min(invariants) > 1e-12:
        what = "b - c" if optimizer == "adam" else "2b - c"
        listing = ", ".join(
            f"{n} ({r}: a, b, c = {x.a:g}, {x.b:g}, {x.c:g}; {what} = {v:g})"
            for n, r, x, v in zip(names, roles, abcs, invariants, strict=True)
        )
        raise ValueError(
            f"layers {list(names)} share one weight, but no abc-symmetry representative gives "
            f"them one init and one learning rate under {optimizer}: {what} differs, {listing}. "
            "Untie them (Hugging Face: config.tie_word_embeddings=False; ntk.lm: "
            "GPTConfig(tie_embeddings=False)), use a parametrization whose roles agree "
            "(mup, mfp), or pass custom config.a/b/c with equal b and c for the tied layers"
        )
    return [
        base if i == anchor else abc_shift(x, x.b - base.b, optimizer) for i, x in enumerate(abcs)
    ]


def tie_groups(
    params: Sequence[int],
    names: Sequence[str],
    roles: Sequence[str],
    abcs: Sequence[ABC],
    optimizer: str,
) -> tuple[list[ABC], list[tuple[str, ...]]]:
    """Exponents with every group of layers sharing a parameter (equal `params` ids) moved to
    one representative (`tie_exponents`), and each layer's tie partners (empty if untied)."""
    abcs, tied = list(abcs), [()] * len(abcs)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault(p, []).append(i)
    for idx in (g for g in groups.values() if len(g) > 1):
        group_names = [names[i] for i in idx]
        shifted = tie_exponents(
            [abcs[i] for i in idx], [roles[i] for i in idx], group_names, optimizer
        )
        for i, x in zip(idx, shifted, strict=True):
            abcs[i] = x
            tied[i] = tuple(n for n in group_names if n != names[i])
    return abcs, tied


def check_unlisted_sharing(model: nn.Module, weights: list[Weight]) -> None:
    """A weight shared with a module that is not listed would be changed by one role only."""
    ids = {id(w.module.get_parameter(w.geometry.param)): w.label for w in weights}
    listed = {w.module_name for w in weights}
    for name, module in model.named_modules():
        if name in listed or any(name.startswith(n + ".") for n in listed):
            continue
        for pname, p in module._parameters.items():
            if id(p) in ids:
                raise ValueError(
                    f"{ids[id(p)]!r}'s weight is shared with {name}.{pname} (tied), which "
                    f"is not listed: list both layers in config.layers (e.g. the embedding "
                    "as 'embedding' and the readout as 'readout') so the tie is handled"
                )
