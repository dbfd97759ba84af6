"""Per-layer learning rates from measured alignment, on top of any learning-rate scheduler.

The static tables of `ntk.scaling.abc_rules` assume full (or no) alignment; training sits in
between and moves (Everett et al. 2024, arXiv:2407.05872, Section 4). `DynamicLR` closes the
loop: every `every` optimizer steps it measures each layer's alignment exponents on a probe
batch (`ntk.scaling.alignment`), solves the linear program of `ntk.scaling.lp` for the
largest stable exponents c_l under them, and from then on each layer's weight is updated with

    lr_l = lr * (n / n0)^(-c_l) * s(t),     s(t): whatever the scheduler applied.

The scheduler owns each group's "lr": it keeps setting it to lr (n / n0)^(-c_static)
s(t). A step pre-hook on the optimizer multiplies it by (n / n0)^(c_static - c_l) just for the
update, and a step post-hook puts the scheduler's value back, so chainable schedulers (which
read the current lr), closed-form ones (which read the initial lr), warmups and checkpoints
of the optimizer and scheduler all see exactly what they would without this class.

Where the program cannot be solved the exponents stay at their last values and the error is
recorded (`on_infeasible="keep"`) or raised (default). Layers that cannot be measured
(convolutions, recurrent and attention modules) and measurements before the first update use
the config's alignment assumption. A weight shared by several layers (tied embeddings) gets
the largest of their c's: the learning rate stable for all of them.

The exponents are single-width estimates log rho / log n, biased by log C / log n
(`ntk.scaling.alignment`); at n = n0 they change nothing, since (n / n0)^(-c) = 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ntk._checks import check_choice, check_positive_int
from ntk.scaling.abc_rules import ALIGNMENT_EXPONENTS, Alignment
from ntk.scaling.alignment import AlignmentMeter, LayerAlignment
from ntk.scaling.parametrization import Parametrization

__all__ = ["DynamicLR"]

ON_INFEASIBLE = ("raise", "keep")


class DynamicLR:
    """Measure alignment every `every` steps, solve for c_l, apply it inside optimizer.step().

    A controller beside the static rule: `Parametrization` says what each layer's init,
    multiplier and base learning rate are; `DynamicLR(param, optimizer, probe)` changes the
    learning rates while training. Call `step()` once per training step (anywhere between two
    optimizer steps); checkpoint it with `state_dict()` / `load_state_dict()`.

        >>> param = Parametrization(model, ParametrizationConfig("mup", base_width=64))
        >>> opt = torch.optim.Adam(param.param_groups)
        >>> dynamic = DynamicLR(param, opt, x[:64], every=10)
        >>> for x, y in batches:
        ...     loss(model(x), y).backward(); dynamic.step(); opt.step(); opt.zero_grad()

    Args:
        param: the `Parametrization` whose `param_groups` built `optimizer`.
        optimizer: a torch optimizer holding those groups (weights matched by identity).
        probe: a fixed input batch (tensor, or tuple of forward arguments) for the
            measurements; keep it small (its cost is a forward pass and three products per
            layer).
        every: optimizer steps between measurements (the first comes after the first step).
        forward: `forward(model, probe)` if `model(probe)` is not how the model is called.
        on_infeasible: "raise" an `InfeasibleExponentsError`, or "keep" the last exponents
            (the error is recorded in `history`).
    """

    def __init__(
        self,
        param: Parametrization,
        optimizer: torch.optim.Optimizer,
        probe: Tensor | tuple[Any, ...],
        every: int = 10,
        *,
        forward: Callable[[nn.Module, Any], Any] | None = None,
        on_infeasible: str = "raise",
    ) -> None:
        if not isinstance(param, Parametrization):
            raise TypeError(f"param must be an ntk.Parametrization, got {type(param).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
        if param.config.optimizer == "muon":
            raise ValueError(
                "DynamicLR solves Adam's and SGD's alignment recursion; with "
                "config.optimizer='muon' the hidden updates are orthogonalized (alignment-free, "
                "ntk.scaling.muon) and their c is fixed: DynamicLR does not compose with Muon"
            )
        self.param, self.optimizer = param, optimizer
        self.every = check_positive_int("every", every)
        self.on_infeasible = check_choice("on_infeasible", on_infeasible, ON_INFEASIBLE)
        self.meter = AlignmentMeter(param, probe, forward)
        self._groups = self._match_groups()
        self.c_static = [s.c for s in param.layers]
        self.c = list(self.c_static)
        self.steps = 0  # optimizer steps taken (counted by the post-hook)
        self.measured_at: int | None = None
        self.history: list[dict[str, Any]] = []
        self.last: list[LayerAlignment | None] = []  # the latest measurement, meter.layers order
        self._saved: list[tuple[int, float]] = []
        self._hooks = [
            optimizer.register_step_pre_hook(self._apply),
            optimizer.register_step_post_hook(self._restore),
        ]

    # ---- optimizer groups -------------------------------------------------------------------
    def _match_groups(self) -> list[int]:
        """The index of each layer's weight group in `optimizer.param_groups` (indices, not
        the dicts: `optimizer.load_state_dict` replaces the dicts and keeps the order)."""
        by_param = {
            id(p): k for k, g in enumerate(self.optimizer.param_groups) for p in g["params"]
        }
        groups = []
        for spec in self.param.layers:
            k = by_param.get(id(spec.weight))
            if k is None:
                raise ValueError(
                    f"layer {spec.name!r}: its weight is in none of the optimizer's param "
                    "groups; build the optimizer from param.param_groups"
                )
            if isinstance(self.optimizer.param_groups[k]["lr"], Tensor):
                raise TypeError(
                    f"layer {spec.name!r}: tensor learning rates are not supported; use floats"
                )
            groups.append(k)
        return groups

    def factors(self) -> dict[int, float]:
        """Per optimizer group index: (n / n0)^(c_static - c), the largest c where shared."""
        worst: dict[int, tuple[float, float, float]] = {}
        for spec, k, c0, c in zip(
            self.param.layers, self._groups, self.c_static, self.c, strict=True
        ):
            if k not in worst or c > worst[k][1]:
                worst[k] = (spec.ratio, c, c0)
        return {k: ratio ** (c0 - c) for k, (ratio, c, c0) in worst.items()}

    def _apply(self, optimizer: torch.optim.Optimizer, *args: Any) -> None:
        self._saved = []
        for k, f in self.factors().items():
            group = optimizer.param_groups[k]
            if f != 1.0:
                self._saved.append((k, group["lr"]))
                group["lr"] = group["lr"] * f

    def _restore(self, optimizer: torch.optim.Optimizer, *args: Any) -> None:
        for k, lr in self._saved:
            optimizer.param_groups[k]["lr"] = lr  # exactly the scheduler's value, not lr * f / f
        self._saved = []
        self.steps += 1

    def remove(self) -> None:
        """Detach from the optimizer: later steps use the scheduler's learning rates alone."""
        for h in self._hooks:
            h.remove()

    # ---- measurement and solve --------------------------------------------------------------
    def step(self) -> None:
        """Measure and re-solve if `every` steps have passed since the last measurement."""
        due = self.measured_at is None or self.steps - self.measured_at >= self.every
        if self.steps > 0 and due:
            self.measured_at = self.steps
            self.solve(self.measure())

    def measure(self) -> list[Alignment | None]:
        """Alignment exponents per layer (single-width estimates): None for embeddings, the
        config's assumption where a layer is not measurable or has not moved yet."""
        names = [s.name for s in self.meter.layers]
        self.last = self.meter.measure()
        measured = {n: m for n, m in zip(names, self.last, strict=True) if m}
        assumed = ALIGNMENT_EXPONENTS[self.param.config.alignment]
        return [
            None
            if s.role == "embedding"
            else (measured[s.name].exponents if s.name in measured else assumed)
            for s in self.param.layers
        ]

    def solve(self, alignments: list[Alignment | None]) -> list[float]:
        """Solve the program for these exponents (from `measure`, or any estimate, e.g.
        `alignment.exponents_from_widths`), use its c from the next update on, return it."""
        # here: scipy.optimize takes seconds to import, and only a solve needs it
        from ntk.scaling.lp import InfeasibleExponentsError, solve_lr_exponents

        layers = self.param.layers
        # plain floats in the history: checkpoints load with torch.load(weights_only=True)
        record: dict[str, Any] = {
            "step": self.steps,
            "alignment": [None if x is None else [float(v) for v in x] for x in alignments],
        }
        try:
            solution = solve_lr_exponents(
                [s.a for s in layers],
                [s.b for s in layers],
                [s.role for s in layers],
                alignments,
                self.param.config.optimizer,
                names=[s.name for s in layers],
            )
        except InfeasibleExponentsError as err:
            if self.on_infeasible == "raise":
                raise
            record["error"] = str(err)
        else:
            self.c = solution.c
        record["c"] = list(self.c)
        self.history.append(record)
        return list(self.c)

    def lrs(self) -> dict[str, float]:
        """The learning rate each layer's weight gets at the next update, by layer name."""
        factors, groups = self.factors(), self.optimizer.param_groups
        return {
            s.name: groups[k]["lr"] * factors[k]
            for s, k in zip(self.param.layers, self._groups, strict=True)
        }

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: counters, exponents, history, alignment references."""
        return {
            "steps": self.steps,
            "measured_at": self.measured_at,
            "every": self.every,
            "c": list(self.c),
            "names": [s.name for s in self.param.layers],
            "history": [dict(h) for h in self.history],
            "meter": self.meter.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        names = [s.name for s in self.param.layers]
        if list(state.get("names", [])) != names:
            raise ValueError(
                f"state is for layers {state.get('names')}, this parametrization has {names}"
            )
        self.meter.load_state_dict(state["meter"])
        self.steps, self.measured_at = int(state["steps"]), state["measured_at"]
        self.every = check_positive_int("state['every']", state["every"])
        self.c = [float(x) for x in state["c"]]
        self.history = [dict(h) for h in state["history"]]
