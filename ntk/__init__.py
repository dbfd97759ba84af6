"""ntk: a theory lab for wide neural networks.

Kernels (`MLPKernel`, `empirical_ntk`), predictions (`gp_posterior`,
`gradient_descent_mse_ensemble`, `gradient_descent_mse`, `LinearizedModel`), models
(`WideMLP`, `WideMLP_MuP`), training (`train`, `TrainConfig`), abc-parametrizations
(`Parametrization`, `ParametrizationConfig`, `abc_table`). The tools `ntk.coord_check`,
`ntk.spectral` and `ntk.sweep`, and the chapter experiments (`ntk.gaussian_process_demo`,
`ntk.ntk_properties`, `ntk.feature_learning_limitations`, `ntk.feature_learning_mup`) are
imported on demand.
"""

from ntk.activations import ACTIVATIONS, get_activation
from ntk.data import load_digits_task, make_low_dim_task
from ntk.empirical import empirical_ntk
from ntk.kernels import Kernels, MLPKernel
from ntk.models import WideMLP
from ntk.models_mup import WideMLP_MuP, setup_mup_scaling
from ntk.parametrization import Parametrization, ParametrizationConfig
from ntk.predict import (
    LinearizedModel,
    Prediction,
    gp_posterior,
    gradient_descent_mse,
    gradient_descent_mse_ensemble,
)
from ntk.tables import abc_table
from ntk.training import History, TrainConfig, TrainingDivergedError, train

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "History",
    "Kernels",
    "LinearizedModel",
    "MLPKernel",
    "Parametrization",
    "ParametrizationConfig",
    "Prediction",
    "TrainConfig",
    "TrainingDivergedError",
    "WideMLP",
    "WideMLP_MuP",
    "abc_table",
    "empirical_ntk",
    "get_activation",
    "gp_posterior",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "load_digits_task",
    "make_low_dim_task",
    "setup_mup_scaling",
    "train",
]
