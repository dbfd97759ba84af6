"""Wide fully-connected networks in SP, NTK or muP parametrization, on one shared base.

`WideMLP` is, parameter for parameter, the neural-tangents network

    stax.serial(*[stax.Dense(width, W_std, b_std, parameterization=p), act] * depth,
                stax.Dense(out_features, W_std, b_std, parameterization=p))

so its infinite-width NNGP and NTK are `ntk.kernels.MLPKernel(depth, activation, weight_std,
bias_std, parametrization)`. Each Dense layer with fan-in n computes

    ntk:  z = (weight_std / sqrt(n)) W h + bias_std b,   W_ij, b_i ~ N(0, 1)
    sp:   z = W h + b,   W_ij ~ N(0, weight_std^2 / n),  b_i ~ N(0, bias_std^2)

Both have the same function at initialization (hence the same NNGP); their gradients, so their
NTKs and training dynamics, differ (Jacot et al. 2018, arXiv:1806.07572; Sohl-Dickstein et al.
2020, arXiv:2001.07301). Parameters live only in `nn.Linear` modules (`hidden`, `readout`);
the NTK multipliers are constants applied in `forward`.

`WideMLP_MuP` is the same network in the Maximal Update Parametrization (Yang & Hu 2021,
arXiv:2011.14522) on Microsoft's `mup`: its readout is a `mup.MuReadout` (input scaled by
output_mult / width_mult, width_mult = width / base_width), its parameters carry mup base shapes
(`ntk.models.mup_shapes.setup_mup_scaling`) for `mup.optim.MuAdam` / `MuSGD`, and it is
initialized through `mup.init`, as mup's README asks. At width == base_width it is exactly
`WideMLP(..., parametrization="sp")`. The steps mup needs are marked `# muP:` below.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import mup
import torch
from torch import Tensor, nn

from ntk._checks import (
    check_bool,
    check_forward_input,
    check_parametrization,
    check_positive,
    check_positive_int,
    check_scale_fits,
    check_std,
)
from ntk.activations import get_activation
from ntk.errors import InvalidValue
from ntk.models.mup_shapes import setup_mup_scaling
from ntk.registry import select

Activation = str | Callable[[Tensor], Tensor]


class MLPBase(nn.Module):
    """What every wide MLP here shares: the arguments and their checks, `hidden` Linear layers
    and a `readout`, the forward pass through `dense`, and the hidden activations that the
    training diagnostics read.

    Args:
        in_features: input dimension d.
        width: hidden width n (every hidden layer).
        out_features: output dimension.
        depth: number of hidden layers (Dense -> activation).
        activation: a name from `ntk.activations.ACTIVATIONS` or a callable.
        weight_std: sigma_w; weights have variance sigma_w^2 / fan_in (effective).
        bias_std: sigma_b; biases have variance sigma_b^2 (effective).
        parametrization: one of the subclass's `PARAMETRIZATIONS` ("standard" means "sp").
        bias: if False, no biases at all (neural-tangents `b_std=None`).

    A subclass sets `PARAMETRIZATIONS` and `MIN_DEPTH` and fills in three steps of the
    construction: `_readout(fan_in, bias)` builds the readout, `_build_on_meta()` says whether
    the layers may skip PyTorch's default init, and `_initialize()` draws the parameters. It may
    override `dense` (forward multipliers). Shapes: x (N, in_features) -> (N, out_features).
    """

    PARAMETRIZATIONS: tuple[str, ...] = ()
    MIN_DEPTH = 0

    def __init__(
        self,
        in_features: int,
        width: int,
        out_features: int = 1,
        depth: int = 2,
        activation: Activation = "relu",
        weight_std: float = 1.0,
        bias_std: float = 0.0,
        parametrization: str = "sp",
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("width", width)
        check_positive_int("out_features", out_features)
        check_positive_int("depth", depth, minimum=self.MIN_DEPTH)
        check_std("weight_std", weight_std)
        check_std("bias_std", bias_std)
        # weights and multipliers must be finite in the dtype the layers are built in
        dtype = torch.get_default_dtype()
        min_fan_in = min([in_features] + [width] * depth)
        check_scale_fits("weight_std", weight_std, weight_std / math.sqrt(min_fan_in), dtype)
        check_scale_fits("bias_std", bias_std, bias_std, dtype)
        # each layer multiplies a unit-size input's size by ~weight_std: the output's size is
        # ~weight_std^(depth + 1), which must fit too (1e20 over 3 layers is Inf, then NaN)
        big = torch.finfo(dtype).max
        if weight_std > 1 and (depth + 1) * math.log(weight_std) > math.log(big):
            raise InvalidValue(
                f"weight_std={weight_std:g} makes the output of a unit-size input of size "
                f"~weight_std^(depth + 1) = 10^{(depth + 1) * math.log10(weight_std):.0f}, "
                f"beyond the largest {dtype} ({big:g}): the forward pass would give Inf and "
                "NaN; lower weight_std"
            )
        self.parametrization = check_parametrization(
            "parametrization", parametrization, self.PARAMETRIZATIONS
        )
        self.has_bias = check_bool("bias", bias)
        self.in_features, self.width, self.out_features = in_features, width, out_features
        self.depth = depth
        self.activation = activation
        self.phi = get_activation(activation)
        self.weight_std, self.bias_std = float(weight_std), float(bias_std)
        # On the meta device the layers skip PyTorch's default init, which `_initialize` would
        # overwrite anyway (seconds at width 10^4).
        on_meta = self._build_on_meta()
        fan_ins = [in_features] + [width] * depth
        with torch.device("meta" if on_meta else torch.get_default_device()):
            self.hidden = nn.ModuleList(
                nn.Linear(fan_ins[i], width, bias=bias) for i in range(depth)
            )
            self.readout = self._readout(fan_ins[-1], bias)
        if on_meta:
            self.to_empty(device=torch.get_default_device())
        self._initialize()

    def _readout(self, fan_in: int, bias: bool) -> nn.Module:
        raise NotImplementedError

    def _build_on_meta(self) -> bool:
        return True

    def _initialize(self) -> None:
        raise NotImplementedError

    @property
    def layers(self) -> list[nn.Linear]:
        """All Dense layers, input to readout."""
        return [*self.hidden, self.readout]

    def dense(self, layer: nn.Module, h: Tensor) -> Tensor:
        """One Dense layer: (N, fan_in) -> (N, fan_out)."""
        return layer(h)

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
        acts = self.hidden_activations(x)
        return acts[-1] if acts else x

    def forward(self, x: Tensor) -> Tensor:
        """f(x) = readout(features(x)), (N, in_features) -> (N, out_features)."""
        return self.dense(self.readout, self.features(x))

    def extra_repr(self) -> str:
        return (
            f"parametrization={self.parametrization!r}, activation={self.activation!r}, "
            f"weight_std={self.weight_std}, bias_std={self.bias_std}"
        )


class WideMLP(MLPBase):
    """A depth-`depth` MLP of hidden width `width` in "sp" or "ntk" parametrization.

    Arguments as `MLPBase`: WideMLP(in_features, width, out_features=1, depth=2,
    activation="relu", weight_std=1.0, bias_std=0.0, parametrization="sp", *, bias=True);
    depth 0 gives a linear model. See the module docstring for the two parametrizations.
    """

    PARAMETRIZATIONS = select("sp", "ntk")

    def _readout(self, fan_in: int, bias: bool) -> nn.Linear:
        return nn.Linear(fan_in, self.out_features, bias=bias)

    def _initialize(self) -> None:
        self.reset_parameters()

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


class WideMLP_MuP(MLPBase):
    """`WideMLP` in muP: `nn.Linear` hidden layers and a `mup.MuReadout` readout.

    Args:
        *args, **kwargs: as `MLPBase` (in_features, width, out_features=1, depth=2,
            activation="relu", weight_std=1.0, bias_std=0.0, *, bias=True), depth >= 1; the
            parametrization is "mup".
        base_width: width at which the model equals the SP `WideMLP`.
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

    PARAMETRIZATIONS = select("mup")
    MIN_DEPTH = 1

    def __init__(
        self,
        *args: Any,
        base_width: int = 64,
        readout_zero_init: bool = False,
        output_mult: float = 1.0,
        set_base_shapes: bool = True,
        **kwargs: Any,
    ) -> None:
        # read by the construction steps below, which MLPBase.__init__ runs
        self.base_width = check_positive_int("base_width", base_width)
        self.readout_zero_init = check_bool("readout_zero_init", readout_zero_init)
        self.output_mult = check_positive("output_mult", output_mult)
        self.set_base_shapes = check_bool("set_base_shapes", set_base_shapes)
        if len(args) < 8:  # the 8th positional argument is the parametrization
            kwargs.setdefault("parametrization", "mup")
        super().__init__(*args, **kwargs)

    def _readout(self, fan_in: int, bias: bool) -> nn.Module:
        # muP: the output layer is a MuReadout (input scaled by output_mult / width_mult)
        return mup.MuReadout(
            fan_in,
            self.out_features,
            bias=bias,
            readout_zero_init=self.readout_zero_init,
            output_mult=self.output_mult,
        )

    def _build_on_meta(self) -> bool:
        return self.set_base_shapes  # then re-initialized by `_initialize`

    def _initialize(self) -> None:
        if not self.set_base_shapes:
            return

        def same_but_width(width: int) -> WideMLP_MuP:
            return WideMLP_MuP(
                self.in_features,
                width,
                self.out_features,
                self.depth,
                self.activation,
                self.weight_std,
                self.bias_std,
                bias=self.has_bias,
                base_width=self.base_width,
                readout_zero_init=self.readout_zero_init,
                output_mult=self.output_mult,
                set_base_shapes=False,
            )

        # muP: base shapes from a base (width=base_width) and a delta model
        setup_mup_scaling(
            same_but_width,
            self.width,
            self.base_width,
            model=self,
            rescale_params=False,  # we re-initialize with mup.init just below
        )
        self.reset_parameters()

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

    def extra_repr(self) -> str:
        return f"base_width={self.base_width}, " + super().extra_repr()
