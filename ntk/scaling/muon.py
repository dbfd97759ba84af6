"""Muon on the hidden matrices, AdamW on the rest: the update-scale rules and one optimizer.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers", kellerjordan.github.io/posts/
muon) replaces the momentum M of a weight matrix by its orthogonalization O = U V^T (M = U S V^T,
computed by a Newton-Schulz iteration): every singular value of O is ~1, so ||O||_2 = 1. It is
`torch.optim.Muon`; this module only chooses the step size of each matrix and builds it.

The spectral condition (Yang, Simon & Bernstein 2023, "A Spectral Condition for Feature
Learning", arXiv:2310.17813). For h = W x with x of size sqrt(fan_in) (entries O(1)) to have
entries O(1), and its change dW x entries O(1) too, the spectral norms must be

    ||W||_2 ~ sqrt(fan_out / fan_in),    ||dW||_2 ~ sqrt(fan_out / fan_in).

An orthogonalized update meets the second by construction: dW = eta s O with ||O||_2 = 1 has
||dW||_2 = eta s, and since O maps every input direction isometrically (|O x| = |x| for x in
its row space, which holds for the gradient's own inputs), |dW x| = eta s |x|: no alignment
argument is needed, unlike Adam, whose entrywise update's effect on x depends on how aligned it
is with x. So the step scale s must be sqrt(fan_out / fan_in), with eta width-independent.

The three rules of the scale s(fan_out, fan_in) (`MUON_RULES`):

    rule       s                                  source                          n exponent
    spectral   sqrt(fan_out / fan_in)             Yang, Simon & Bernstein 2023    0
    keller     sqrt(max(1, fan_out / fan_in))     Jordan et al. 2024 (torch:      0
                                                  adjust_lr_fn="original")
    moonshot   0.2 sqrt(max(fan_in, fan_out))     Liu et al. 2025, "Muon is       1/2
                                                  Scalable", arXiv:2502.16982
                                                  (torch: "match_rms_adamw")

For a hidden matrix both dimensions grow with the width n, so fan_out / fan_in is fixed:
spectral and keller differ by a width-independent factor (1/sqrt(k) on a k-times-contracting
matrix such as the MLP's down projection), both meet the spectral condition at one eta for
every width; moonshot's s grows like n^(1/2) (it matches AdamW's update RMS, 0.2, whatever the
shape), so with one eta its hidden updates grow like n^(1/2) and eta must fall as n^-(1/2).
`rule_exponent(rule)` is that extra exponent: the engine's learning-rate exponent c of a hidden
matrix on Muon is c = -a + rule_exponent (`ntk.scaling.abc_rules`: -a keeps n^-a eta s at the
spectral scale; 0 under muP and SP, whose hidden a = 0).

Each Muon group's "lr" is eta (n / n0)^-c times a width-independent layout factor, and its
"adjust_lr_fn" is the torch name that applies s: torch reads the stored shape (A, B) as
(fan_out, fan_in), right for nn.Linear; for a weight stored transposed (Hugging Face GPT-2's
Conv1D) and for "spectral" (torch has "original" = keller only) the factor s / s_torch(A, B)
makes the product the rule's s exactly.

Only 2-D matrices that act as one matrix go on Muon: 3-D+ weights (conv kernels) and stacked
blocks (nn.MultiheadAttention's in_proj, an LSTM's gates) are refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import nn

from ntk._checks import check_choice, check_nonnegative, check_positive
from ntk.scaling.geometry import WeightGeometry

__all__ = [
    "MUON_RULES",
    "MuonAdamW",
    "MuonUpdate",
    "build_optimizer",
    "muon_update",
    "rule_exponent",
    "rule_scale",
]

MUON_RULES = ("spectral", "keller", "moonshot")
# the width exponent of s / sqrt(fan_out / fan_in) when both dimensions grow with n
_RULE_EXPONENTS = {"spectral": 0.0, "keller": 0.0, "moonshot": 0.5}
_TORCH_ADJUST = {"spectral": "original", "keller": "original", "moonshot": "match_rms_adamw"}


def rule_scale(rule: str, fan_out: int, fan_in: int) -> float:
    """s(fan_out, fan_in): the factor between Muon's learning rate and ||dW||_2."""
    check_choice("muon_rule", rule, MUON_RULES)
    if rule == "spectral":
        return math.sqrt(fan_out / fan_in)
    if rule == "keller":
        return math.sqrt(max(1.0, fan_out / fan_in))
    return 0.2 * math.sqrt(max(fan_in, fan_out))


def rule_exponent(rule: str) -> float:
    """Width exponent of s / sqrt(fan_out / fan_in) for a hidden matrix (module docstring)."""
    return _RULE_EXPONENTS[check_choice("muon_rule", rule, MUON_RULES)]


