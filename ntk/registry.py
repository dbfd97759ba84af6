"""The one registry of parametrization names: which exist, what each is, and their aliases.

Width rules (Everett et al. 2024, arXiv:2407.05872, Table 1; exponents in
`ntk.scaling.abc_rules`):

    sp    standard parametrization: init std 1/sqrt(fan_in), no multipliers. With the engine's
          default lr_rule "abc" it is *per-layer SP* (each layer at its largest stable Adam
          lr: hidden and readout ~ 1/n); with lr_rule "global" it is *global-lr SP*, one
          learning rate for every layer, as SP is usually run (`ParametrizationConfig`).
    ntk   neural-tangent parametrization: unit init, multipliers 1/sqrt(fan_in).
    mup   maximal-update parametrization (Yang & Hu 2021, arXiv:2011.14522).
    mfp   mean-field parametrization: readout multiplier 1/n.

Depth rules: muP in width plus residual-branch multipliers (L / L0)^-alpha
(`ntk.scaling.depth`), alpha 1/2 (depth-muP, Yang et al. 2023, arXiv:2310.02244) or 1
(CompleteP, Dey et al. 2025, arXiv:2505.01618).

A module that supports only some of them names its subset with `select(...)` (in the order it
shows them), so every name is checked against this registry once, at import.
"""

from __future__ import annotations

WIDTH_RULES: tuple[str, ...] = ("sp", "ntk", "mup", "mfp")
DEPTH_RULES: dict[str, float] = {"depth-mup": 0.5, "completep": 1.0}  # name -> alpha
ALL: tuple[str, ...] = (*WIDTH_RULES, *DEPTH_RULES)
# The two ways SP is trained, by the names every chapter, legend and table uses (SP's init
# as a library ships it, e.g. Hugging Face's fixed 0.02, is called "as shipped"):
GLOBAL_LR_SP = "global-lr SP"  # one learning rate for every parameter (lr_rule "global")
PER_LAYER_SP = "per-layer SP"  # Everett et al.'s per-layer rates (lr_rule "abc")
SP_VARIANTS: dict[str, tuple[str, str]] = {
    GLOBAL_LR_SP: ("sp", "global"),
    PER_LAYER_SP: ("sp", "abc"),
}
# "standard" is what many papers and older code call SP; accepted as an input alias.
ALIASES: dict[str, str] = {"standard": "sp"}


def select(*names: str) -> tuple[str, ...]:
    """`names` as a tuple, each checked to be a registered parametrization."""
    unknown = [n for n in names if n not in ALL]
    if unknown or not names:
        raise ValueError(f"parametrizations must be names from {ALL}, got {names!r}")
    return names
