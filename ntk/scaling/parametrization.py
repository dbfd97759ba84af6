"""abc-parametrize any PyTorch model: init, forward multipliers and per-layer learning rates.

Everett et al. 2024 (arXiv:2407.05872); the rules and their derivation are in
`ntk.scaling.abc_rules`. Each listed layer's weight matrices are read with their true layout
(`ntk.scaling.geometry`: Linear, Conv, Embedding, Hugging Face Conv1D, nn.MultiheadAttention,
RNN/LSTM/GRU, and any type registered with `register_geometry`). For every weight W with width
ratio n / n0 (`ntk.scaling.base_shapes`: the model's width over the base width, read per
weight like the `mup` package's base shapes), `Parametrization(model, config)`

1. re-initializes W with std = s0 (n / n0)^-b, s0 = std_prefactor / sqrt(fan-in at the base
   width) (std_prefactor for a lookup such as nn.Embedding) or `config.base_std`, and zeroes
   its bias;
2. replaces the module in its parent by a `ScaledModule` whose output is (n / n0)^-a times the
   module's output;
3. builds optimizer `param_groups`: one per weight with lr = lr (n / n0)^-c (c = 0
   for every weight with `lr_rule="global"`: one learning rate, e.g. SP as usually run), one
   per bias (see below) and one for everything else (norms, unlisted layers) at lr.

With `base_width` or `base_model` every ratio is 1 at the base width, where sp, ntk, mup and
mfp all are plain SP (the tuned proxy); without either, n0 = 1 (absolute exponents).

What layer-wrapping cannot express, and what is done instead:
- a multiplier on a weight used inside its module's computation (an LSTM's weights,
  nn.MultiheadAttention's projections, layers whose parent reads their weights directly, as
  nn.TransformerEncoderLayer's fast path does): such weights take their abc-symmetry
  representative with a = 0 ((0, b + a, c + a) for Adam, c + 2a for SGD), the same training
  dynamics up to Adam's epsilon (`note` column);
- one matrix in two roles (tied embedding/readout): handled in `ntk.scaling.tying` (one init,
  one lr, the readout's multiplier), or refused when no representative exists;
- muP's attention scale sqrt(d0)/d is not a layer multiplier: `ntk.scaling.attention` sets it
  in the modules that expose it and names the ones that do not (nn.MultiheadAttention);
- multipliers inside a module (e.g. on a residual branch, or on vector-like parameters such as
  norm gains, position tables, ViT's cls token) are not applied: those parameters stay in the
  rest group with their own init, right for Adam (their a = 0 representative is
  (0, 0, 0)); with SGD muP would scale their lr as n (MuSGD does), which the rest group does not.

Biases. The multiplier scales the whole output, bias included, so with `bias_lr="abc"`
(default) each bias gets its own group whose effective update is width-independent, like an
embedding fed by the constant 1: c = -a for Adam and c = -2a - g for SGD (g the backward
exponent, 0 for the readout; see `ntk.scaling.abc_rules`), exactly what the `mup` package's
MuAdam / MuSGD do to biases. `bias_lr="default"` puts biases in the rest group instead.

Adam's epsilon. Adam divides by sqrt(v) + eps, and the gradient of W carries its multiplier
n^-a, so eps breaks the abc-symmetry slightly. With `adam_eps` set, every group gets
eps = adam_eps (n / n0)^-a: eps is then measured in units of the gradient of the effective
weight n^-a W and the symmetry holds exactly. Left None, the optimizer's own eps applies.

Muon. With `optimizer="muon"` every hidden weight's group is marked optimizer="muon" with its
torch `adjust_lr_fn` and lr = muon_lr (n / n0)^-c times a width-independent layout factor
(`ntk.scaling.muon`: c = -a + the rule's exponent); every other group is marked "adamw" and
keeps Adam's rules. `ntk.scaling.muon.build_optimizer(param.param_groups)` builds both.

Layer groups carry "name", "role", "n", "a", "b", "c" (and "tied"). Layers are listed by glob
pattern, e.g. Hugging Face GPT-2: {"transformer.w[tp]e": "embedding", "transformer.h.*.*.c_*":
"hidden", "lm_head": "readout"}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ntk._checks import (
    check_materialized,
    check_module,
    check_numbers,
    check_positive_int,
    check_width_power,
)
from ntk.scaling import _old_dynamic_lr
from ntk.scaling.abc_rules import (
    ABC,
    abc_shift,
    abc_table,
    backward_exponent,
    max_lr_exponents,
)
from ntk.scaling.attention import AttentionSite, apply_attention, plan_attention
from ntk.scaling.base_shapes import (
    Weight,
    WeightWidth,
    base_stds,
    matching,
    model_width,
    resolve_widths,
)
from ntk.scaling.config import ParametrizationConfig
from ntk.scaling.depth import DepthPlan
from ntk.scaling.geometry import WeightGeometry, geometry_of
from ntk.scaling.muon import MuonUpdate, muon_update, rule_exponent
from ntk.scaling.scaled_module import ScaledModule
from ntk.scaling.tying import check_unlisted_sharing, tie_groups

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LayerSpec", "Parametrization", "ParametrizationConfig", "ScaledModule"]

# parents that read their children's weights directly instead of calling them (fast paths)
_BYPASSING_PARENTS = (nn.MultiheadAttention, nn.TransformerEncoderLayer)


@dataclass
class LayerSpec:
    """One parametrized weight matrix: a row of `Parametrization.table()`."""

    name: str  # the module name, or module name + "." + parameter for modules with several
    role: str  # this weight's role (an LSTM's recurrent weights are hidden)
    kind: str  # module class name
    n: int  # width dimension: fan-out (embedding) or fan-in (hidden, readout)
    n0: float  # n at the base width (1 without base_width or base_model)
    a: float
    b: float
    c: float
    init_std: float
    multiplier: float
    lr: float
    bias_c: float | None  # None: no own bias group
    bias_lr: float | None
    module: nn.Module = field(repr=False)
    param: str = "weight"
    module_name: str = ""
    geometry: WeightGeometry | None = field(default=None, repr=False)
    tied: tuple[str, ...] = ()  # the other layers sharing this weight
    note: str = ""
    muon: MuonUpdate | None = None  # trained by torch.optim.Muon (config.optimizer "muon")

    @property
    def ratio(self) -> float:
        """n / n0: the quantity the exponents apply to."""
        return self.n / self.n0

    @property
    def weight(self) -> nn.Parameter:
        return self.module.get_parameter(self.param)

    @property
    def bias(self) -> nn.Parameter | None:
        path = self.geometry.bias if self.geometry is not None else None
        return None if path is None else self.module.get_parameter(path)


class Parametrization:
    """Apply an abc-parametrization to `model` in place and expose optimizer param groups.

    Example (an MLP; transformers: see the module docstring and `ParametrizationConfig`):
        >>> model = ntk.models.WideMLP(10, width=512, depth=2)
        >>> cfg = ParametrizationConfig("mup", lr=1e-2, base_width=64)
        >>> param = Parametrization(model, cfg)
        >>> opt = torch.optim.Adam(param.param_groups)
        >>> print(param)  # per-weight table
    """

    def __init__(self, model: nn.Module, config: ParametrizationConfig | None = None) -> None:
        check_materialized("model", check_module("model", model))
        config = ParametrizationConfig() if config is None else config
        if not isinstance(config, ParametrizationConfig):
            raise TypeError(f"config must be a ParametrizationConfig, got {type(config).__name__}")
        self.model, self.config = model, config.validate()
        weights = self._weights(self._resolve_layers())
        check_unlisted_sharing(model, weights)
        abcs = self._resolve_exponents([w.role for w in weights])
        widths = resolve_widths(weights, config.base_width, config.base_model, config.width)
        self.layers = self._build_specs(weights, abcs, widths)
        sites, plan = plan_attention(
            model,
            config.attention_scale,
            config.parametrization,
            config.zero_query,
            lambda site: self._base_head_dim(site, weights),
        )
        if config.zero_query:
            self._mark_zero_queries(sites)
        # depth rules (ntk.scaling.depth): branch multipliers, per-group lr / eps factors
        self.depth = None if config.depth is None else DepthPlan(model, config.depth, self._family)
        # the model is changed only after every check above has passed
        if config.reinit:
            self._reinitialize()
        self.attention = apply_attention(sites, plan, config.zero_query)
        if config.apply_multipliers:
            self._wrap()
        if self.depth is not None:
            self.depth.apply(model)

    @property
    def _family(self) -> str:
        """The update rule of the roles outside Muon, "adam" or "sgd" (Muon's own hidden
        updates are scale-invariant: Adam's case for the abc-symmetry and the depth rules)."""
        return "sgd" if self.config.optimizer == "sgd" else "adam"

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
        found, used = [], set()
        for name, module in named:
            hits = matching(layers, name)
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

    def _weights(self, found: list[tuple[str, nn.Module, str]]) -> list[Weight]:
        """One `Weight` per weight matrix of the listed layers, with its own role."""
        out = []
        for name, module, role in found:
            if isinstance(module, nn.Embedding) and role != "embedding":
                raise ValueError(
                    f"layer {name!r} is an nn.Embedding; its role must be 'embedding', got {role!r}"
                )
            geoms = geometry_of(module, name)
            override = self._width_override(name)
            for g in geoms:
                if g.inner and role == "readout":
                    raise ValueError(
                        f"layer {name!r} ({type(module).__name__}) cannot be a readout: its "
                        f"{g.param} reads the module's own state, a width; list it as 'hidden' "
                        "(or 'embedding' if its input is finite) and add a readout after it"
                    )
                label = name if len(geoms) == 1 else f"{name}.{g.param}"
                eff = "hidden" if g.inner else role
                out.append(Weight(label, name, module, g, eff, override))
        if not out:
            raise ValueError("config.layers lists no layer with a weight matrix")
        return out

    def _width_override(self, name: str) -> int | None:
        hits = matching(self.config.widths, name)
        if len(hits) > 1:
            raise ValueError(
                f"module {name!r} is matched by several config.widths patterns: {hits}"
            )
        if not hits:
            return None
        return check_positive_int(f"config.widths[{hits[0]!r}]", self.config.widths[hits[0]])

    def _resolve_exponents(self, roles: list[str]) -> list[ABC]:
        cfg = self.config
        if cfg.parametrization is not None:
            if any(x is not None for x in (cfg.a, cfg.b, cfg.c)):
                raise ValueError(
                    "give either config.parametrization or custom config.a/b/c, not both"
                )
            return abc_table(cfg.parametrization, cfg.optimizer, cfg.alignment, roles, cfg.lr_rule)
        if cfg.a is None or cfg.b is None:
            raise ValueError("custom exponents need config.a and config.b (config.c optional)")
        what = f"one value per weight matrix (table row), roles {roles}"
        a = check_numbers("config.a", cfg.a, len(roles), what)
        b = check_numbers("config.b", cfg.b, len(roles), what)
        if cfg.c is None:
            c = max_lr_exponents(a, b, roles, cfg.optimizer, cfg.alignment)
        else:
            c = check_numbers("config.c", cfg.c, len(roles), what)
        return [ABC(*x) for x in zip(a, b, c, strict=True)]

    def _wrappable(self, w: Weight, counts: dict[str, int]) -> bool:
        """Whether a wrapper's output multiplier multiplies exactly this weight."""
        parent_name = w.module_name.rpartition(".")[0]
        parent = self.model.get_submodule(parent_name) if parent_name else None
        return (
            counts[w.module_name] == 1
            and w.geometry.scalable
            and not isinstance(parent, _BYPASSING_PARENTS)
        )

    def _representatives(self, weights: list[Weight], abcs: list[ABC]):
        """Exponents after tying and a = 0 shifts, with the tie partners and notes per weight."""
        opt = self._family
        params = [id(w.module.get_parameter(w.geometry.param)) for w in weights]
        abcs, tied = tie_groups(
            params, [w.label for w in weights], [w.role for w in weights], abcs, opt
        )
        notes = ["tied with " + ", ".join(t) if t else "" for t in tied]
        counts: dict[str, int] = {}
        for w in weights:
            counts[w.module_name] = counts.get(w.module_name, 0) + 1
        for i, w in enumerate(weights):
            if self.config.apply_multipliers and not self._wrappable(w, counts):
                if tied[i] and abcs[i].a != 0:
                    raise ValueError(
                        f"{w.label!r} is tied and needs a multiplier n^-{abcs[i].a:g}, which "
                        "cannot be applied to a weight used inside its module"
                    )
                if abcs[i].a != 0:
                    notes[i] = "a = 0 representative (multiplier not expressible)"
                abcs[i] = abc_shift(abcs[i], -abcs[i].a, opt)
        return abcs, tied, notes

    def _build_specs(
        self, weights: list[Weight], abcs: list[ABC], widths: list[WeightWidth]
    ) -> list[LayerSpec]:
        cfg = self.config
        abcs, tied, notes = self._representatives(weights, abcs)
        roles = [w.role for w in weights]
        g = None
        if cfg.optimizer == "sgd" and cfg.bias_lr == "abc":
            if "readout" not in roles:
                raise ValueError(
                    "bias_lr='abc' with SGD needs a 'readout' layer (it sets the gradient scale); "
                    "use bias_lr='default'"
                )
            g = backward_exponent([x.a for x in abcs], [x.b for x in abcs], roles)
        stds = base_stds(weights, widths, tied, cfg.std_prefactor, cfg.base_std, cfg.zero_readout)
        for w, x, wd in zip(weights, abcs, widths, strict=True):  # 8^400 overflows a float
            for key in "abc":
                check_width_power(f"config.{key} of {w.label!r}", wd.ratio, -getattr(x, key))
        specs = []
        for w, x, wd, std0, partners, note in zip(
            weights, abcs, widths, stds, tied, notes, strict=True
        ):
            bias_c = None
            if w.geometry.bias is not None and cfg.bias_lr == "abc":
                bias_c = (
                    -x.a
                    if cfg.optimizer != "sgd"
                    else -2 * x.a - (g if w.role != "readout" else 0.0)
                )
            lr, muon = cfg.lr * wd.ratio**-x.c, None
            if cfg.optimizer == "muon" and w.role == "hidden":  # ntk.scaling.muon
                c = 0.0 if cfg.lr_rule == "global" else x.c + rule_exponent(cfg.muon_rule)
                muon = muon_update(w.label, w.module, w.geometry, c, cfg.muon_rule)
                x = ABC(x.a, x.b, c)
                lr = (cfg.muon_lr or cfg.lr) * wd.ratio**-c * muon.factor
            specs.append(
                LayerSpec(
                    name=w.label,
                    role=w.role,
                    kind=type(w.module).__name__,
                    n=wd.n,
                    n0=wd.n0,
                    a=x.a,
                    b=x.b,
                    c=x.c,
                    init_std=std0 * wd.ratio**-x.b,
                    multiplier=wd.ratio**-x.a,
                    lr=lr,
                    bias_c=bias_c,
                    bias_lr=None if bias_c is None else cfg.lr * wd.ratio**-bias_c,
                    module=w.module,
                    param=w.geometry.param,
                    module_name=w.module_name,
                    geometry=w.geometry,
                    tied=partners,
                    note=note,
                    muon=muon,
                )
            )
        return specs

    # ---- attention --------------------------------------------------------------------------
    def _base_head_dim(self, site: AttentionSite, weights: list[Weight]) -> float:
        """d0: the site's head dimension at the base width (1 for absolute exponents)."""
        cfg = self.config
        if cfg.base_model is not None:
            try:
                return site.adapter.head_dim(cfg.base_model.get_submodule(site.name))
            except AttributeError as err:
                raise ValueError(
                    f"config.base_model has no attention module {site.name!r}"
                ) from err
        if cfg.base_width is None:
            return 1.0
        width = cfg.width or model_width(weights)
        if width == cfg.base_width:
            return float(site.head_dim)
        if cfg.base_head_dim is None:
            raise ValueError(
                f"muP's attention scale sqrt(d0)/d needs d0, the head dimension at the base "
                f"width ({site.name!r} has {site.head_dim} at width {width}): set "
                "config.base_head_dim (the same head_dim if heads are added as the model "
                "widens, head_dim * base_width / width if heads widen), or pass "
                "config.base_model"
            )
        return float(cfg.base_head_dim)

    def _mark_zero_queries(self, sites: list[AttentionSite]) -> None:
        """Show zero-initialized queries in the table: std 0, or a note for a fused block."""
        parts = {id(p): index for s in sites for p, index in s.adapter.query(s.module)}
        for spec in self.layers:
            index = parts.get(id(spec.weight))
            if index is not None and all(i == slice(None) for i in index):
                spec.init_std, spec.note = 0.0, "query: zero init"
            elif index is not None:
                spec.note = "query block zero-initialized"

    # ---- mutation ---------------------------------------------------------------------------
    @torch.no_grad()
    def _reinitialize(self) -> None:
        done: set[int] = set()
        for spec in self.layers:
            weight, bias = spec.weight, spec.bias
            if id(weight) not in done:  # a tied matrix is initialized once, by its first row
                weight.normal_(0.0, spec.init_std) if spec.init_std > 0 else weight.zero_()
                if isinstance(spec.module, nn.Embedding) and spec.module.padding_idx is not None:
                    weight[spec.module.padding_idx] = 0.0  # as nn.Embedding's own init
                done.add(id(weight))
            if bias is not None:
                bias.zero_()

    def _wrap(self) -> None:
        counts: dict[str, int] = {}
        for spec in self.layers:
            counts[spec.module_name] = counts.get(spec.module_name, 0) + 1
        for spec in self.layers:
            weight = Weight(spec.name, spec.module_name, spec.module, spec.geometry, spec.role)
            if not self._wrappable(weight, counts):
                continue
            parent_name, _, child = spec.module_name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, child, ScaledModule(spec.module, spec.multiplier))

    # ---- optimizer interface ----------------------------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Fresh optimizer param groups: one per weight, one per bias, one for the rest.

        Layer groups carry "name", "role", "n", "a", "b", "c" besides "params" and "lr"
        (torch optimizers keep extra keys; LR schedulers scale each group's lr); a shared
        matrix has one group, with "tied" naming its other layers.
        """
        cfg = self.config
        groups, taken = [], set()
        for spec in self.layers:
            weight = spec.weight
            if id(weight) not in taken:
                group = self._group(spec, [weight], spec.lr, spec.name, spec.role, spec.b, spec.c)
                if spec.tied:
                    group["tied"] = list(spec.tied)
                groups.append(group)
                taken.add(id(weight))
            bias = spec.bias
            if spec.bias_c is not None and id(bias) not in taken:
                name = f"{spec.module_name}.{spec.geometry.bias}"
                groups.append(
                    self._group(spec, [bias], spec.bias_lr, name, "bias", math.nan, spec.bias_c)
                )
                taken.add(id(bias))
        rest = [p for p in self.model.parameters() if id(p) not in taken]
        if rest:
            group = dict(params=rest, lr=cfg.lr, name="rest", role=None)
            if cfg.adam_eps is not None:
                group["eps"] = cfg.adam_eps
            groups.append(group)
        if cfg.optimizer == "muon":  # which of the two optimizers takes each group
            for group in groups:
                group.setdefault("optimizer", "adamw")
        return groups if self.depth is None else self.depth.groups(groups)

    def _group(
        self, spec: LayerSpec, params: list, lr: float, name: str, role: str, b: float, c: float
    ) -> dict[str, Any]:
        """One optimizer param group of `spec`'s weight, with its exponents as extra keys."""
        group = dict(params=params, lr=lr, name=name, role=role, n=spec.n, a=spec.a, b=b, c=c)
        if spec.muon is not None and role != "bias":  # torch.optim.Muon applies the rule's s
            group.update(optimizer="muon", adjust_lr_fn=spec.muon.adjust_lr_fn)
        elif self.config.adam_eps is not None:
            group["eps"] = self.config.adam_eps * spec.multiplier
        return group

    # ---- reporting --------------------------------------------------------------------------
    def table(self) -> pd.DataFrame:
        """Per-weight table: name, role, type, n, n0, a, b, c, init std, multiplier, lr, bias
        lr, note (ties, a = 0 representatives)."""
        import pandas as pd  # here: applying a parametrization should not import pandas

        rows = [
            dict(
                name=s.name,
                role=s.role,
                type=s.kind,
                n=s.n,
                n0=s.n0,
                a=s.a,
                b=s.b,
                c=s.c,
                init_std=s.init_std,
                multiplier=s.multiplier,
                lr=s.lr,
                bias_lr=math.nan if s.bias_lr is None else s.bias_lr,
                note=s.note,
            )
            for s in self.layers
        ]
        if self.config.optimizer == "muon":  # the column only where there is a choice
            for row, s in zip(rows, self.layers, strict=True):
                row["optimizer"] = "adamw" if s.muon is None else f"muon ({s.muon.rule})"
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        cfg = self.config
        name = cfg.parametrization or "custom"
        if cfg.lr_rule == "global":
            name += ", global lr"
        if cfg.base_model is not None:
            base = "base_model"
        else:
            base = "absolute n" if cfg.base_width is None else f"base_width={cfg.base_width}"
        head = (
            f"Parametrization({name}, optimizer={cfg.optimizer}, alignment={cfg.alignment}, "
            f"{base}, lr={cfg.lr:g}, std_prefactor={cfg.std_prefactor:g})"
        )
        text = head + "\n" + self.table().to_string(index=False, float_format=lambda x: f"{x:.4g}")
        for r in self.attention:
            text += (
                f"\nattention {r['name']} ({r['kind']}, head_dim {r['head_dim']}): logit scale "
                f"{r['scale_before']:.4g} -> {r['scale_after']:.4g}"
            )
        return text if self.depth is None else f"{text}\n{self.depth!r}"

    def __repr__(self) -> str:
        return str(self)

    # deprecated for one release (FutureWarning): the controller is `ntk.DynamicLR`
    dynamic_lr = None  # the controller made by the deprecated enable_dynamic_lr
    enable_dynamic_lr = _old_dynamic_lr.enable_dynamic_lr
    step = _old_dynamic_lr.step
    state_dict = _old_dynamic_lr.state_dict
    load_state_dict = _old_dynamic_lr.load_state_dict
