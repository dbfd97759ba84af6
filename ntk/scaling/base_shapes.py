"""Width ratios n / n0 per weight matrix: the model's width over the base width.

An abc-rule scales each layer by powers of n / n0, where n is the layer's width dimension
(fan-out of an embedding, fan-in of a hidden or readout layer) and n0 the same dimension in
the base model, the proxy whose hyperparameters are tuned. As in the `mup` package's base
shapes (Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466), n0 is read per weight, not
assumed equal to one global base width: an MLP down-projection 4C -> C has n = 4C and
n0 = 4 C0, so its ratio is C / C0 like every other layer's, and at the base width every ratio
is exactly 1 (every parametrization is then plain SP: lr and std_prefactor /
sqrt(fan-in)). Three routes:

- `base_model`: a model of the same architecture at the base width (it may live on the meta
  device: only shapes are read). Each weight's dimensions are compared with its counterpart's;
  the dimensions that differ are the width ones, and they must be those the layer's role says.
- `base_width` (with `width`, inferred if absent from the embeddings' output size or the
  readouts' input size): ratio width / base_width for every weight, n0 = n * base_width / width.
  Right whenever every width dimension grows in proportion to the width, as in MLPs and
  transformers with a fixed number of heads; use `base_model` otherwise.
- neither: absolute exponents, n0 = 1 and n the layer's own width dimension.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from torch import nn

from ntk.scaling.geometry import WeightGeometry, geometry_of

__all__ = ["Weight", "WeightWidth", "base_stds", "resolve_widths"]


@dataclass
class Weight:
    """A weight matrix to parametrize: where it lives, its geometry, its (effective) role."""

    label: str  # table and param-group name
    module_name: str
    module: nn.Module
    geometry: WeightGeometry
    role: str
    width_override: int | None = None


@dataclass
class WeightWidth:
    """n, n0 and the fan-in at the base width (which sets the init constant)."""

    n: int
    n0: float
    fan_in0: float

    @property
    def ratio(self) -> float:
        return self.n / self.n0


def width_dim(g: WeightGeometry, role: str) -> int:
    """The dimension that is the width: fan-out of an embedding, fan-in otherwise."""
    return g.fan_out if role == "embedding" else g.fan_in


def resolve_widths(
    weights: list[Weight],
    base_width: int | None,
    base_model: nn.Module | None,
    width: int | None,
) -> list[WeightWidth]:
    """One `WeightWidth` per weight by the route the arguments select (module docstring)."""
    if base_model is not None:
        return [_from_base_model(w, base_model) for w in weights]
    if base_width is None:
        return [_absolute(w) for w in weights]
    width = model_width(weights) if width is None else width
    return [_from_base_width(w, base_width, width) for w in weights]


def _absolute(w: Weight) -> WeightWidth:
    g = w.geometry
    n = w.width_override or width_dim(g, w.role)
    return WeightWidth(n, 1.0, g.fan_in if w.role == "embedding" else 1.0)


def model_width(weights: list[Weight]) -> int:
    """The model's width: the embeddings' output size (per block), else the readouts' input."""
    for role, size in (("embedding", lambda g: g.block_size), ("readout", lambda g: g.fan_in)):
        sizes = {size(w.geometry) for w in weights if w.role == role and not w.width_override}
        if len(sizes) == 1:
            return sizes.pop()
        if len(sizes) > 1:
            labels = [w.label for w in weights if w.role == role]
            raise ValueError(
                f"the {role} layers {labels} have different widths {sorted(sizes)}: state the "
                "model's width in config.width, or pass config.base_model"
            )
    raise ValueError(
        "cannot read the model's width (no embedding or readout layer listed): state it in "
        "config.width, or pass config.base_model"
    )


def _from_base_width(w: Weight, base_width: int, width: int) -> WeightWidth:
    g = w.geometry
    if w.width_override:
        n = w.width_override
        return WeightWidth(n, float(base_width), g.fan_in if w.role == "embedding" else base_width)
    n = width_dim(g, w.role)
    if (n * base_width) % width:
        raise ValueError(
            f"layer {w.label!r}: its width dimension {n} times base_width / width = "
            f"{base_width}/{width} is not an integer, so it does not grow with the model's "
            "width: pass config.base_model (a model at the base width) so each dimension is read"
        )
    n0 = n * base_width // width
    fan_in0 = g.fan_in if w.role == "embedding" else n0
    return WeightWidth(n, float(n0), float(fan_in0))


