"""The infinite-width side: analytic NNGP/NTK kernels, empirical NTKs and kernel predictions.

`analytic` (MLPKernel: closed-form and quadrature kernels of MLPs), `empirical` (the empirical
NTK of any nn.Module), `predict` (GP posterior, gradient-flow ensembles, linearized networks),
`activations` (activations by name, shared with the models), and `stax` (a layer algebra:
one description of a conv/pooling/layer-norm/residual network gives the finite nn.Module and
its analytic NNGP/NTK; import it as `ntk.kernels.stax`).
"""

from ntk.activations import ACTIVATIONS, get_activation
from ntk.kernels.analytic import Kernels, MLPKernel
from ntk.kernels.empirical import empirical_ntk
from ntk.kernels.predict import (
    LinearizedModel,
    Prediction,
    gp_posterior,
    gradient_descent_mse,
    gradient_descent_mse_ensemble,
)

__all__ = [
    "ACTIVATIONS",
    "Kernels",
    "LinearizedModel",
    "MLPKernel",
    "Prediction",
    "empirical_ntk",
    "get_activation",
    "gp_posterior",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
]
