"""`ParametrizationConfig`: what `ntk.scaling.parametrization.Parametrization` applies, and how."""

from __future__ import annotations

import warnings
from dataclasses import InitVar, dataclass, field

from torch import nn

from ntk._checks import (
    check_bool,
    check_choice,
    check_module,
    check_parametrization,
    check_positive,
    check_positive_int,
)
from ntk.scaling.abc_rules import (
    ALIGNMENTS,
    ENGINE_OPTIMIZERS,
    LR_RULES,
    PARAMETRIZATIONS,
    ROLES,
)
from ntk.scaling.depth import DepthConfig
from ntk.scaling.muon import MUON_RULES

BIAS_RULES = ("abc", "default")
ATTENTION_SCALES = ("auto", "mup", "keep")


@dataclass
class ParametrizationConfig:
    """What to parametrize and how.

    Attributes:
        parametrization: "sp", "ntk", "mup" or "mfp" ("standard" is read as "sp"); None for
            custom `a`, `b` (and `c`).
        lr_rule: "abc" (default): each weight's learning rate lr (n / n0)^-c with
            the parametrization's c, its largest stable one (Everett et al. 2024,
            arXiv:2407.05872); "sp" then means *per-layer SP*: standard init and multipliers,
            hidden and readout Adam lr ~ 1/n. "global": the parametrization's a and b with
            c = 0 for every weight, one learning rate lr at every width; "sp" then
            means *global-lr SP*, SP as it is usually run and as the muTransfer experiments
            mean it (Yang et al. 2022, arXiv:2203.03466). Custom exponents state c themselves.
        optimizer: "adam" (any Adam-like, scale-invariant optimizer), "sgd", or "muon":
            hidden matrices on torch.optim.Muon with the update scale of `muon_rule`, the
            other roles on Adam with Adam's exponents (`ntk.scaling.muon`; build both with
            `ntk.scaling.muon.build_optimizer(param.param_groups)`).
        alignment: "full" or "no" (the alignment assumption behind the c exponents).
        a, b, c: custom exponents, one per weight matrix (row of the table) in module order;
            `c` None derives the maximal stable learning rates from `a`, `b`
            (`abc_rules.max_lr_exponents`).
        lr: learning rate at n = n0 (and of the rest group).
        std_prefactor: init std at n = n0, in units of 1/sqrt(fan_in) (e.g. sqrt(2) for He).
        layers: glob pattern on module names -> role ("embedding", "hidden", "readout");
            None auto-detects an MLP: all `nn.Linear` in order, first embedding, last readout.
        base_width: the model width at which every parametrization is plain SP (MLPs, and
            models whose width dimensions all grow in proportion to it); None = absolute n.
        base_model: the same architecture at the base width (e.g. built on the meta device),
            instead of base_width: each weight's width dimensions are read against it.
        width: the model's width (with base_width); None reads it from the embeddings'
            output size or else the readouts' input size.
        widths: glob pattern -> n, overriding the width of matching layers (ratio n /
            base_width).
        base_std: glob pattern on layer names -> init std at the base width, instead of
            std_prefactor / sqrt(fan-in) (e.g. {"transformer.wte": 0.02}); it scales as
            (n / n0)^-b.
        bias_lr: "abc" (biases get width-independent updates) or "default" (rest group).
        adam_eps: if set, each group gets eps = adam_eps * (n / n0)^-a.
        apply_multipliers: wrap layers to apply n^-a (False if the model does it itself).
        reinit: re-initialize listed weights (std n^-b) and zero their biases.
        attention_scale: "mup" (logit scale sqrt(d0)/d, d0 the head dimension at the base
            width), "keep" (each module's own), or "auto" (mup for mup/mfp, keep for sp/ntk).
        base_head_dim: d0 for the attention scale with base_width, when width != base_width.
        zero_query: zero-initialize the query projections of all attention modules.
        zero_readout: zero-initialize the readout weights (as mup's readout_zero_init): True
            for every readout, or a list of glob patterns naming the readouts to zero (an
            MoE router is a readout that must not start at 0: `ntk.lm.moe`).
        depth: a `ntk.scaling.depth.DepthConfig`: residual-branch multipliers L^-alpha and
            the matching lr / Adam eps factors on top of the width rules (None: width only).
        muon_rule: with optimizer "muon", Muon's update scale s(fan_out, fan_in): "spectral"
            sqrt(fan_out/fan_in), "keller" sqrt(max(1, fan_out/fan_in)) or "moonshot"
            0.2 sqrt(max(fan_in, fan_out)) (`ntk.scaling.muon`).
        muon_lr: Muon's learning rate at n = n0 (None: `lr`).
    """

    parametrization: str | None = "mup"
    optimizer: str = "adam"
    alignment: str = "full"
    a: list[float] | None = None
    b: list[float] | None = None
    c: list[float] | None = None
    lr: float = 1e-3
    std_prefactor: float = 1.0
    layers: dict[str, str] | None = None
    base_width: int | None = None
    base_model: nn.Module | None = field(default=None, repr=False)
    width: int | None = None
    widths: dict[str, int] = field(default_factory=dict)
    base_std: dict[str, float] = field(default_factory=dict)
    bias_lr: str = "abc"
    adam_eps: float | None = None
    apply_multipliers: bool = True
    reinit: bool = True
    attention_scale: str = "auto"
    base_head_dim: int | None = None
    zero_query: bool = False
    zero_readout: bool | list[str] = False
    depth: DepthConfig | None = None
    lr_rule: str = "abc"  # last: positional callers of the fields above are unaffected
    # The old spelling of `lr`, accepted for one release with a DeprecationWarning.
    lr_prefactor: InitVar[float | None] = None
    muon_rule: str = "spectral"
    muon_lr: float | None = None

    def __post_init__(self, lr_prefactor: float | None) -> None:
        if lr_prefactor is not None:
            warnings.warn(
                "ParametrizationConfig(lr_prefactor=...) is now spelled lr=...",
                DeprecationWarning,
                stacklevel=3,
            )
            self.lr = lr_prefactor

    def validate(self) -> ParametrizationConfig:
        """Check the fields that do not depend on the model (errors name them); return self."""
        if self.parametrization is not None:
            self.parametrization = check_parametrization(
                "parametrization", self.parametrization, PARAMETRIZATIONS
            )
        check_choice("optimizer", self.optimizer, ENGINE_OPTIMIZERS)
        _check_muon(self.muon_rule, self.muon_lr)
        check_choice("alignment", self.alignment, ALIGNMENTS)
        check_choice("bias_lr", self.bias_lr, BIAS_RULES)
        check_choice("lr_rule", self.lr_rule, LR_RULES)
        if self.lr_rule == "global" and self.parametrization is None:
            raise ValueError(
                "lr_rule='global' takes a named parametrization's a and b; with custom "
                "exponents give c = 0 for every weight instead"
            )
        check_choice("config.attention_scale", self.attention_scale, ATTENTION_SCALES)
        check_positive("lr", self.lr)
        check_positive("std_prefactor", self.std_prefactor)
        for key in ("base_width", "width", "base_head_dim"):
            if getattr(self, key) is not None:
                check_positive_int(
                    key if key == "base_width" else f"config.{key}", getattr(self, key)
                )
        if self.base_model is not None:
            check_module("config.base_model", self.base_model)
            if self.base_width is not None or self.widths or self.width is not None:
                raise ValueError(
                    "config.base_model states every width: do not also give base_width, "
                    "width or widths"
                )
        if self.adam_eps is not None:
            check_positive("adam_eps", self.adam_eps)
        for key in ("widths", "base_std"):
            if not isinstance(getattr(self, key), dict):
                raise TypeError(
                    f"config.{key} must be a dict {{glob pattern: number}}, got "
                    f"{type(getattr(self, key)).__name__}"
                )
        for pattern, std in self.base_std.items():
            check_positive(f"config.base_std[{pattern!r}]", std)
        for key in ("apply_multipliers", "reinit", "zero_query"):
            check_bool(f"config.{key}", getattr(self, key))
        _check_zero_readout(self.zero_readout)
        _check_depth(self.depth)
        if self.layers is not None:
            if not isinstance(self.layers, dict) or not self.layers:
                raise TypeError(
                    "config.layers must be a non-empty dict {glob pattern: role} or None"
                )
            for pattern, role in self.layers.items():
                check_choice(f"config.layers[{pattern!r}]", role, ROLES)
        return self


def _check_muon(rule: str, lr: float | None) -> None:
    check_choice("muon_rule", rule, MUON_RULES)
    if lr is not None:
        check_positive("muon_lr", lr)


def _check_zero_readout(zero_readout: object) -> None:
    patterns = isinstance(zero_readout, list | tuple) and all(
        isinstance(p, str) for p in zero_readout
    )
    if not (isinstance(zero_readout, bool) or patterns):
        raise TypeError(
            f"config.zero_readout must be a bool or a list of glob patterns, got {zero_readout!r}"
        )


def _check_depth(depth: object) -> None:
    if depth is not None:
        if not isinstance(depth, DepthConfig):
            raise TypeError(
                f"config.depth must be a DepthConfig or None, got {type(depth).__name__}"
            )
        depth.validate()
