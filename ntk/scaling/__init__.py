"""How networks scale with width: abc-rules, parametrizations and the tools that check them.

`abc_rules` (the SP/NTK/muP/MFP exponents of Everett et al. 2024, derived), `parametrization`
(apply an abc-rule to any model: init, multipliers, per-layer learning rates) with its parts
`depth` (residual-branch multipliers L^-alpha and their lr rules: depth-muP, CompleteP),
`geometry` (how each layer type stores its weights: `register_geometry`), `base_shapes` (width
ratios per weight), `tying` (shared matrices), `attention` (muP's 1/d logit scale), `coord_check`
(coordinate checks), `spectral` (spectral norms of weights and updates), `sweep` (muTransfer
learning-rate sweeps). The last three use pandas; import them as modules. `muon` holds Muon's
update-scale rules and the one Muon + AdamW optimizer (`build_optimizer`).
"""

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
from ntk.scaling.attention import AttentionAdapter, register_attention
from ntk.scaling.depth import DepthConfig, DepthPlan
from ntk.scaling.geometry import WeightGeometry, expert_geometry, register_geometry
from ntk.scaling.parametrization import Parametrization, ParametrizationConfig, ScaledModule

__all__ = [
    "ABC",
    "ALIGNMENTS",
    "OPTIMIZER_FAMILIES",
    "PARAMETRIZATIONS",
    "ROLES",
    "AttentionAdapter",
    "DepthConfig",
    "DepthPlan",
    "Parametrization",
    "ParametrizationConfig",
    "ScaledModule",
    "WeightGeometry",
    "abc_shift",
    "abc_table",
    "max_lr_exponents",
    "register_attention",
    "expert_geometry",
    "register_geometry",
    "role_exponents",
    "stability_violations",
    "update_exponents",
]
