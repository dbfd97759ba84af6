"""Depth rules: residual-branch multipliers L^-alpha and the learning rates that go with them.

A residual network with L branches f_l (each a block's attention, MLP, ...) computes

    h_l = h_{l-1} + L^-alpha f_l(h_{l-1}; W_l),   l = 1..L.

muP fixes how every exponent scales with the width n; these rules fix how they scale with the
depth L, so that a learning rate tuned on a shallow model transfers to a deep one. Two members
of the family alpha in [1/2, 1] are named:

- "depth-mup", alpha = 1/2: Yang, Yu, Zhu & Hayou 2023, "Tensor Programs VI: Feature Learning
  in Infinite-Depth Neural Networks", arXiv:2310.02244 (Depth-muP), and Bordelon, Noci, Li,
  Hanin & Pehlevan 2023, "Depthwise Hyperparameter Transfer in Residual Networks",
  arXiv:2309.16620 (1/sqrt(L) branches);
- "completep", alpha = 1: Dey, Zhang, Bergsma, Hestness et al. 2025, "Don't be lazy: CompleteP
  enables compute-efficient deep transformers", arXiv:2505.01618 (their Table 1).

Derivation (all in ratios r = L / L0 to a base depth L0, where every rule is the identity):

1. Forward at init. The branch outputs f_l are Theta(1) and nearly uncorrelated across l, so
   h_L - h_0 = L^-alpha sum_l f_l has size L^(1/2 - alpha): bounded for alpha >= 1/2. Without
   a multiplier (alpha = 0, width-only muP) a pre-norm stream grows like sqrt(L).
2. Backward. For alpha >= 1/2 the gradient d loss / d h_l stays Theta(1) at every l, and the
   gradient of a branch weight carries the branch multiplier: d loss / d W_l ~ L^-alpha.
3. Updates. After a step the branches move together (one loss drives them), so their changes
   add coherently: each branch's change of the stream, L^-alpha dW_l x, must be Theta(1/L)
   for the L of them to move the output by Theta(1), every block by the same vanishing share.
   - Adam (update size ~ lr, whatever the gradient's scale): L^-alpha lr = L^-1, so
     lr ~ L^(alpha - 1): L^-1/2 for depth-muP (Yang et al. 2023, Adam), L^0 for CompleteP.
   - SGD (update ~ lr x gradient ~ lr L^-alpha): L^-2alpha lr = L^-1, so lr ~ L^(2 alpha - 1):
     L^0 for depth-muP (Yang et al. 2023 and Bordelon et al. 2023 keep SGD's lr fixed), L^1
     for CompleteP.
   - Adam's epsilon: Adam computes g / (sqrt(v) + eps), scale-free only while eps << |g|;
     g carries L^-alpha, so eps ~ L^-alpha keeps their ratio (Dey et al. 2025, Table 1), as
     the width rule does with n^-a (`ntk.scaling.parametrization`).
   Init variances do not change with depth (the multiplier does that job).

These factors multiply the width rules of `ntk.scaling.parametrization`. They apply to every
parameter inside a named branch module (weights, biases, norm gains there); a norm outside the
branch (a pre-norm block's own LayerNorm, as in GPT-2) keeps its learning rate. Use them
through `ParametrizationConfig(depth=DepthConfig(...))`, or on any model with `DepthPlan`.

Checks of the claim, on the project's tools: a depth coordinate check is
`coord_check(make_model, depths, data, axis="depth")` with the blocks compared at equal
relative depth (`at_relative_depth`), fitted by `fit_exponents(..., axis="depth")`; a depth
transfer sweep is `depth_sweep` (`lr_sweep` with depth on the swept axis) read by
`depth_optima` and `lr_drift`.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from ntk._checks import check_choice, check_positive_int, is_finite_number
from ntk.registry import DEPTH_RULES
from ntk.scaling.scaled_module import ScaledModule

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEPTH_RULES",
    "DepthConfig",
    "DepthPlan",
    "at_relative_depth",
    "depth_exponents",
    "depth_optima",
    "depth_sweep",
]

_OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class DepthExponents:
    """Powers of r = L / L0: branch multiplier r^-alpha, lr r^lr, Adam eps r^eps."""

    alpha: float
    lr: float
    eps: float  # NaN for SGD (no epsilon)


def depth_exponents(alpha: float | str, optimizer: str = "adam") -> DepthExponents:
    """The depth exponents of a branch multiplier L^-alpha (module docstring, step 3).

    Adam: lr ~ L^(alpha - 1), eps ~ L^-alpha. SGD: lr ~ L^(2 alpha - 1).
    """
    alpha = _alpha(alpha)
    check_choice("optimizer", optimizer, _OPTIMIZERS)
    if optimizer == "adam":
        return DepthExponents(alpha, alpha - 1.0, -alpha)
    return DepthExponents(alpha, 2.0 * alpha - 1.0, math.nan)


def _alpha(alpha: float | str) -> float:
    if isinstance(alpha, str):
        return DEPTH_RULES[check_choice("alpha", alpha.lower(), DEPTH_RULES)]
    if not is_finite_number(alpha) or not 0.5 <= float(alpha) <= 1.0:
        raise ValueError(
            f"alpha must be a number in [0.5, 1] (stable residual streams, Yang et al. 2023) "
            f"or one of {sorted(DEPTH_RULES)}, got {alpha!r}"
        )
    return float(alpha)


@dataclass
class DepthConfig:
    """Which modules are residual branches, and the depth rule for them.

    Attributes:
        alpha: branch multiplier exponent, a number in [1/2, 1], or "depth-mup" (1/2) or
            "completep" (1).
        branches: glob patterns on module names of the residual branches (the modules whose
            output is added to the stream), e.g. ["blocks.*.attn", "blocks.*.mlp"].
        base_depth: L0, the depth at which the rule is the identity (the tuned proxy).
        depth: L; None counts the modules the patterns match. Only L / L0 matters: give both
            in blocks or both in branches.
    """

    alpha: float | str
    branches: list[str] | str
    base_depth: int = 1
    depth: int | None = None

    def validate(self) -> DepthConfig:
        """Check the fields (errors name them); return self."""
        self.alpha = _alpha(self.alpha)
        if isinstance(self.branches, str):
            self.branches = [self.branches]
        if not isinstance(self.branches, (list, tuple)) or not self.branches:
            raise TypeError("DepthConfig.branches must be a glob pattern or a non-empty list")
        for i, p in enumerate(self.branches):
            if not isinstance(p, str) or not p:
                raise TypeError(f"DepthConfig.branches[{i}] must be a non-empty str, got {p!r}")
        self.branches = list(self.branches)
        check_positive_int("DepthConfig.base_depth", self.base_depth)
        if self.depth is not None:
            check_positive_int("DepthConfig.depth", self.depth)
        return self


class DepthPlan:
    """A depth rule applied to `model`: its branches wrapped, and the lr/eps factors.

    `DepthPlan(model, config, optimizer)` finds the branches (changing nothing);
    `.apply(model)` wraps each in a `ScaledModule` with multiplier r^-alpha (r = depth /
    base_depth) in place; `groups(param_groups)` returns the
    optimizer groups with the branch parameters split off, their lr times r^lr and (Adam,
    where a group sets "eps") their eps times r^eps. Groups carry "depth_factor" (the lr factor).
    """

    def __init__(self, model: nn.Module, config: DepthConfig, optimizer: str = "adam") -> None:
        if not isinstance(config, DepthConfig):
            raise TypeError(f"config must be a DepthConfig, got {type(config).__name__}")
        self.config = config.validate()
        self.exponents = depth_exponents(config.alpha, optimizer)
        self.names = self._branch_names(model)
        self.depth = len(self.names) if config.depth is None else config.depth
        self.ratio = self.depth / config.base_depth
        self.multiplier = self.ratio**-self.exponents.alpha
        self.lr_factor = self.ratio**self.exponents.lr
        self.eps_factor = self.ratio**self.exponents.eps if optimizer == "adam" else 1.0
        self.params: set[int] = set()

    def apply(self, model: nn.Module) -> DepthPlan:
        """Wrap each branch of `model` (the one the plan was made for) in a `ScaledModule`
        with multiplier r^-alpha, in place; remember its parameters for `groups`."""
        if self.params:
            raise ValueError("this DepthPlan has been applied already")
        for name in self.names:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            branch = parent.get_submodule(child)
            self.params.update(id(p) for p in branch.parameters())
            setattr(parent, child, ScaledModule(branch, self.multiplier))
        return self

    def _branch_names(self, model: nn.Module) -> list[str]:
        names = [n for n, _ in model.named_modules() if n]
        found = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in self.config.branches)]
        unused = [p for p in self.config.branches if not fnmatch.filter(names, p)]
        if unused:
            raise ValueError(
                f"DepthConfig.branches patterns {unused} match no module; module names: "
                f"{names[:12]}{' ...' if len(names) > 12 else ''}"
            )
        for n in found:
            parents = [p for p in found if n.startswith(p + ".")]
            if parents:
                raise ValueError(f"branch {n!r} lies inside branch {parents[0]!r}")
        return found

    def groups(self, param_groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`param_groups` with each group's branch parameters in a group of their own (named
        `<name>[branch]` where the group mixes both), lr x r^lr, eps x r^eps."""
        out = []
        for group in param_groups:
            params = list(group["params"])
            inside = [p for p in params if id(p) in self.params]
            outside = [p for p in params if id(p) not in self.params]
            if outside:
                out.append({**group, "params": outside, "depth_factor": 1.0})
            if inside:
                g = {**group, "params": inside, "depth_factor": self.lr_factor}
                g["lr"] = group["lr"] * self.lr_factor
                if "eps" in group:
                    g["eps"] = group["eps"] * self.eps_factor
                if outside and "name" in group:
                    g["name"] = f"{group['name']}[branch]"
                out.append(g)
        return out

    def __repr__(self) -> str:
        e = self.exponents
        return (
            f"DepthPlan(alpha={e.alpha:g}, depth={self.depth}, base_depth="
            f"{self.config.base_depth}, branches={len(self.names)}, multiplier="
            f"{self.multiplier:.4g}, lr x{self.lr_factor:.4g}, eps x{self.eps_factor:.4g})"
        )