def _from_base_model(w: Weight, base_model: nn.Module) -> WeightWidth:
    try:
        base_module = base_model.get_submodule(w.module_name)
    except AttributeError as err:
        raise ValueError(
            f"config.base_model has no module {w.module_name!r}: it must be the same "
            "architecture at the base width"
        ) from err
    base = {g.param: g for g in geometry_of(base_module, f"base_model.{w.module_name}")}
    g, g0 = w.geometry, base.get(w.geometry.param)
    if g0 is None:
        raise ValueError(f"config.base_model's {w.module_name!r} has no {g.param!r}")
    grows = (g.fan_in != g0.fan_in, g.fan_out != g0.fan_out)
    implied = {(False, True): "embedding", (True, True): "hidden", (True, False): "readout"}
    if any(grows) and implied[grows] != w.role:
        raise ValueError(
            f"layer {w.label!r} is listed as {w.role!r}, but against config.base_model its "
            f"fan-in goes {g0.fan_in} -> {g.fan_in} and its fan-out {g0.fan_out} -> "
            f"{g.fan_out}: the shape of a {implied[grows]!r} layer; list it as that"
        )
    n, n0 = width_dim(g, w.role), width_dim(g0, w.role)
    return WeightWidth(n, float(n0), float(g0.fan_in))


def matching(patterns: dict[str, Any], name: str) -> list[str]:
    """The glob patterns among `patterns`' keys that match `name`."""
    return [p for p in patterns if fnmatch.fnmatchcase(name, p)]


def base_stds(
    weights: list[Weight],
    widths: list[WeightWidth],
    tied: list[tuple[str, ...]],
    std_prefactor: float,
    base_std: dict[str, float],
    zero_readout: bool | list[str],
) -> list[float]:
    """Init std at the base width per weight: std_prefactor / sqrt(fan-in at the base width)
    (std_prefactor for a lookup), or `base_std` where a pattern matches, 0 for a zeroed
    readout (every readout, or those `zero_readout`'s glob patterns match); one value per tied
    group (module docstring of `ntk.scaling.tying`)."""
    if not isinstance(zero_readout, bool):
        patterns = dict.fromkeys(zero_readout)
        for p in patterns:
            hits = [w for w in weights if matching({p: None}, w.label)]
            if not hits or any(w.role != "readout" for w in hits):
                raise ValueError(
                    f"config.zero_readout pattern {p!r} must match readout layers only; it "
                    f"matches {[(w.label, w.role) for w in hits]}"
                )
    stds = []
    for w, wd in zip(weights, widths, strict=True):
        hits = matching(base_std, w.label)
        if len(hits) > 1:
            raise ValueError(f"{w.label!r} is matched by several config.base_std patterns")
        const = 1.0 if w.geometry.lookup else wd.fan_in0**-0.5
        stds.append(base_std[hits[0]] if hits else std_prefactor * const)
        zeroed = zero_readout is True or (
            zero_readout is not False and bool(matching(dict.fromkeys(zero_readout), w.label))
        )
        if zeroed and w.role == "readout":
            if tied[len(stds) - 1]:
                raise ValueError(
                    f"config.zero_readout: the readout {w.label!r} is tied with "
                    f"{list(tied[len(stds) - 1])}; zeroing it would zero the embedding too"
                )
            stds[-1] = 0.0
    by_label = {w.label: i for i, w in enumerate(weights)}
    for i, partners in enumerate(tied):
        group = [i] + [by_label[p] for p in partners]
        if len({widths[j].ratio for j in group}) > 1:
            raise ValueError(f"tied layers {[weights[j].label for j in group]} differ in width")
        # an explicit base_std wins; else the readout's SP std (logits O(1) at the base
        # width; the lookup's std_prefactor would give logits of std sqrt(n0))
        explicit = [j for j in group if matching(base_std, weights[j].label)]
        readout = [j for j in group if weights[j].role == "readout"]
        if partners and not explicit and readout:
            stds[i] = std_prefactor * widths[readout[0]].fan_in0 ** -0.5
        elif partners and explicit:
            stds[i] = stds[explicit[0]]
    return stds
