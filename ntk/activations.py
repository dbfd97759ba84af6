"""Elementwise activations by name, shared by the models and the analytic kernels.

On the bottom floor (it imports only torch): `ntk.models` and `ntk.kernels` both use it, and
neither depends on the other for it.
The analytic kernels (`ntk.kernels.analytic`) have closed forms for "relu", "erf", "gelu" and
"identity", and use Gauss-Hermite quadrature for every other entry and any user callable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Activation = Callable[[torch.Tensor], torch.Tensor]

ACTIVATIONS: dict[str, Activation] = {
    "relu": torch.relu,
    "erf": torch.erf,
    "tanh": torch.tanh,
    "gelu": F.gelu,  # exact (erf) form, as neural-tangents' stax.Gelu(approximate=False)
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}


def get_activation(activation: str | Activation) -> Activation:
    """Resolve a name from `ACTIVATIONS` or pass a callable through."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(
        f"activation must be a callable or one of {tuple(ACTIVATIONS)}, got {activation!r}"
    )
