"""Wide fully-connected networks in standard or NTK parametrization.

`WideMLP` is, parameter for parameter, the neural-tangents network

    stax.serial(*[stax.Dense(width, W_std, b_std, parameterization=p), act] * depth,
                stax.Dense(out_features, W_std, b_std, parameterization=p))

so its infinite-width NNGP and NTK are `ntk.kernels.MLPKernel(depth, activation, weight_std,
bias_std, parametrization)`. Each Dense layer with fan-in n computes

    ntk:       z = (weight_std / sqrt(n)) W h + bias_std b,   W_ij, b_i ~ N(0, 1)
    standard:  z = W h + b,   W_ij ~ N(0, weight_std^2 / n),  b_i ~ N(0, bias_std^2)

Both have the same function at initialization (hence the same NNGP); their gradients, so their
NTKs and training dynamics, differ (Jacot et al. 2018, arXiv:1806.07572; Sohl-Dickstein et al.
2020, arXiv:2001.07301). Parameters live only in `nn.Linear` modules (`hidden`, `readout`);
the NTK multipliers are constants applied in `forward`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ntk._checks import check_choice, check_nonnegative, check_positive_int
from ntk.activations import get_activation

PARAMETRIZATIONS = ("standard", "ntk")


def check_mlp_args(
    in_features: int,
    width: int,
    out_features: int,
    depth: int,
    weight_std: float,
    bias_std: float,
    min_depth: int = 0,
) -> None:
    """Shared argument checks of the MLP constructors (clear errors naming the argument)."""
    check_positive_int("in_features", in_features)
    check_positive_int("width", width)
    check_positive_int("out_features", out_features)
    check_positive_int("depth", depth, minimum=min_depth)
    check_nonnegative("weight_std", weight_std)
    check_nonnegative("bias_std", bias_std)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_forward_input(x: object, in_features: int, weight: Tensor) -> None:
    """Clear errors for a forward input: a tensor (..., in_features) in the weights' dtype.

    Shape and dtype reads only (no data-dependent checks), so it is free and works under
    torch.func transforms (vmap, jvp) and the empirical NTK's recorder.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor (N, {in_features}), got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"x must have shape (N, {in_features}) (in_features={in_features} in the last "
            f"dimension), got {tuple(x.shape)}"
        )
    if x.dtype != weight.dtype and not torch.is_autocast_enabled():
        raise TypeError(
            f"x has dtype {x.dtype} but the model's parameters are {weight.dtype}; cast one "
            f"of them (e.g. x.to({weight.dtype}) or model.to({x.dtype}))"
        )


class WideMLP(nn.Module):
    """A depth-`depth` MLP of hidden width `width` in "standard" or "ntk" parametrization.

    Args:
        in_features: input dimension d.
        width: hidden width n (every hidden layer).
        out_features: output dimension.
        depth: number of hidden layers (Dense -> activation); 0 gives a linear model.
        activation: a name from `ntk.activations.ACTIVATIONS` or a callable.
        weight_std: sigma_w; weights have variance sigma_w^2 / fan_in (effective).
        bias_std: sigma_b; biases have variance sigma_b^2 (effective).
        parametrization: "standard" or "ntk" (see the module docstring).
        bias: if False, no biases at all (neural-tangents `b_std=None`).

    Shapes: x (N, in_features) -> (N, out_features).
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        out_features: int = 1,
        depth: int = 2,
        activation: str | Callable[[Tensor], Tensor] = "relu",
        weight_std: float = 1.0,
        bias_std: float = 0.0,
        parametrization: str = "standard",
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_mlp_args(in_features, width, out_features, depth, weight_std, bias_std)
        check_choice("parametrization", parametrization, PARAMETRIZATIONS)
        _check_bool("bias", bias)
        self.in_features, self.width, self.out_features = in_features, width, out_features
        self.depth = depth
        self.activation = activation
        self.phi = get_activation(activation)
        self.weight_std, self.bias_std = float(weight_std), float(bias_std)
        self.parametrization = parametrization
        fan_ins = [in_features] + [width] * depth
        # Built on the meta device and materialized once: skips PyTorch's default init, which
        # reset_parameters would overwrite anyway (seconds at width 10^4).
        with torch.device("meta"):
            self.hidden = nn.ModuleList(
                nn.Linear(fan_ins[i], width, bias=bias) for i in range(depth)
            )
            self.readout = nn.Linear(fan_ins[-1], out_features, bias=bias)
        self.to_empty(device=torch.get_default_device())
        self.reset_parameters()

    @property
    def layers(self) -> list[nn.Linear]:
        """All Dense layers, input to readout."""
        return [*self.hidden, self.readout]

    def multipliers(self, layer: nn.Linear) -> tuple[float, float]:
        """(weight multiplier, bias multiplier) applied to `layer`'s parameters in forward."""
        if self.parametrization == "ntk":
            return self.weight_std / math.sqrt(layer.in_features), self.bias_std
        return 1.0, 1.0

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fresh draw of all parameters from the global torch RNG (seed it for reproducibility)."""
        for layer in self.layers:
            if self.parametrization == "ntk":
                w_std, b_std = 1.0, 1.0  # N(0, 1); the scales are the forward multipliers
            else:
                w_std, b_std = self.weight_std / math.sqrt(layer.in_features), self.bias_std
            layer.weight.normal_(0.0, w_std)
            if layer.bias is not None:
                layer.bias.normal_(0.0, b_std)

    def dense(self, layer: nn.Linear, h: Tensor) -> Tensor:
        """One Dense layer: (N, fan_in) -> (N, fan_out), multipliers included."""
        w_mult, b_mult = self.multipliers(layer)
        if w_mult == 1.0 and b_mult == 1.0:
            return layer(h)
        out = torch.nn.functional.linear(h, layer.weight) * w_mult
        if layer.bias is not None:
            out = out + b_mult * layer.bias
        return out

    def hidden_activations(self, x: Tensor) -> list[Tensor]:
        """Post-activations phi(z_l) of every hidden layer, each (N, width)."""
        check_forward_input(x, self.in_features, self.readout.weight)
        acts, h = [], x
        for layer in self.hidden:
            h = self.phi(self.dense(layer, h))
            acts.append(h)
        return acts

    def features(self, x: Tensor) -> Tensor:
        """Last hidden activations (N, width): the features the readout sees (x if depth=0)."""
        check_forward_input(x, self.in_features, self.readout.weight)
        h = x
        for layer in self.hidden:
            h = self.phi(self.dense(layer, h))
        return h

    def forward(self, x: Tensor) -> Tensor:
        """f(x) = readout(features(x)), (N, in_features) -> (N, out_features)."""
        return self.dense(self.readout, self.features(x))

    def extra_repr(self) -> str:
        return (
            f"parametrization={self.parametrization!r}, activation={self.activation!r}, "
            f"weight_std={self.weight_std}, bias_std={self.bias_std}"
        )