# ---- checks: depth coordinate check and depth transfer ------------------------------------


def at_relative_depth(
    df: pd.DataFrame,
    prefix: str = "blocks",
    positions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    axis: str = "depth",
) -> pd.DataFrame:
    """A depth coordinate check's block rows, relabelled by relative depth.

    Block i (0-based) of L sits at relative depth (i + 1) / L. For each q in `positions`
    (0 < q <= 1) the first block at or past q, i = ceil(q L) - 1, is renamed
    `f"{prefix}@{q:g}"` (so `blocks@1` is the last block at every depth): the depth limit is a
    function of l / L (Yang et al. 2023), so those are the rows to compare across depths.
    Other block rows are dropped; rows of other modules (the output) are kept as they are.
    """
    import pandas as pd

    qs = [float(q) for q in positions]
    if not qs or any(not 0.0 < q <= 1.0 for q in qs):
        raise ValueError(f"positions must be numbers in (0, 1], got {list(positions)}")
    if not {axis, "module"} <= set(getattr(df, "columns", ())):
        raise ValueError(f"df must be a coord_check(..., axis={axis!r}) table")
    index = df["module"].str.extract(rf"^{prefix}\.(\d+)$")[0]
    is_block = index.notna()
    parts = [df[~is_block]]
    blocks = df[is_block].assign(_i=index[is_block].astype(int))
    for q in qs:
        pick = blocks["_i"] == (blocks[axis] * q).map(lambda x: math.ceil(x - 1e-9)) - 1
        parts.append(blocks[pick].assign(module=f"{prefix}@{q:g}").drop(columns="_i"))
    return pd.concat(parts, ignore_index=True)


