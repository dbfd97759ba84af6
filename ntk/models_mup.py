"""The `WideMLP` network in the Maximal Update Parametrization (muP), on Microsoft's `mup`.

muP (Yang & Hu 2021, arXiv:2011.14522; Yang et al. 2022, "Tensor Programs V",
arXiv:2203.03466) scales initialization, multipliers and learning rates with the width n so that
every layer's features move by Theta(1) during training at any width, instead of O(1/sqrt(n))
in the NTK (lazy) regime. With the `mup` package this takes three ingredients, each marked
`# muP:` below:

1. the readout is a `mup.MuReadout`, which multiplies its input by 1 / width_mult
   (width_mult = n / base_width) and keeps a width-independent weight variance, so the output
   weights are effectively O(1/n) instead of O(1/sqrt(n));
2. `mup.set_base_shapes(model, base, delta=delta)` tags every parameter with an `infshape`
   (which dimensions are "width", and their base sizes) from a base and a delta model;
3. the optimizer is `mup.optim.MuAdam` / `MuSGD`, which read the infshapes to scale per-layer
   learning rates (e.g. Adam's lr / width_mult on hidden weights).

Initialization goes through `mup.init` after the base shapes are set, as mup's README asks.
At width == base_width the network is exactly `WideMLP(..., parametrization="standard")`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mup
import torch
from torch import Tensor, nn

from ntk._checks import check_positive_int
from ntk.activations import get_activation
from ntk.models import _check_bool, check_forward_input, check_mlp_args


def setup_mup_scaling(
    model_fn: Callable[[int], nn.Module],
    width: int,
    base_width: int,
    *,
    delta_width: int | None = None,
    model: nn.Module | None = None,
    rescale_params: bool = True,
) -> nn.Module:
    """Build `model_fn(width)` and set its muP base shapes from a base and a delta model.

    Args:
        model_fn: width -> freshly initialized model; only the width may change.
        width: target width (ignored if `model` is given).
        base_width: width at which muP coincides with the standard parametrization.
        delta_width: a second width that tells mup which dimensions scale (default
            2 * base_width); it must differ from `base_width`.
        model: an already built target model to tag instead of `model_fn(width)`.
        rescale_params: passed to `mup.set_base_shapes`; True assumes PyTorch's default init
            and rescales it to muP. Pass False if you re-initialize with `mup.init` afterwards.

    Returns:
        The target model, each parameter `p` carrying `p.infshape`.
    """
    if not callable(model_fn):
        raise TypeError(f"model_fn must be a callable width -> nn.Module, got {model_fn!r}")
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or None, got {type(model).__name__}")
    check_positive_int("base_width", base_width)
    delta_width = 2 * base_width if delta_width is None else delta_width
    check_positive_int("delta_width", delta_width)
    if delta_width == base_width:
        raise ValueError(f"delta_width must differ from base_width, both are {base_width}")
    if model is None:
        model = model_fn(check_positive_int("width", width))
    base, delta = model_fn(base_width), model_fn(delta_width)  # only their shapes are read
    # muP: tag every parameter with its infshape (width dims = those differing base vs delta)
    mup.set_base_shapes(model, base, delta=delta, rescale_params=rescale_params)
    return model


class WideMLP_MuP(nn.Module):  # noqa: N801 - name agreed in the API contract
    """`WideMLP` in muP: `nn.Linear` hidden layers and a `mup.MuReadout` readout.

    Args:
        in_features, width, out_features, depth, activation, weight_std, bias_std, bias:
            as in `ntk.models.WideMLP` (depth >= 1 hidden layers).
        base_width: width at which the model equals the standard-parametrized `WideMLP`.
        readout_zero_init: zero the readout weights and bias at init (recommended by mup to
            remove the O(sqrt(base_width / width)) random output at init).
        output_mult: constant multiplier of the readout (`MuReadout(output_mult=...)`).
        set_base_shapes: if True (default) the model is ready for `mup.optim.MuAdam` /
            `MuSGD`; False builds an untagged model (used for the base and delta models).

    Init (after base shapes, through `mup.init.normal_`): hidden weights
    N(0, weight_std^2 / fan_in), input weights N(0, weight_std^2 / in_features), biases
    N(0, bias_std^2), readout weights N(0, weight_std^2 / base_width) times the forward
    multiplier output_mult / width_mult. Shapes: x (N, in_features) -> (N, out_features).
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
        *,
        base_width: int = 64,
        readout_zero_init: bool = False,
        output_mult: float = 1.0,
        bias: bool = True,
        set_base_shapes: bool = True,
    ) -> None:
        super().__init__()
        check_mlp_args(in_features, width, out_features, depth, weight_std, bias_std, min_depth=1)
        check_positive_int("base_width", base_width)
        for name, flag in [("readout_zero_init", readout_zero_init), ("bias", bias),
                           ("set_base_shapes", set_base_shapes)]:  # fmt: skip
            _check_bool(name, flag)
        if (
            isinstance(output_mult, bool)
            or not isinstance(output_mult, (int, float))
            or not 0 < output_mult < math.inf
        ):
            raise ValueError(f"output_mult must be a finite number > 0, got {output_mult!r}")
        self.in_features, self.width, self.out_features = in_features, width, out_features
        self.depth, self.base_width = depth, base_width
        self.activation = activation
        self.phi = get_activation(activation)
        self.weight_std, self.bias_std = float(weight_std), float(bias_std)
        self.readout_zero_init = readout_zero_init
        self.parametrization = "mup"
        fan_ins = [in_features] + [width] * depth
        # On the meta device when we re-initialize below anyway (skips PyTorch's default init).
        with torch.device("meta" if set_base_shapes else torch.get_default_device()):
            self.hidden = nn.ModuleList(
                nn.Linear(fan_ins[i], width, bias=bias) for i in range(depth)
            )
            # muP: the output layer is a MuReadout (input scaled by output_mult / width_mult)
            self.readout = mup.MuReadout(
                width, out_features, bias=bias, readout_zero_init=readout_zero_init,
                output_mult=output_mult,
            )  # fmt: skip
        if set_base_shapes:
            self.to_empty(device=torch.get_default_device())
            kwargs = dict(
                in_features=in_features, out_features=out_features, depth=depth,
                activation=activation, weight_std=weight_std, bias_std=bias_std,
                base_width=base_width, readout_zero_init=readout_zero_init,
                output_mult=output_mult, bias=bias, set_base_shapes=False,
            )  # fmt: skip
            # muP: base shapes from a base (width=base_width) and a delta model
            setup_mup_scaling(
                lambda w: WideMLP_MuP(width=w, **kwargs),
                width,
                base_width,
                model=self,
                rescale_params=False,  # we re-initialize with mup.init just below
            )
            self.reset_parameters()

    @property
    def layers(self) -> list[nn.Linear]:
        """All Dense layers, input to readout."""
        return [*self.hidden, self.readout]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fresh muP draw of all parameters from the global torch RNG (needs base shapes)."""
        for layer in self.layers:
            if not hasattr(layer.weight, "infshape"):
                raise RuntimeError(
                    "reset_parameters needs mup base shapes; build with set_base_shapes=True"
                )
            if layer is self.readout and self.readout_zero_init:
                layer.weight.zero_()
                if layer.bias is not None:
                    layer.bias.zero_()
                continue
            # muP: mup.init.normal_ takes the std at base width and divides it by
            # sqrt(width_mult) for (width x width) matrices, so std = weight_std / sqrt(fan_in)
            # there; vector-like weights (input, readout) keep their base-width std.
            fan_in_dim = layer.weight.infshape[1]
            base_fan_in = fan_in_dim.base_dim if fan_in_dim.isinf() else layer.in_features
            mup.init.normal_(layer.weight, std=self.weight_std / math.sqrt(base_fan_in))
            if layer.bias is not None:
                mup.init.normal_(layer.bias, std=self.bias_std)

    def width_mult(self) -> float:
        """width / base_width, as mup sees it on the readout."""
        return self.readout.width_mult()

    def hidden_activations(self, x: Tensor) -> list[Tensor]:
        """Post-activations of every hidden layer, each (N, width)."""
        check_forward_input(x, self.in_features, self.readout.weight)
        acts, h = [], x
        for layer in self.hidden:
            h = self.phi(layer(h))
            acts.append(h)
        return acts

    def features(self, x: Tensor) -> Tensor:
        """Last hidden activations (N, width)."""
        check_forward_input(x, self.in_features, self.readout.weight)
        h = x
        for layer in self.hidden:
            h = self.phi(layer(h))
        return h

    def forward(self, x: Tensor) -> Tensor:
        """f(x) = MuReadout(features(x)), (N, in_features) -> (N, out_features)."""
        return self.readout(self.features(x))

    def extra_repr(self) -> str:
        return (
            f"base_width={self.base_width}, activation={self.activation!r}, "
            f"weight_std={self.weight_std}, bias_std={self.bias_std}"
        )
