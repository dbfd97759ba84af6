"""Finite-width networks: wide MLPs in SP, NTK and muP parametrization, and MLP ensembles.

`mlp` (MLPBase, WideMLP, WideMLP_MuP), `mup_shapes` (mup base shapes for any model),
`ensemble` (thousands of independent MLPs evaluated with batched matmuls), `residual`
(ResidualMLP, a pre-norm residual MLP for the depth rules).
"""

from ntk.models.ensemble import MLPEnsemble
from ntk.models.mlp import MLPBase, WideMLP, WideMLP_MuP
from ntk.models.mup_shapes import setup_mup_scaling
from ntk.models.residual import ResidualMLP

__all__ = ["MLPBase", "MLPEnsemble", "ResidualMLP", "WideMLP", "WideMLP_MuP", "setup_mup_scaling"]
