"""ntk: a theory lab for wide neural networks.

The package, by side (each a subpackage; see its docstring):

- `ntk.kernels`: infinite width: analytic NNGP/NTK (`MLPKernel`), empirical NTK
  (`empirical_ntk`), predictions (`gp_posterior`, `gradient_descent_mse_ensemble`,
  `gradient_descent_mse`, `LinearizedModel`);
- `ntk.models`: finite width: `WideMLP` (SP, NTK), `WideMLP_MuP`, `MLPEnsemble`;
- `ntk.scaling`: abc-rules (`abc_table`), `Parametrization`, coordinate checks, spectral
  monitoring, muTransfer sweeps;
- `ntk.training`: `train`, `TrainConfig`, `History`, callbacks;
- `ntk.data`, `ntk.fitting`, `ntk.reference`: tasks, power-law fits, neural-tangents;
- `ntk.chapters`: the notebooks' experiments; `ntk.lm`: language models.

The names below are importable from `ntk` directly; each is loaded on first use, so
`import ntk` itself is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "ACTIVATIONS": "ntk.activations",
    "get_activation": "ntk.activations",
    "Kernels": "ntk.kernels.analytic",
    "MLPKernel": "ntk.kernels.analytic",
    "empirical_ntk": "ntk.kernels.empirical",
    "LinearizedModel": "ntk.kernels.predict",
    "Prediction": "ntk.kernels.predict",
    "gp_posterior": "ntk.kernels.predict",
    "gradient_descent_mse": "ntk.kernels.predict",
    "gradient_descent_mse_ensemble": "ntk.kernels.predict",
    "MLPEnsemble": "ntk.models.ensemble",
    "ResidualMLP": "ntk.models.residual",
    "WideMLP": "ntk.models.mlp",
    "WideMLP_MuP": "ntk.models.mlp",
    "setup_mup_scaling": "ntk.models.mup_shapes",
    "abc_table": "ntk.scaling.abc_rules",
    "Parametrization": "ntk.scaling.parametrization",
    "ParametrizationConfig": "ntk.scaling.parametrization",
    "DepthConfig": "ntk.scaling.depth",
    "register_geometry": "ntk.scaling.geometry",
    "History": "ntk.training.config",
    "TrainConfig": "ntk.training.config",
    "TrainingDivergedError": "ntk.errors",
    "train": "ntk.training.loop",
    "load_digits_task": "ntk.data",
    "make_low_dim_task": "ntk.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ntk' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
