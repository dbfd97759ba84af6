"""abc-parametrize any PyTorch model: init, forward multipliers and per-layer learning rates.

Everett et al. 2024 (arXiv:2407.05872); the rules and their derivation are in
`ntk.scaling.abc_rules`.
For every parametrized layer with width n (embedding: fan-out; hidden, readout: fan-in, kernel
size included for convolutions), `Parametrization(model, config)`

1. re-initializes the weight with std = std_prefactor * const * (n / n0)^-b, where
   const = 1/sqrt(finite fan-in) for an embedding (1/sqrt(d); 1 for `nn.Embedding`, whose input
   is one-hot) and 1/sqrt(n0) otherwise, and zeroes the bias;
2. replaces the module in its parent by a `ScaledModule` whose output is (n / n0)^-a times the
   module's output (any module type: the wrapper only scales the output);
3. builds optimizer `param_groups`: one per layer with lr = lr_prefactor * (n / n0)^-c, one per
   layer bias (see below) and one for everything else (norms, unlisted layers) at lr_prefactor.

n0 = 1 without `base_width` (absolute exponents); with it, n0 is the layer's n at width
`base_width`, so every multiplier is 1, every lr is lr_prefactor and every std is the plain SP
one (1/sqrt(fan_in)) at the base width: sp, ntk, mup, mfp all coincide there, which is how a
small proxy model is tuned and its hyperparameters transferred.

Biases. The multiplier scales the whole output, bias included, so a bias left at lr_prefactor
would move by n^-a per step: too fast in the mup embedding (a = -1/2), frozen in its readout.
With `bias_lr="abc"` (default) each layer's bias gets its own group whose effective update is
width-independent, like an embedding weight fed by the constant 1: c = -a for Adam and
c = -2a - g for SGD (g the backward exponent, 0 for the readout; see `ntk.scaling.abc_rules`). This is
exactly what the `mup` package's MuAdam / MuSGD do to biases. `bias_lr="default"` puts biases in
the rest group instead.

Adam's epsilon. Adam divides by sqrt(v) + eps, and the gradient of a layer's weight carries its
multiplier n^-a, so eps breaks the abc-symmetry (and width-independence) slightly. With
`adam_eps` set, every group gets eps = adam_eps * (n / n0)^-a: eps is then measured in units of
the gradient of the effective weight n^-a W, the update of the effective weight depends on
a + c only, and the symmetry holds exactly. Left None, the optimizer's own eps applies.

Every layer group carries the keys "name", "role", "n", "a", "b", "c", so code that adjusts
learning rates during training (schedules, per-layer rules) can tell the groups apart. A
transformer is parametrized by listing its layers by glob pattern (e.g. {"embed": "embedding",
"blocks.*.mlp.*": "hidden", "head": "readout"}).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ntk._checks import (
    check_bool,
    check_choice,
    check_materialized,
    check_module,
    check_numbers,
    check_parametrization,
    check_positive,
    check_positive_int,
)
from ntk.scaling.abc_rules import (
    ALIGNMENTS,
    OPTIMIZER_FAMILIES,
    PARAMETRIZATIONS,
    ROLES,
    abc_table,
    backward_exponent,
    max_lr_exponents,
)
from ntk.scaling.scaled_module import ScaledModule

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LayerSpec", "Parametrization", "ParametrizationConfig", "ScaledModule"]

BIAS_RULES = ("abc", "default")


@dataclass
class ParametrizationConfig:
    """What to parametrize and how.

    Attributes:
        parametrization: "sp", "ntk", "mup" or "mfp" ("standard" is read as "sp"); None for
            custom `a`, `b` (and `c`).
        optimizer: "adam" (any Adam-like, scale-invariant optimizer) or "sgd".
        alignment: "full" or "no" (the alignment assumption behind the c exponents).
        a, b, c: custom exponents, one per parametrized layer in module order; `c` None derives
            the maximal stable learning rates from `a`, `b` (`abc_rules.max_lr_exponents`).
        lr_prefactor: learning rate at n = n0 (and of the rest group).
        std_prefactor: init std at n = n0, in units of 1/sqrt(fan_in) (e.g. sqrt(2) for He).
        layers: glob pattern on module names -> role ("embedding", "hidden", "readout");
            None auto-detects an MLP: all `nn.Linear` in order, first embedding, last readout.
        base_width: width at which all parametrizations reduce to plain SP; None = absolute n.
        widths: glob pattern -> n for layers whose width cannot be read from the module
            (any type other than Linear, Conv, Embedding) or to override it.
        bias_lr: "abc" (biases get width-independent updates) or "default" (rest group).
        adam_eps: if set, each group gets eps = adam_eps * (n / n0)^-a (see module docstring).
        apply_multipliers: wrap layers to apply n^-a (False if the model does it itself).
        reinit: re-initialize weights (std n^-b) and zero biases of Linear/Conv/Embedding.
    """

    parametrization: str | None = "mup"
    optimizer: str = "adam"
    alignment: str = "full"
    a: list[float] | None = None
    b: list[float] | None = None
    c: list[float] | None = None
    lr_prefactor: float = 1e-3
    std_prefactor: float = 1.0
    layers: dict[str, str] | None = None
    base_width: int | None = None
    widths: dict[str, int] = field(default_factory=dict)
    bias_lr: str = "abc"
    adam_eps: float | None = None
    apply_multipliers: bool = True
    reinit: bool = True

    def validate(self) -> ParametrizationConfig:
        """Check the fields that do not depend on the model (errors name them); return self."""
        if self.parametrization is not None:
            self.parametrization = check_parametrization(
                "parametrization", self.parametrization, PARAMETRIZATIONS
            )
        check_choice("optimizer", self.optimizer, OPTIMIZER_FAMILIES)
        check_choice("alignment", self.alignment, ALIGNMENTS)
        check_choice("bias_lr", self.bias_lr, BIAS_RULES)
        check_positive("lr_prefactor", self.lr_prefactor)
        check_positive("std_prefactor", self.std_prefactor)
        if self.base_width is not None:
            check_positive_int("base_width", self.base_width)
        if self.adam_eps is not None:
            check_positive("adam_eps", self.adam_eps)
        if not isinstance(self.widths, dict):
            raise TypeError(
                "config.widths must be a dict {glob pattern: int}, got "
                f"{type(self.widths).__name__}"
            )
        for key in ("apply_multipliers", "reinit"):
            check_bool(f"config.{key}", getattr(self, key))
        return self


@dataclass
class LayerSpec:
    """One parametrized layer: a row of `Parametrization.table()`."""

    name: str
    role: str
    kind: str  # module class name
    n: int  # width: fan-out (embedding) or fan-in (hidden, readout)
    n0: float  # n at the base width (1 without base_width)
    a: float
    b: float
    c: float
    init_std: float  # nan when the module type is not re-initialized
    multiplier: float
    lr: float
    bias_c: float | None  # None: no own bias group
    bias_lr: float | None
    module: nn.Module = field(repr=False)

    @property
    def ratio(self) -> float:
        """n / n0: the quantity the exponents apply to."""
        return self.n / self.n0


def _match(patterns: dict[str, Any], name: str) -> list[str]:
    return [p for p in patterns if fnmatch.fnmatchcase(name, p)]


def _geometry(
    module: nn.Module, role: str, name: str, n_override: int | None, base_width: int | None
) -> tuple[int, float, float]:
    """(n, n0, const): width, its value at the base width, and the init constant."""
    if isinstance(module, nn.Linear):
        width, fan_in = (
            (module.out_features, module.in_features)
            if role == "embedding"
            else (module.in_features, module.in_features)
        )
        per_width = 1
    elif isinstance(module, nn.modules.conv._ConvNd):
        k = math.prod(module.kernel_size)
        per_group_in = module.in_channels // module.groups
        if role == "embedding":
            width, fan_in, per_width = module.out_channels, per_group_in * k, 1
        else:  # fan-in includes the kernel: n = channels * k, base n0 = base_width * k
            width, fan_in, per_width = per_group_in, per_group_in * k, k
    elif isinstance(module, nn.Embedding):
        if role != "embedding":
            raise ValueError(
                f"layer {name!r} is an nn.Embedding; its role must be 'embedding', got {role!r}"
            )
        width, fan_in, per_width = module.embedding_dim, 1, 1
    else:
        if n_override is None:
            raise ValueError(
                f"layer {name!r} is a {type(module).__name__}: state its width n in "
                f"config.widths (glob pattern -> int)"
            )
        width, fan_in, per_width = n_override, n_override, 1
    if n_override is not None:
        width, per_width = n_override, 1
    n = width * per_width
    n0 = 1.0 if base_width is None else float(base_width * per_width)
    const = fan_in**-0.5 if role == "embedding" else n0**-0.5
    return n, n0, const


class Parametrization:
    """Apply an abc-parametrization to `model` in place and expose optimizer param groups.

    Example:
        >>> model = ntk.models.WideMLP(10, width=512, depth=2)
        >>> param = Parametrization(model, ParametrizationConfig("mup", lr_prefactor=1e-2, base_width=64))
        >>> opt = torch.optim.Adam(param.param_groups)
        >>> print(param)  # per-layer table
    """

    def __init__(self, model: nn.Module, config: ParametrizationConfig | None = None) -> None:
        check_materialized("model", check_module("model", model))
        config = ParametrizationConfig() if config is None else config
        if not isinstance(config, ParametrizationConfig):
            raise TypeError(f"config must be a ParametrizationConfig, got {type(config).__name__}")
        self.model, self.config = model, config.validate()
        found = self._resolve_layers()
        a, b, c = self._resolve_exponents([role for _, _, role in found])
        self.layers = self._build_specs(found, a, b, c)
        self._check_shared_parameters()
        if config.reinit:
            self._reinitialize()
        if config.apply_multipliers:
            self._wrap()

    # ---- resolution -------------------------------------------------------------------------
    def _resolve_layers(self) -> list[tuple[str, nn.Module, str]]:
        """(name, module, role) of every parametrized layer, in module (definition) order."""
        named = [(n, m) for n, m in self.model.named_modules() if n]
        if any(isinstance(m, ScaledModule) for _, m in named):
            raise ValueError(
                "model already contains ScaledModule wrappers: it is parametrized already"
            )
        layers = self.config.layers
        if layers is None:
            linears = [(n, m) for n, m in named if isinstance(m, nn.Linear)]
            if len(linears) < 2:
                raise ValueError(
                    f"auto-detect needs at least 2 nn.Linear layers (embedding, readout), the model "
                    f"has {len(linears)}; pass config.layers (glob pattern -> role) instead"
                )
            roles = ["embedding"] + ["hidden"] * (len(linears) - 2) + ["readout"]
            return [(n, m, r) for (n, m), r in zip(linears, roles, strict=True)]
        if not isinstance(layers, dict) or not layers:
            raise TypeError("config.layers must be a non-empty dict {glob pattern: role} or None")
        for pattern, role in layers.items():
            check_choice(f"config.layers[{pattern!r}]", role, ROLES)
        found, used = [], set()
        for name, module in named:
            hits = _match(layers, name)
            if len(hits) > 1:
                raise ValueError(f"module {name!r} is matched by several patterns: {hits}")
            if hits:
                used.add(hits[0])
                found.append((name, module, layers[hits[0]]))
        unused = [p for p in layers if p not in used]
        if unused:
            names = [n for n, _ in named]
            raise ValueError(
                f"config.layers patterns {unused} match no module; module names: {names}"
            )
        names = [n for n, _, _ in found]
        for n in names:
            parents = [p for p in names if n.startswith(p + ".")]
            if parents:
                raise ValueError(f"module {n!r} and its parent {parents[0]!r} are both matched")
        return found

    def _resolve_exponents(self, roles: list[str]) -> tuple[list[float], list[float], list[float]]:
        cfg = self.config
        custom = [x is not None for x in (cfg.a, cfg.b, cfg.c)]
        if cfg.parametrization is not None:
            if any(custom):
                raise ValueError(
                    "give either config.parametrization or custom config.a/b/c, not both"
                )
            abcs = abc_table(cfg.parametrization, cfg.optimizer, cfg.alignment, roles)
            return [x.a for x in abcs], [x.b for x in abcs], [x.c for x in abcs]
        if cfg.a is None or cfg.b is None:
            raise ValueError("custom exponents need config.a and config.b (config.c optional)")
        what = f"one value per parametrized layer, roles {roles}"
        a = check_numbers("config.a", cfg.a, len(roles), what)
        b = check_numbers("config.b", cfg.b, len(roles), what)
        if cfg.c is None:
            return a, b, max_lr_exponents(a, b, roles, cfg.optimizer, cfg.alignment)
        return a, b, check_numbers("config.c", cfg.c, len(roles), what)

    def _build_specs(self, found, a, b, c) -> list[LayerSpec]:
        cfg = self.config
        roles = [role for _, _, role in found]
        g = None
        if cfg.optimizer == "sgd" and cfg.bias_lr == "abc":
            if "readout" not in roles:
                raise ValueError(
                    "bias_lr='abc' with SGD needs a 'readout' layer (it sets the gradient scale); "
                    "use bias_lr='default'"
                )
            g = backward_exponent(a, b, roles)
        specs = []
        for (name, module, role), a_l, b_l, c_l in zip(found, a, b, c, strict=True):
            hits = _match(cfg.widths, name)
            if len(hits) > 1:
                raise ValueError(
                    f"module {name!r} is matched by several config.widths patterns: {hits}"
                )
            n_override = (
                check_positive_int(f"config.widths[{hits[0]!r}]", cfg.widths[hits[0]])
                if hits
                else None
            )
            n, n0, const = _geometry(module, role, name, n_override, cfg.base_width)
            ratio = n / n0
            reinit = isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding))
            bias = getattr(module, "bias", None) if reinit else None
            bias_c = None
            if isinstance(bias, nn.Parameter) and cfg.bias_lr == "abc":
                bias_c = (
                    -a_l
                    if cfg.optimizer == "adam"
                    else -2 * a_l - (0.0 if role == "readout" else g)
                )
            specs.append(
                LayerSpec(
                    name=name,
                    role=role,
                    kind=type(module).__name__,
                    n=n,
                    n0=n0,
                    a=a_l,
                    b=b_l,
                    c=c_l,
                    init_std=cfg.std_prefactor * const * ratio**-b_l if reinit else math.nan,
                    multiplier=ratio**-a_l,
                    lr=cfg.lr_prefactor * ratio**-c_l,
                    bias_c=bias_c,
                    bias_lr=None if bias_c is None else cfg.lr_prefactor * ratio**-bias_c,
                    module=module,
                )
            )
        return specs

    def _layer_params(self, spec: LayerSpec) -> list[nn.Parameter]:
        if spec.bias_c is not None:
            return [spec.module.weight]
        if (
            isinstance(spec.module, (nn.Linear, nn.modules.conv._ConvNd))
            and self.config.bias_lr == "default"
        ):
            return [spec.module.weight]  # the bias joins the rest group
        return list(spec.module.parameters())

    def _check_shared_parameters(self) -> None:
        seen: dict[int, str] = {}
        for spec in self.layers:
            for p in spec.module.parameters():
                if id(p) in seen:
                    raise ValueError(f"layers {seen[id(p)]!r} and {spec.name!r} share a parameter")
                seen[id(p)] = spec.name

    # ---- mutation ---------------------------------------------------------------------------
    @torch.no_grad()
    def _reinitialize(self) -> None:
        for spec in self.layers:
            if math.isnan(spec.init_std):
                continue
            spec.module.weight.normal_(0.0, spec.init_std)
            bias = getattr(spec.module, "bias", None)
            if isinstance(bias, nn.Parameter):
                bias.zero_()

    def _wrap(self) -> None:
        for spec in self.layers:
            parent_name, _, child = spec.name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, child, ScaledModule(spec.module, spec.multiplier))

    # ---- optimizer interface ----------------------------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Fresh optimizer param groups: one per layer, one per layer bias, one for the rest.

        Layer groups carry "name", "role", "n", "a", "b", "c" besides "params" and "lr"
        (torch optimizers keep extra keys; LR schedulers scale each group's lr).
        """
        cfg = self.config
        groups, taken = [], set()
        for spec in self.layers:
            params = self._layer_params(spec)
            groups.append(self._group(spec, params, spec.lr, spec.name, spec.role, spec.b, spec.c))
            taken.update(id(p) for p in params)
            if spec.bias_c is not None:
                bias = spec.module.bias
                name = f"{spec.name}.bias"
                groups.append(
                    self._group(spec, [bias], spec.bias_lr, name, "bias", math.nan, spec.bias_c)
                )
                taken.add(id(bias))
        rest = [p for p in self.model.parameters() if id(p) not in taken]
        if rest:
            group = dict(params=rest, lr=cfg.lr_prefactor, name="rest", role=None)
            if cfg.adam_eps is not None:
                group["eps"] = cfg.adam_eps
            groups.append(group)
        return groups

    def _group(
        self, spec: LayerSpec, params: list, lr: float, name: str, role: str, b: float, c: float
    ) -> dict[str, Any]:
        """One optimizer param group of `spec`'s layer, with its exponents as extra keys."""
        group = dict(params=params, lr=lr, name=name, role=role, n=spec.n, a=spec.a, b=b, c=c)
        if self.config.adam_eps is not None:
            group["eps"] = self.config.adam_eps * spec.multiplier
        return group

    # ---- reporting --------------------------------------------------------------------------
    def table(self) -> pd.DataFrame:
        """Per-layer table: name, role, type, n, a, b, c, init std, multiplier, lr, bias lr."""
        import pandas as pd  # here: applying a parametrization should not import pandas

        rows = [
            dict(
                name=s.name,
                role=s.role,
                type=s.kind,
                n=s.n,
                a=s.a,
                b=s.b,
                c=s.c,
                init_std=s.init_std,
                multiplier=s.multiplier,
                lr=s.lr,
                bias_lr=math.nan if s.bias_lr is None else s.bias_lr,
            )
            for s in self.layers
        ]
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        cfg = self.config
        name = cfg.parametrization or "custom"
        base = "absolute n" if cfg.base_width is None else f"base_width={cfg.base_width}"
        head = (
            f"Parametrization({name}, optimizer={cfg.optimizer}, alignment={cfg.alignment}, "
            f"{base}, lr_prefactor={cfg.lr_prefactor:g}, std_prefactor={cfg.std_prefactor:g})"
        )
        return head + "\n" + self.table().to_string(index=False, float_format=lambda x: f"{x:.4g}")

    def __repr__(self) -> str:
        return str(self)
