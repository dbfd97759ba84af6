"""A pre-norm residual MLP: the smallest network whose depth the depth rules act on.

For x of shape (N, d) and L blocks of width n:

    h_0 = embed(x)                                   (N, n)
    h_l = h_{l-1} + W_l phi(LN(h_{l-1})),  l = 1..L  (the branch: blocks.{l-1}.branch)
    out = readout(h_L)                               (N, out_features)

with LN a LayerNorm without gain or bias, as the one-layer branches of Yang et al. 2023
("Tensor Programs VI", arXiv:2310.02244) and Bordelon et al. 2023 (arXiv:2309.16620) with a
pre-norm (the norm keeps each branch's input Theta(1) whatever the stream's size, as in
transformers). Init: embed and readout N(0, 1/fan_in), W_l N(0, 2/n) (He, for ReLU), biases 0;
at init each branch adds Theta(1) variance, so without a branch multiplier the stream's
coordinates grow like sqrt(L).

`parametrize_residual` applies a width rule ("sp", "mup", ...) and a depth rule ("depth-mup",
"completep": `ntk.scaling.depth`) through `ntk.Parametrization`; `RESIDUAL_LAYERS` and
`RESIDUAL_BRANCHES` name the layers and branches for anyone building the config by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from ntk import registry
from ntk._checks import check_forward_input, check_positive_int
from ntk.activations import get_activation
from ntk.registry import DEPTH_RULES
from ntk.scaling.config import ParametrizationConfig
from ntk.scaling.depth import DepthConfig
from ntk.scaling.parametrization import Parametrization

RESIDUAL_LAYERS = {"embed": "embedding", "blocks.*.branch.fc": "hidden", "readout": "readout"}
RESIDUAL_BRANCHES = ["blocks.*.branch"]
# width rules by name, and depth rules as width-only muP plus a branch rule
PARAMETRIZATIONS = registry.ALL


class Branch(nn.Module):
    """One residual branch: h -> W phi(LN(h)), (N, n) -> (N, n)."""

    def __init__(self, width: int, activation: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.width, self.activation = width, activation
        self.fc = nn.Linear(width, width, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        return self.fc(self.activation(F.layer_norm(h, (self.width,))))


class Block(nn.Module):
    """h -> h + branch(h)."""

    def __init__(self, width: int, activation: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.branch = Branch(width, activation)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.branch(h)


class ResidualMLP(nn.Module):
    """Pre-norm residual MLP (module docstring): x (N, in_features) -> (N, out_features).

    Args:
        in_features, width, out_features: d, n and the output size.
        depth: L, the number of residual blocks (>= 1).
        activation: a name from `ntk.activations.ACTIVATIONS` or a callable.
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        out_features: int = 1,
        depth: int = 4,
        activation: str | Callable[[Tensor], Tensor] = "relu",
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.width = check_positive_int("width", width)
        check_positive_int("out_features", out_features)
        self.depth = check_positive_int("depth", depth)
        act = get_activation(activation)
        self.embed = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(Block(width, act) for _ in range(depth))
        self.readout = nn.Linear(width, out_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """embed, readout N(0, 1/fan_in); branch weights N(0, 2/n); biases 0."""
        for module in (self.embed, self.readout):
            nn.init.normal_(module.weight, std=module.in_features**-0.5)
            nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.normal_(block.branch.fc.weight, std=math.sqrt(2.0 / self.width))

    def forward(self, x: Tensor) -> Tensor:
        check_forward_input(x, self.in_features, self.embed.weight)
        h = self.embed(x)  # (N, n)
        for block in self.blocks:
            h = block(h)  # (N, n)
        return self.readout(h)  # (N, out_features)


def parametrize_residual(
    model: ResidualMLP,
    parametrization: str,
    *,
    lr: float,
    base_width: int,
    base_depth: int,
    optimizer: str = "adam",
    **options,
) -> Parametrization:
    """Apply a width rule, or width-only muP plus a depth rule, to `model` in place.

    `parametrization`: "sp", "ntk", "mup", "mfp" (width rules, no branch multiplier) or
    "depth-mup" / "completep" (muP in width, branch multiplier (L / L0)^-alpha with alpha
    1/2 / 1 and the matching lr and eps factors, `ntk.scaling.depth`). At width `base_width`
    and depth `base_depth` every choice is the model as built, with learning rate `lr`
    (He-scaled hidden init: std_prefactor sqrt(2) there). Further `options` go to
    `ntk.ParametrizationConfig` (e.g. adam_eps). Build the optimizer from the result's
    `param_groups`.
    """
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"model must be a ResidualMLP, got {type(model).__name__}")
    if not isinstance(parametrization, str) or parametrization.lower() not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}"
        )
    name = parametrization.lower()
    depth = None
    if name in DEPTH_RULES:
        depth = DepthConfig(name, RESIDUAL_BRANCHES, base_depth=base_depth, depth=model.depth)
        name = "mup"
    else:
        check_positive_int("base_depth", base_depth)
    config = ParametrizationConfig(
        name,
        optimizer=optimizer,
        lr=lr,
        layers=dict(RESIDUAL_LAYERS),
        base_width=base_width,
        base_std={"blocks.*.branch.fc": math.sqrt(2.0 / base_width)},
        depth=depth,
        **options,
    )
    return Parametrization(model, config)
