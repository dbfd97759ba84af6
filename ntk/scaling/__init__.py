"""How networks scale with width: abc-rules, parametrizations and the tools that check them.

`abc_rules` (the SP/NTK/muP/MFP exponents of Everett et al. 2024, derived), `parametrization`
(apply an abc-rule to any model: init, multipliers, per-layer learning rates), `coord_check`
(coordinate checks), `spectral` (spectral norms of weights and updates), `sweep` (muTransfer
learning-rate sweeps). The last three use pandas; import them as modules.
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
from ntk.scaling.parametrization import Parametrization, ParametrizationConfig, ScaledModule

__all__ = [
    "ABC",
    "ALIGNMENTS",
    "OPTIMIZER_FAMILIES",
    "PARAMETRIZATIONS",
    "ROLES",
    "Parametrization",
    "ParametrizationConfig",
    "ScaledModule",
    "abc_shift",
    "abc_table",
    "max_lr_exponents",
    "role_exponents",
    "stability_violations",
    "update_exponents",
]
