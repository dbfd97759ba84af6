"""Alignment exponents of each layer, measured on a probe batch: the inputs of `ntk.scaling.lp`.

Everett et al., "Scaling Exponents Across Parameterizations and Optimizers" (ICML 2024,
arXiv:2407.05872), Section 3.2. A layer y = W x with fan-in n, trained from (W_0, x_0) to
(W, x) = (W_0 + dW, x_0 + dx) on a fixed probe batch, computes

    y = W_0 x_0 + dW x_0 + W_0 dx + dW dx.

How large each product is depends on how aligned its two factors are. For a matrix A with m
rows and inputs X (r rows of length n), the alignment ratio

    rho(A, X) = rms(X A^T) / (rms(A) rms(X)) = n ||X A^T||_F / (||A||_F ||X||_F)

(rms over all entries) lies in [0, n] (|A x| <= ||A||_F |x|): ~ sqrt(n) when A and X are
independent (sum of n random terms), n when every row of A is parallel to the inputs (a
coherent sum of n terms). The alignment exponents, in the units of the learning-rate
exponents c (powers of n), are

    alpha = log rho(dW, X_0) / log n      dW x_0: the update against the input
    omega = log rho(W_0, dX) / log n      W_0 dx: the initial weights against the input change
    u     = log rho(dW, dX)  / log n      dW dx:  the update against the input change

so full alignment is (alpha, omega, u) = (1, 1/2, 1) and none (1/2, 1/2, 1/2), as in
`ntk.scaling.abc_rules`. The ratio itself is not an exponent: a solver fed rho (~ sqrt(n)) or a
cosine (rho / n) instead of log rho / log n answers a different question without
complaint, so ratios are `AlignmentRatios` and exponents `Alignment`, and the LP refuses
values above 1.

One width or several. The theory's exponent is how rho grows with n: rho = C n^alpha with a
constant C the theory does not fix. A single width estimates alpha by log rho / log n, off by
log C / log n, and C need not be near 1: an update summed from B independent examples gives
C ~ 1 / sqrt(B) for its alignment with any one of them (B = 64 at n = 1024: alpha reads 0.70
for a true exponent of 1). The error shrinks only as 1 / log n. `exponents_from_widths` fits
log rho against log n across two or more widths of the same run, which cancels C; what is
left is the change of C with n (finite-width corrections) and seed-to-seed noise.

Cost of one measurement: a forward pass of the probe batch (inputs captured by forward
pre-hooks that exist only during it), and per layer three products of the probe with an
(m, n) matrix. Memory: a copy of every measured weight at the start and the layer inputs of
the probe batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor, nn

from ntk._checks import check_callable, check_positive_int
from ntk.fitting import loglog_fit
from ntk.scaling.abc_rules import Alignment

if TYPE_CHECKING:
    from ntk.scaling.parametrization import LayerSpec, Parametrization

__all__ = [
    "AlignmentMeter",
    "AlignmentRatios",
    "LayerAlignment",
    "alignment_ratio",
    "exponent",
    "exponents_from_widths",
]


class AlignmentRatios(NamedTuple):
    """Alignment ratios rho of dW x_0 (alpha), W_0 dx (omega), dW dx (u): not exponents.

    omega is None for a zero-initialized weight (muP's zero query or readout): W_0 dx = 0, so
    its constraint a + b + r_prev - omega >= 0 does not exist; `exponents` then reads it as
    1/2, for which that constraint (a + b = 1/2 for hidden layers) holds whenever r_prev >= 0.
    """

    alpha: float
    omega: float | None
    u: float

    def exponents(self, n: int) -> Alignment:
        """The single-width estimate log rho / log n of each exponent (see the module doc)."""
        omega = 0.5 if self.omega is None else exponent(self.omega, n)
        return Alignment(exponent(self.alpha, n), omega, exponent(self.u, n))


def alignment_ratio(a: Tensor, x: Tensor) -> float:
    """rho(A, X) = n ||X A^T||_F / (||A||_F ||X||_F) for A (m, n) and X (r, n).

    Between 0 and n; raises ValueError when A or X is zero (no alignment to speak of).
    """
    if a.ndim != 2 or x.ndim != 2 or a.shape[1] != x.shape[1]:
        raise ValueError(
            f"alignment_ratio needs A (m, n) and X (r, n), got {tuple(a.shape)}, {tuple(x.shape)}"
        )
    na, nx = torch.linalg.vector_norm(a), torch.linalg.vector_norm(x)
    if na == 0 or nx == 0:
        raise ValueError("alignment_ratio is undefined for a zero matrix or zero inputs")
    return float(a.shape[1] * torch.linalg.vector_norm(x @ a.T) / (na * nx))


def exponent(ratio: float, n: int) -> float:
    """log(ratio) / log(n): an alignment ratio at fan-in n as an exponent of n."""
    check_positive_int("n", n, minimum=2)
    if not (isinstance(ratio, (int, float)) and ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"ratio must be a finite number > 0, got {ratio!r}")
    return math.log(ratio) / math.log(n)


def exponents_from_widths(ratios: Mapping[int, AlignmentRatios]) -> tuple[Alignment, Alignment]:
    """(exponents, standard errors) from the ratios of one layer at two or more fan-ins n.

    Each exponent is the least-squares slope of log rho against log n (`ntk.fitting`),
    which cancels the constant C of rho = C n^alpha; the standard error is NaN for two widths.
    """
    if not isinstance(ratios, Mapping) or len(ratios) < 2:
        raise ValueError(
            "ratios must map at least two fan-ins n to AlignmentRatios, got "
            f"{type(ratios).__name__} of length {len(ratios) if hasattr(ratios, '__len__') else '?'}"
        )
    ns = sorted(ratios)
    for n in ns:
        check_positive_int("ratios key (fan-in n)", n, minimum=2)
        if not isinstance(ratios[n], AlignmentRatios):
            raise TypeError(f"ratios[{n}] must be AlignmentRatios, got {type(ratios[n]).__name__}")
    fits = [
        loglog_fit(ns, [ratios[n][k] for n in ns])
        if all(ratios[n][k] is not None for n in ns)
        else (0.5, 0.0, math.nan)  # omega of a zero-initialized weight: see AlignmentRatios
        for k in range(3)
    ]
    return Alignment(*(f[0] for f in fits)), Alignment(*(f[2] for f in fits))


@dataclass(frozen=True)
class LayerAlignment:
    """One layer's measurement: ratios and their single-width exponents at fan-in n."""

    name: str
    role: str
    n: int
    ratios: AlignmentRatios

    @property
    def exponents(self) -> Alignment:
        return self.ratios.exponents(self.n)


def _measurable(spec: LayerSpec) -> bool:
    """y = W x over the input's last dimension: Linear, HF Conv1D (not convs, RNNs, MHA)."""
    g = spec.geometry
    return (
        spec.role != "embedding"
        and g is not None
        and g.scalable
        and not (g.inner or g.lookup or g.blocks)
        and isinstance(spec.module, nn.Module)
        and (isinstance(spec.module, nn.Linear) or g.transposed)
    )


class AlignmentMeter:
    """Alignment of every measurable hidden and readout weight of a `Parametrization`.

    At construction it runs `forward(model, probe)` (default `model(probe)`, or
    `model(*probe)` for a tuple) and keeps each layer's input on the probe and a copy of its
    weight; `measure()` runs the probe again and returns, per layer, the ratios of dW x_0,
    W_0 dx and dW dx (module docstring). The probe runs in eval mode (no dropout), the
    model's mode restored after. Layers whose input is not the matrix's right operand (convs,
    recurrent and attention modules) are left out: `skipped` names them.
    """

    def __init__(
        self,
        param: Parametrization,
        probe: Tensor | tuple[Any, ...],
        forward: Callable[[nn.Module, Any], Any] | None = None,
    ) -> None:
        self.model = param.model
        self.probe = probe
        self.forward = (
            _default_forward
            if forward is None
            else check_callable("forward", forward, "(model, probe)")
        )
        specs = [s for s in param.layers if s.role != "embedding"]
        self.layers = [s for s in specs if _measurable(s)]
        self.skipped = [s.name for s in specs if not _measurable(s)]
        if not self.layers:
            raise ValueError(
                "no measurable hidden or readout layer (alignment is measured on layers that "
                f"compute y = W x over their input's last dimension); not measurable: {self.skipped}"
            )
        self.w0 = [self._matrix(s).detach().clone() for s in self.layers]
        self.x0 = self._inputs()

    @staticmethod
    def _matrix(spec: LayerSpec) -> Tensor:
        return spec.geometry.matrix(spec.weight)

    @torch.no_grad()
    def _inputs(self) -> list[Tensor]:
        """Each layer's input on the probe batch, as (rows, fan-in)."""
        captured: dict[int, Tensor] = {}

        def hook(i: int) -> Callable:
            def capture(_module: nn.Module, args: tuple) -> None:
                captured[i] = args[0].detach()

            return capture

        handles = [s.module.register_forward_pre_hook(hook(i)) for i, s in enumerate(self.layers)]
        training = self.model.training
        try:
            self.model.eval()
            self.forward(self.model, self.probe)
        finally:
            self.model.train(training)
            for h in handles:
                h.remove()
        out = []
        for i, s in enumerate(self.layers):
            x = captured.get(i)
            n = s.geometry.fan_in
            if x is None or not isinstance(x, Tensor) or x.shape[-1] != n:
                got = "no call" if x is None else f"input of shape {tuple(getattr(x, 'shape', ()))}"
                raise ValueError(
                    f"layer {s.name!r}: the probe forward gave {got}; alignment needs one call "
                    f"with an input whose last dimension is the fan-in {n}"
                )
            out.append(x.reshape(-1, n).clone())
        return out

    @torch.no_grad()
    def measure(self) -> list[LayerAlignment | None]:
        """Ratios per measured layer (in `layers` order); None where dW or dx is still zero."""
        xs = self._inputs()
        out: list[LayerAlignment | None] = []
        for s, w0, x0, x in zip(self.layers, self.w0, self.x0, xs, strict=True):
            dw, dx = self._matrix(s) - w0, x - x0
            if torch.linalg.vector_norm(dw) == 0 or torch.linalg.vector_norm(dx) == 0:
                out.append(None)
                continue
            zero_init = torch.linalg.vector_norm(w0) == 0
            omega = None if zero_init else alignment_ratio(w0, dx)
            ratios = AlignmentRatios(alignment_ratio(dw, x0), omega, alignment_ratio(dw, dx))
            out.append(LayerAlignment(s.name, s.role, s.geometry.fan_in, ratios))
        return out

    def state_dict(self) -> dict[str, Any]:
        """The reference point (initial weights and probe inputs), for checkpoints."""
        return {"names": [s.name for s in self.layers], "w0": self.w0, "x0": self.x0}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        names = [s.name for s in self.layers]
        if list(state.get("names", [])) != names:
            raise ValueError(
                f"state holds alignment references for layers {state.get('names')}, this "
                f"meter measures {names}"
            )
        shapes = [tuple(w.shape) for w in self.w0] + [tuple(x.shape) for x in self.x0]
        got = [tuple(w.shape) for w in state["w0"]] + [tuple(x.shape) for x in state["x0"]]
        if shapes != got:
            raise ValueError(f"state's weight/input shapes {got} differ from the meter's {shapes}")
        self.w0 = [w.detach().clone() for w in state["w0"]]
        self.x0 = [x.detach().clone() for x in state["x0"]]


def _default_forward(model: nn.Module, probe: Any) -> Any:
    return model(*probe) if isinstance(probe, tuple) else model(probe)
