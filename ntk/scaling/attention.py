"""Attention under muP: the 1/d logit scale, zero-initialized queries, fused q/k/v blocks.

Attention logits are s q.k with q, k in R^d (d the head dimension). At initialization q and k
are independent, q.k = O(sqrt(d)), and the usual s = 1/sqrt(d) keeps the logits O(1). Once
training has correlated them (the regime muP is built for), q.k = Theta(d), and only s ~ 1/d
keeps the logits O(1) as d grows (Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466,
where muP's attention uses 1/d). muP therefore uses

    s = sqrt(d0) / d        (d0 = the head dimension at the base width),

which equals 1/sqrt(d) at the base width, so a tuned base model is unchanged; if the head
dimension does not grow with the width (more heads instead), nothing changes. The scale lives
inside each attention module, so each kind of module needs an adapter that can reach it:

    module                                      the scale forward reads      query
    ntk.lm's attention (any module with an      softmax_scale (float),       q (nn.Linear)
      int head_dim and a float softmax_scale)     head_dim
    transformers GPT2Attention                  scaling, head_dim            c_attn rows [:E]
    transformers GPTNeoXAttention               scaling, head_size           query_key_value
                                                                               rows [q_h] per head
    transformers attention with `scaling`       scaling, head_dim or         query / q_proj
      (BertSelfAttention, ViTAttention, ...)      attention_head_size
    nn.MultiheadAttention                       none: 1/sqrt(d) is computed  in_proj rows [:E]
                                                  in F.multi_head_attention_forward

A module's own scale is taken to be proportional to d^-e (e = 1/2; GPT-2 with
scale_attn_weights=False has e = 0, its scale is 1): muP multiplies it by (d0 / d)^(1 - e),
keeping any other factor it carries (GPT-2's optional 1/(layer index + 1)).
`register_attention` adds an adapter for another module type. Modules whose class name says
"attention" and that no adapter reaches are reported by name, never skipped silently.

Zero-initialized queries (a muP practice of Tensor Programs V and the `mup` package's examples)
make every attention pattern uniform at initialization at any width; `zero_query` zeroes
exactly the parameters (or rows) that compute q.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ntk.scaling.geometry import geometry_of, registered_geometry
from ntk.scaling.scaled_module import ScaledModule

__all__ = ["AttentionAdapter", "AttentionSite", "attention_sites", "register_attention"]

QueryParts = list[tuple[nn.Parameter, tuple[slice, ...]]]
QUERY_NAMES = ("q", "q_proj", "query", "to_q", "wq")


@dataclass(frozen=True)
class AttentionAdapter:
    """How to reach one kind of attention module.

    Attributes:
        kind: a short name for tables and errors.
        matches: module -> whether this adapter handles it.
        head_dim: module -> the head dimension d.
        scale_attr: the float attribute forward reads as the logit scale; None if the scale
            cannot be reached (then `unreachable` says why).
        query: module -> [(parameter, index)]: the entries that compute the query.
        own_exponent: module -> e, with the module's own scale proportional to d^-e.
        fused: module -> [(child module, block names)]: projections that stack several
            matrices (GPT-2's c_attn holds q, k, v), for the spectral monitor.
        unreachable: why the scale cannot be reached (when scale_attr is None).
    """

    kind: str
    matches: Callable[[nn.Module], bool]
    head_dim: Callable[[nn.Module], int]
    scale_attr: str | None
    query: Callable[[nn.Module], QueryParts]
    own_exponent: Callable[[nn.Module], float] = lambda m: 0.5
    fused: Callable[[nn.Module], list[tuple[nn.Module, tuple[str, ...]]]] = lambda m: []
    unreachable: str = ""


@dataclass
class AttentionSite:
    """One attention module of a model and the adapter that reaches it."""

    name: str
    module: nn.Module = field(repr=False)
    adapter: AttentionAdapter = field(repr=False)

    @property
    def head_dim(self) -> int:
        return int(self.adapter.head_dim(self.module))

    @property
    def reachable(self) -> bool:
        return self.adapter.scale_attr is not None

    @property
    def scale(self) -> float:
        return float(getattr(self.module, self.adapter.scale_attr))

    def mup_factor(self, base_head_dim: float) -> float:
        """(d0 / d)^(1 - e): what turns the module's own scale into muP's sqrt(d0) / d form."""
        e = self.adapter.own_exponent(self.module)
        return (base_head_dim / self.head_dim) ** (1.0 - e)

    def set_scale(self, factor: float) -> tuple[float, float]:
        """Multiply the module's logit scale by `factor`; (before, after)."""
        before = self.scale
        setattr(self.module, self.adapter.scale_attr, before * factor)
        return before, self.scale

    @torch.no_grad()
    def zero_query(self) -> None:
        for param, index in self.adapter.query(self.module):
            param[index] = 0.0


def _unwrap(module: nn.Module) -> nn.Module:
    while isinstance(module, ScaledModule):
        module = module.module
    return module


def _whole_query(module: nn.Module) -> QueryParts:
    """The weight and bias of the module's query child (q, q_proj, query, to_q or wq)."""
    for child_name in QUERY_NAMES:
        child = getattr(module, child_name, None)
        if isinstance(child, nn.Module) and registered_geometry(_unwrap(child)):
            child = _unwrap(child)
            (g,) = geometry_of(child, child_name)
            params = [g.param] + ([g.bias] if g.bias else [])
            return [(child.get_parameter(p), (slice(None),)) for p in params]
    raise ValueError(
        f"no query projection found in {type(module).__name__} (looked for a child layer named "
        f"one of {QUERY_NAMES}); zero it yourself or register_attention an adapter"
    )


def _qualname(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _gpt2_query(m: nn.Module) -> QueryParts:
    if getattr(m, "is_cross_attention", False):
        return [(m.q_attn.weight, (slice(None),)), (m.q_attn.bias, (slice(None),))]
    e = m.embed_dim  # c_attn (Conv1D) stores (in, 3E): columns [:E] are the query
    return [(m.c_attn.weight, (slice(None), slice(0, e))), (m.c_attn.bias, (slice(0, e),))]


def _gpt2_fused(m: nn.Module) -> list[tuple[nn.Module, tuple[str, ...]]]:
    cross = getattr(m, "is_cross_attention", False)
    return [(_unwrap(m.c_attn), ("k", "v") if cross else ("q", "k", "v"))]


def _neox_query(m: nn.Module) -> QueryParts:
    """GPT-NeoX's query_key_value stores its rows head by head, [q_h; k_h; v_h]: the query is
    the first head_size rows of every 3 * head_size."""
    d, qkv = m.head_size, _unwrap(m.query_key_value)
    heads = range(qkv.weight.shape[0] // (3 * d))
    parts = [(qkv.weight, (slice(3 * d * h, 3 * d * h + d),)) for h in heads]
    if qkv.bias is not None:
        parts += [(qkv.bias, (slice(3 * d * h, 3 * d * h + d),)) for h in heads]
    return parts


def _mha_query(m: nn.MultiheadAttention) -> QueryParts:
    rows = (slice(0, m.embed_dim),)
    weight = m.in_proj_weight if m._qkv_same_embed_dim else m.q_proj_weight
    parts = [(weight, rows if m._qkv_same_embed_dim else (slice(None),))]
    return parts + ([(m.in_proj_bias, rows)] if m.in_proj_bias is not None else [])


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


GPT2 = AttentionAdapter(
    kind="gpt2",
    matches=lambda m: _qualname(m).endswith("modeling_gpt2.GPT2Attention"),
    head_dim=lambda m: m.head_dim,
    scale_attr="scaling",
    query=_gpt2_query,
    own_exponent=lambda m: 0.5 if m.scale_attn_weights else 0.0,
    fused=_gpt2_fused,
)
GPT_NEOX = AttentionAdapter(
    kind="gpt_neox",
    matches=lambda m: _qualname(m).endswith("modeling_gpt_neox.GPTNeoXAttention"),
    head_dim=lambda m: m.head_size,
    scale_attr="scaling",
    query=_neox_query,
)
SOFTMAX_SCALE = AttentionAdapter(
    kind="softmax_scale",
    matches=lambda m: (
        isinstance(getattr(m, "softmax_scale", None), float)
        and _is_int(getattr(m, "head_dim", None))
    ),
    head_dim=lambda m: m.head_dim,
    scale_attr="softmax_scale",
    query=_whole_query,
)
HF_SCALING = AttentionAdapter(
    kind="scaling",
    matches=lambda m: (
        isinstance(getattr(m, "scaling", None), float)
        and (
            _is_int(getattr(m, "head_dim", None))
            or _is_int(getattr(m, "attention_head_size", None))
        )
    ),
    head_dim=lambda m: (
        m.head_dim if _is_int(getattr(m, "head_dim", None)) else m.attention_head_size
    ),
    scale_attr="scaling",
    query=_whole_query,
)
MULTIHEAD = AttentionAdapter(
    kind="nn.MultiheadAttention",
    matches=lambda m: isinstance(m, nn.MultiheadAttention),
    head_dim=lambda m: m.head_dim,
    scale_attr=None,
    query=_mha_query,
    fused=lambda m: [],
    unreachable=(
        "nn.MultiheadAttention computes its 1/sqrt(head_dim) scale inside "
        "F.multi_head_attention_forward, with no attribute to change"
    ),
)
_ADAPTERS: list[AttentionAdapter] = [GPT2, GPT_NEOX, SOFTMAX_SCALE, HF_SCALING, MULTIHEAD]


def register_attention(adapter: AttentionAdapter) -> None:
    """Add an adapter; it is tried before the built-in ones."""
    if not isinstance(adapter, AttentionAdapter):
        raise TypeError(f"adapter must be an AttentionAdapter, got {type(adapter).__name__}")
    _ADAPTERS.insert(0, adapter)


def attention_sites(model: nn.Module) -> tuple[list[AttentionSite], list[str]]:
    """(sites, unknown): every attention module an adapter matches, and the names of modules
    whose class name contains "attention" that none matches (with no matched module inside or
    around them, so containers such as BertAttention are not reported)."""
    sites, candidates = [], []
    for name, module in model.named_modules():
        adapter = next((a for a in _ADAPTERS if a.matches(module)), None)
        if adapter is not None:
            sites.append(AttentionSite(name, module, adapter))
        elif "attention" in type(module).__name__.lower():
            candidates.append(name)
    matched = [s.name for s in sites]

    def related(a: str, b: str) -> bool:
        return a == b or not a or not b or a.startswith(b + ".") or b.startswith(a + ".")

    unknown = [c for c in candidates if not any(related(c, m) for m in matched)]
    return sites, unknown


def fused_blocks(model: nn.Module) -> dict[int, tuple[str, ...]]:
    """id(module) -> block names, for fused projections inside attention modules."""
    sites, _ = attention_sites(model)
    return {id(child): labels for s in sites for child, labels in s.adapter.fused(s.module)}


Plan = list[tuple[AttentionSite, float]]


def plan_attention(
    model: nn.Module,
    mode: str,
    parametrization: str | None,
    zero_query: bool,
    base_head_dim: Callable[[AttentionSite], float],
) -> tuple[list[AttentionSite], Plan]:
    """(sites, [(site, factor)]): every attention module, and the scale factors muP applies.

    `mode` "auto" means "mup" for mup and mfp, "keep" for sp and ntk; custom exponents must
    state it. Raises ValueError naming every module that muP (or `zero_query`) cannot reach.
    """
    sites, unknown = attention_sites(model)
    if mode == "auto" and (sites or unknown):
        if parametrization is None:
            raise ValueError(
                f"the model has attention modules ({[s.name for s in sites] + unknown}); "
                "with custom exponents state config.attention_scale: 'mup' (sqrt(d0)/d) "
                "or 'keep' (each module's own scale)"
            )
        mode = "mup" if parametrization in ("mup", "mfp") else "keep"
    if unknown and (mode == "mup" or zero_query):
        raise ValueError(
            f"attention modules {unknown} are not reachable (no adapter knows their logit "
            "scale or query): add one with ntk.scaling.register_attention, or pass "
            "config.attention_scale='keep' (and zero_query=False) to leave them as they are"
        )
    blocked = [s for s in sites if not s.reachable] if mode == "mup" else []
    if blocked:
        raise ValueError(
            f"muP's 1/d attention scale cannot be applied to {[s.name for s in blocked]}: "
            f"{blocked[0].adapter.unreachable}. Pass config.attention_scale='keep' to keep "
            "1/sqrt(d) there (logits then grow like sqrt(d) once q and k align in "
            "training), or use an attention module that exposes its scale (e.g. an int "
            "head_dim and a float softmax_scale read in forward)"
        )
    if zero_query:
        for s in sites:
            s.adapter.query(s.module)  # raises now, before the model is changed
    plan = [(s, s.mup_factor(base_head_dim(s))) for s in sites] if mode == "mup" else []
    return sites, plan


def apply_attention(sites: list[AttentionSite], plan: Plan, zero_query: bool) -> list[dict]:
    """Zero the queries (if asked) and set the planned scales; one record per changed site."""
    if zero_query:
        for site in sites:
            site.zero_query()
    records = []
    for site, factor in plan:
        before, after = site.set_scale(factor)
        records.append(
            dict(
                name=site.name,
                kind=site.adapter.kind,
                head_dim=site.head_dim,
                scale_before=before,
                scale_after=after,
            )
        )
    return records