class _DepthAxis:
    """`lr_sweep`'s train_fn (width axis) calling a depth train_fn: picklable for pools."""

    def __init__(self, train_fn: Callable[..., float]) -> None:
        self.train_fn = train_fn

    def __call__(self, *, parametrization: str, width: int, lr: float, seed: int) -> float:
        return self.train_fn(parametrization=parametrization, depth=width, lr=lr, seed=seed)


def depth_sweep(
    train_fn: Callable[..., float],
    *,
    depths: Sequence[int],
    log2_lrs: Sequence[float],
    seeds: Sequence[int] = (0,),
    parametrizations: Sequence[str] = ("mup", "depth-mup", "completep"),
    **options: Any,
) -> pd.DataFrame:
    """A learning-rate sweep across depths: `ntk.scaling.sweep.lr_sweep` with depth on its
    swept axis (SQLite cache, resumable, any executor: `options` go to it).

    `train_fn(parametrization=, depth=, lr=, seed=)` returns the final loss (width fixed
    inside it; for a width x depth picture run one sweep per width, each with its own
    cache). Returns lr_sweep's table with the column `depth` instead of `width`.
    """
    from ntk.scaling.sweep import lr_sweep

    df = lr_sweep(
        _DepthAxis(train_fn),
        log2_lrs=log2_lrs,
        widths=depths,
        seeds=seeds,
        parametrizations=parametrizations,
        **options,
    )
    return df.rename(columns={"width": "depth"})


def depth_optima(df: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """`ntk.scaling.sweep.optima` per (parametrization, depth) of a `depth_sweep` table;
    `lr_drift` of it is the optimum's drift across depth (max - min log2 lr)."""
    from ntk.scaling.sweep import optima

    if "depth" not in getattr(df, "columns", ()):
        raise ValueError("df must be a depth_sweep() table (with a depth column)")
    opt = optima(df.rename(columns={"depth": "width"}), **options)
    return opt.rename(columns={"width": "depth"})
