"""muP base shapes for any model, with Microsoft's `mup` package.

muP (Yang & Hu 2021, arXiv:2011.14522; Yang et al. 2022, "Tensor Programs V",
arXiv:2203.03466) scales initialization, multipliers and learning rates with the width n so that
every layer's features move by Theta(1) during training at any width, instead of O(1/sqrt(n))
in the NTK (lazy) regime. With the `mup` package this takes three ingredients:

1. the readout is a `mup.MuReadout`, which multiplies its input by 1 / width_mult
   (width_mult = n / base_width) and keeps a width-independent weight variance, so the output
   weights are effectively O(1/n) instead of O(1/sqrt(n)) (see `ntk.models.mlp.WideMLP_MuP`);
2. `mup.set_base_shapes(model, base, delta=delta)` tags every parameter with an `infshape`
   (which dimensions are "width", and their base sizes) from a base and a delta model: this
   module's `setup_mup_scaling`, for any model built by a function of its width;
3. the optimizer is `mup.optim.MuAdam` / `MuSGD`, which read the infshapes to scale per-layer
   learning rates (e.g. Adam's lr / width_mult on hidden weights).
"""

from __future__ import annotations

from collections.abc import Callable

import mup
from torch import nn

from ntk._checks import check_callable, check_module, check_positive_int
from ntk.errors import InvalidValue


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
        base_width: width at which muP coincides with SP (the standard parametrization).
        delta_width: a second width that tells mup which dimensions scale (default
            2 * base_width); it must differ from `base_width`.
        model: an already built target model to tag instead of `model_fn(width)`.
        rescale_params: passed to `mup.set_base_shapes`; True assumes PyTorch's default init
            and rescales it to muP. Pass False if you re-initialize with `mup.init` afterwards.

    Returns:
        The target model, each parameter `p` carrying `p.infshape`.
    """
    check_callable("model_fn", model_fn, "width -> nn.Module")
    if model is not None:
        check_module("model", model)
    check_positive_int("base_width", base_width)
    delta_width = 2 * base_width if delta_width is None else delta_width
    check_positive_int("delta_width", delta_width)
    if delta_width == base_width:
        raise ValueError(f"delta_width must differ from base_width, both are {base_width}")
    if model is None:
        model = model_fn(check_positive_int("width", width))
    base, delta = model_fn(base_width), model_fn(delta_width)  # only their shapes are read
    for name, m in (("model_fn(base_width)", base), ("model_fn(delta_width)", delta)):
        check_module(name, m)
    shapes = [{k: tuple(p.shape) for k, p in m.named_parameters()} for m in (base, delta)]
    if shapes[0] == shapes[1]:  # mup would find no width dimension and do nothing, silently
        raise InvalidValue(
            f"model_fn ignores its width: model_fn({base_width}) and model_fn({delta_width}) "
            "have the same parameter shapes, so muP has no width dimension to scale; "
            "model_fn(width) must build the model at that width"
        )
    # muP: tag every parameter with its infshape (width dims = those differing base vs delta)
    mup.set_base_shapes(model, base, delta=delta, rescale_params=rescale_params)
    return model
