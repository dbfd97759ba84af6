"""ntk: a theory lab for wide neural networks.

The package, by side (each a subpackage; see its docstring):

- `ntk.kernels`: infinite width: analytic NNGP/NTK (`MLPKernel`), empirical NTK
  (`empirical_ntk`), predictions (`gp_posterior`, `gradient_descent_mse_ensemble`,
  `gradient_descent_mse`, `LinearizedModel`);
- `ntk.models`: finite width: `WideMLP` (SP, NTK), `WideMLP_MuP`, `ResidualMLP`, `MLPEnsemble`;
- `ntk.scaling`: abc-rules (`abc_table`), `Parametrization`, coordinate checks (`coord_check`),
  spectral monitoring (`SpectralMonitor`), dynamic learning rates (`DynamicLR`), muTransfer
  sweeps (`lr_sweep`, `optima`);
- `ntk.training`: `train`, `TrainConfig`, `History`, callbacks;
- `ntk.data`, `ntk.fitting`, `ntk.reference`: tasks, power-law fits, neural-tangents;
- `ntk.lm`: the muP GPT (`GPT`, `gpt_recipe`) and its YAML trainer; `ntk.chapters`: the
  notebooks' experiments.

The names below are importable from `ntk` directly; each is loaded on first use, so
`import ntk` itself is cheap.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it, by what the product does (README: "The public API")
_EXPORTS = {
    # infinite width: kernels and their predictions
    "MLPKernel": "ntk.kernels.analytic",
    "empirical_ntk": "ntk.kernels.empirical",
    "gp_posterior": "ntk.kernels.predict",
    "gradient_descent_mse": "ntk.kernels.predict",
    "gradient_descent_mse_ensemble": "ntk.kernels.predict",
    "LinearizedModel": "ntk.kernels.linearized",
    "Prediction": "ntk.kernels.predict",
    # finite width: models
    "WideMLP": "ntk.models.mlp",
    "WideMLP_MuP": "ntk.models.mlp",
    "ResidualMLP": "ntk.models.residual",
    "MLPEnsemble": "ntk.models.ensemble",
    "setup_mup_scaling": "ntk.models.mup_shapes",
    # parametrizations of any model
    "Parametrization": "ntk.scaling.parametrization",
    "ParametrizationConfig": "ntk.scaling.config",
    "DepthConfig": "ntk.scaling.depth",
    "abc_table": "ntk.scaling.abc_rules",
    "register_geometry": "ntk.scaling.geometry",
    "register_attention": "ntk.scaling.attention",
    # the checks: coordinate checks, spectral norms, dynamic learning rates
    "coord_check": "ntk.scaling.coord_check",
    "fit_exponents": "ntk.scaling.coord_check",
    "plot_coord_check": "ntk.scaling.coord_check",
    "SpectralMonitor": "ntk.scaling.spectral",
    "DynamicLR": "ntk.scaling.dynamic_lr",
    # muTransfer sweeps
    "lr_sweep": "ntk.scaling.sweep",
    "optima": "ntk.scaling.sweep_analysis",
    "plot_transfer": "ntk.scaling.sweep_analysis",
    # training
    "train": "ntk.training.loop",
    "TrainConfig": "ntk.training.config",
    "History": "ntk.training.config",
    "TrainingDivergedError": "ntk.errors",
    # the muP GPT
    "GPT": "ntk.lm.model",
    "GPTConfig": "ntk.lm.model",
    "gpt_recipe": "ntk.lm.parametrize",
    # data
    "load_digits_task": "ntk.data",
    "make_low_dim_task": "ntk.data",
}
# plumbing that was public before: still importable from `ntk` for one release, with a warning
_MOVED = {
    "ACTIVATIONS": "ntk.activations",
    "get_activation": "ntk.activations",
    "Kernels": "ntk.kernels.analytic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"ntk.{name} is no longer public API and will be removed from `ntk` in the next "
            f"release; import it from {_MOVED[name]}",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ntk' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