def _torch_scale(adjust_lr_fn: str, shape: torch.Size) -> float:
    """What torch.optim.Muon multiplies the lr by (torch.optim._muon._adjust_lr, 2.13)."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "original":
        return math.sqrt(max(1.0, rows / cols))
    return 0.2 * math.sqrt(max(rows, cols))


class MuonUpdate(NamedTuple):
    """How one hidden matrix is trained by Muon: lr exponent, layout factor, torch's adjust."""

    rule: str
    c: float  # the lr exponent, rule_exponent included
    factor: float  # s(fan_out, fan_in) / torch's scale of the stored shape (width-independent)
    adjust_lr_fn: str


def muon_update(
    name: str, module: nn.Module, geometry: WeightGeometry, c: float, rule: str
) -> MuonUpdate:
    """The Muon plan of one hidden weight (`geometry` of `module`, listed as `name`).

    `c` is the group's lr exponent (the engine's -a + rule_exponent(rule), or 0 with lr_rule
    "global": the rule as its authors run it). Refuses, by name, weights that are not one
    2-D matrix: conv kernels (3-D+) and stacked blocks (q, k, v in one in_proj; LSTM gates).
    """
    weight = module.get_parameter(geometry.param)
    kind = type(module).__name__
    if weight.ndim != 2:
        raise ValueError(
            f"layer {name!r} ({kind}): its weight is {weight.ndim}-D {tuple(weight.shape)}, "
            "and torch.optim.Muon orthogonalizes 2-D matrices; use a Linear (a flattened "
            "kernel), or train this model with config.optimizer='adam'"
        )
    if geometry.blocks:
        raise ValueError(
            f"layer {name!r} ({kind}): its weight stacks the blocks {geometry.blocks}, which "
            "Muon would orthogonalize as one matrix; split them into separate Linear layers, "
            "or train this model with config.optimizer='adam'"
        )
    fn = _TORCH_ADJUST[check_choice("muon_rule", rule, MUON_RULES)]
    factor = rule_scale(rule, geometry.fan_out, geometry.fan_in) / _torch_scale(fn, weight.shape)
    return MuonUpdate(rule, c, factor, fn)


class MuonAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on the groups marked optimizer="muon", torch.optim.AdamW on the rest.

    One optimizer object for a training loop, an LR scheduler (it sees every group in
    `param_groups`, Muon's first) and a checkpoint: `state_dict()` holds both optimizers'
    states ({"muon": ..., "adamw": ...}) and `load_state_dict` restores both, so a resumed run
    continues bitwise. Step hooks registered on it run around both updates.
    """

    def __init__(
        self,
        groups: Iterable[dict[str, Any]],
        *,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
    ) -> None:
        groups = list(groups)
        muon = [g for g in groups if g.get("optimizer") == "muon"]
        adamw = [g for g in groups if g.get("optimizer") != "muon"]
        if not muon or not adamw:
            raise ValueError(
                "MuonAdamW needs groups for both optimizers (some marked optimizer='muon', "
                f"some not), got {len(muon)} Muon and {len(adamw)} AdamW groups; build the "
                "optimizer with ntk.scaling.muon.build_optimizer"
            )
        # weight_decay: each group states its own (ntk.lm.parametrize.optimizer_groups)
        self.muon = torch.optim.Muon(
            muon, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, weight_decay=0.0
        )
        self.adamw = torch.optim.AdamW(adamw, betas=betas, eps=eps, weight_decay=0.0)
        super().__init__(self._groups(), {})

    def _groups(self) -> list[dict[str, Any]]:
        return self.muon.param_groups + self.adamw.param_groups  # the same dicts

    @property
    def state(self) -> dict:
        """Both optimizers' per-parameter states (read-only view)."""
        return {**self.muon.state, **self.adamw.state}

    @state.setter
    def state(self, value: object) -> None:  # torch.optim.Optimizer.__init__ assigns it
        pass

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or set(state_dict) != {"muon", "adamw"}:
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict)
            raise ValueError(
                "MuonAdamW.load_state_dict needs the {'muon', 'adamw'} state of a MuonAdamW, "
                f"got keys {keys} (a checkpoint of another optimizer?)"
            )
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self._groups()  # load_state_dict replaced the group dicts


def build_optimizer(
    groups: Iterable[dict[str, Any]],
    *,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    momentum: float = 0.95,
    nesterov: bool = True,
) -> torch.optim.Optimizer:
    """The optimizer of a Parametrization's groups: `MuonAdamW` when some group is marked
    optimizer="muon" (config.optimizer="muon"), else `torch.optim.AdamW` (as before).

    Weight decay is per group (`ntk.lm.parametrize.optimizer_groups`: lr_g wd_g = lr wd, for
    Muon's decoupled decay p <- p (1 - lr_g wd_g) as for AdamW's); groups without the key get
    0 under MuonAdamW and AdamW's default otherwise.
    """
    groups = list(groups)
    check_positive("eps", eps)
    check_nonnegative("momentum", momentum)
    if any(g.get("optimizer") == "muon" for g in groups):
        return MuonAdamW(groups, betas=betas, eps=eps, momentum=momentum, nesterov=nesterov)
    return torch.optim.AdamW(groups, betas=betas, eps=eps)
