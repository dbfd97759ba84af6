"""The structured empirical NTK: per-layer Gram matrices, never a Jacobian.

For networks whose parameters all enter through linear maps z = a W^T + b (nn.Linear, or any
`F.linear` call; a bias may also be added outside as z = ... + c b), with elementwise ops and
constants in between, ∂f_k/∂W = g_k a^T with a the layer input and g_k = ∂f_k/∂z, so

    Θ_kk' = Σ_l (A_l A_l'^T + c_l^2 [has bias]) ⊙ (G_l,k G_l',k'^T)

from one forward pass (recording every A_l, N x fan_in) and one backward pass per output
(recording every G_l, N x fan_out). The forward runs under a `TorchFunctionMode` that sees every
op: it records A_l at each `F.linear`, adds a zero "probe" to z_l whose gradient is G_l, and
refuses (StructuredUnsupported) any model where a parameter is used otherwise, or twice, or on
inputs that are not (N, fan_in). `ntk.kernels.empirical.empirical_ntk` chooses this path when
the model qualifies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

# Tensor attribute reads that do not use a parameter's values.
_HARMLESS_GETTERS = {"shape", "dtype", "device", "requires_grad", "is_leaf", "ndim", "layout"}
_HARMLESS_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "is_floating_point"}


class StructuredUnsupported(ValueError):
    """The model does not have the form the structured path needs."""


_SCALE_OPS = {"mul", "multiply", "__mul__", "__rmul__"}
_DIV_OPS = {"div", "divide", "true_divide", "__truediv__"}
_NEG_OPS = {"neg", "negative", "__neg__"}
_ADD_OPS = {"add", "__add__", "__radd__", "sub", "subtract", "__sub__", "__rsub__"}


class _LinearRecorder(TorchFunctionMode):
    """Watch how the differentiated parameters enter the forward pass.

    Accepted: the weight or bias of an `F.linear` on a batch (n, fan_in); and a bias vector b
    (fan_out,) times a constant c, added to a batch (n, fan_out) (as in `F.linear(h, W) * c_w
    + c_b * b`). At each such point the output z gets a zero "probe" added, so that
    autograd.grad(f, probe) = ∂f/∂z = G, and the layer input A is recorded. Any other use of a
    parameter is noted as a problem.
    """

    def __init__(self, params: dict[str, Tensor], n: int):
        super().__init__()
        self.names = {id(p): name for name, p in params.items()}
        self.n = n
        self.uses: Counter = Counter()
        self.problems: list[str] = []
        # (A (n, fan_in) or None, probe (n, fan_out), bias coefficient^2 (0: no bias), name)
        self.records: list[tuple[Tensor | None, Tensor, float, str]] = []
        # c * b not yet added to a batch: id -> (tensor kept alive, name of b, c)
        self.pending: dict[int, tuple[Tensor, str, float]] = {}

    def _name(self, obj: object) -> str | None:
        if not isinstance(obj, torch.Tensor):
            return None
        if id(obj) in self.pending:
            return self.pending[id(obj)][1]
        return self.names.get(id(obj))

    def _scan(self, obj: object, where: str) -> None:
        if isinstance(obj, torch.Tensor):
            name = self._name(obj)
            if name is not None:
                self.problems.append(f"parameter {name!r} is used in {where}, not as a linear map")
        elif isinstance(obj, (list, tuple)):
            for o in obj:
                self._scan(o, where)
        elif isinstance(obj, dict):
            for o in obj.values():
                self._scan(o, where)

    def _record(self, z: Tensor, a: Tensor | None, bias_coef: float, name: str) -> Tensor:
        probe = torch.zeros_like(z, requires_grad=True)
        self.records.append((a, probe, bias_coef**2, name))
        return z + probe  # a fresh tensor, so in-place ops downstream leave z alone

    def _linear(self, func, args, kwargs):
        inp = args[0] if args else kwargs.get("input")
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        w_name, b_name = self.names.get(id(weight)), self._name(bias)
        self._scan(inp, "the input of a linear map")
        if id(weight) in self.pending or id(bias) in self.pending:
            self._scan((weight, bias), "a linear map after scaling")
        z = func(*args, **kwargs)
        if w_name is None and b_name is None:
            return z  # a linear map with constant weights: just an operation
        for name in (w_name, b_name):
            if name is not None:
                self.uses[name] += 1
        if inp.ndim != 2 or inp.shape[0] != self.n:
            self.problems.append(
                f"linear map {w_name or b_name!r} gets input of shape {tuple(inp.shape)}, "
                f"expected ({self.n}, fan_in): one row per example"
            )
            return z
        # clone A: a later in-place op on the input must not change the record
        a = inp.detach().clone() if w_name is not None else None
        return self._record(z, a, 0.0 if b_name is None else 1.0, w_name or b_name)

    def _bias_op(self, name: str, args, kwargs):
        """c * b, b / c, -b, and batch + c * b; None if this is not such an op."""
        if kwargs or (len(args) != 2 and name not in _NEG_OPS):
            return None
        tensors = [a for a in args if self._name(a) is not None]
        if len(tensors) != 1 or tensors[0].ndim != 1:
            return None
        b = tensors[0]
        b_name, coef = self.pending[id(b)][1:] if id(b) in self.pending else (self._name(b), 1.0)
        other = args[1] if args[0] is b else args[0]
        if isinstance(other, torch.Tensor) and other.ndim == 0 and self._name(other) is None:
            other = other.item()  # a constant 0-dim tensor is a number
        if name in _NEG_OPS:
            return b, b_name, -coef, None
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            if name in _SCALE_OPS:
                return b, b_name, coef * other, None
            if name in _DIV_OPS and args[0] is b:
                return b, b_name, coef / other, None
            return None
        batch = (self.n, b.shape[0])
        if name in _ADD_OPS and isinstance(other, torch.Tensor) and other.shape == batch:
            return b, b_name, coef, other
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            return self._linear(func, args, kwargs)
        name = getattr(func, "__name__", "")
        if name == "__get__":
            if getattr(getattr(func, "__self__", None), "__name__", "") in _HARMLESS_GETTERS:
                return func(*args, **kwargs)
        elif name in _HARMLESS_METHODS:
            return func(*args, **kwargs)
        if name in _SCALE_OPS | _DIV_OPS | _NEG_OPS | _ADD_OPS:
            op = self._bias_op(name, args, kwargs)
            if op is not None:
                _, b_name, coef, batch = op
                out = func(*args, **kwargs)
                if batch is None:  # still a vector: remember its coefficient
                    self.pending[id(out)] = (out, b_name, coef)
                    return out
                self.uses[b_name] += 1
                return self._record(out, None, coef, b_name)
        self._scan((args, kwargs), f"{name or func}")
        return func(*args, **kwargs)


def _record_forward(
    model: nn.Module, params: dict[str, Tensor], x: Tensor
) -> tuple[Tensor, _LinearRecorder]:
    """Forward pass under the recorder; raise StructuredUnsupported if the model is unfit."""
    rec = _LinearRecorder(params, len(x))
    with rec:
        out = model(x)
    problems = list(rec.problems)
    for name in params:
        if rec.uses[name] != 1:
            problems.append(
                f"parameter {name!r} enters {rec.uses[name]} linear maps per forward (need 1)"
            )
    if problems:
        raise StructuredUnsupported(
            "method='structured' needs every parameter to be the weight or bias of exactly one "
            "linear map (nn.Linear / F.linear) per forward, on inputs (N, fan_in), with only "
            "elementwise ops and constants between them: " + "; ".join(dict.fromkeys(problems))
        )
    return out, rec


def structured_layers(
    model: nn.Module, params: dict[str, Tensor], x: Tensor
) -> list[tuple[int, int]]:
    """Check the model qualifies on a probe batch; return (fan_in, fan_out) per linear map."""
    with torch.enable_grad():
        _, rec = _record_forward(model, params, x)
    return [(0 if a is None else a.shape[1], probe.shape[1]) for a, probe, _, _ in rec.records]


def structured_features(
    model: nn.Module, params: dict[str, Tensor], x: Tensor, n_out: int
) -> list[tuple[Tensor | None, Tensor, float]]:
    """Per linear map: A (n, fan_in) or None, G (n, K, fan_out), bias coefficient^2."""
    with torch.enable_grad():  # also inside a caller's torch.no_grad()
        out, rec = _record_forward(model, params, x)
        # Σ_n f_k(x_n): its gradient wrt z_l(x_n) is row n of G_l,k (examples are independent)
        f_sums = list(out.reshape(len(x), -1).sum(0))  # K scalars
    probes = [probe for _, probe, _, _ in rec.records]
    grads: list[list[Tensor]] = [[] for _ in probes]
    for k, f_k in enumerate(f_sums):
        g = [None] * len(probes)
        if f_k.requires_grad:  # else f does not depend on any parameter
            g = torch.autograd.grad(f_k, probes, retain_graph=k < n_out - 1, allow_unused=True)
        for lst, gl, probe in zip(grads, g, probes, strict=True):
            lst.append(torch.zeros_like(probe) if gl is None else gl)
    return [
        (a, torch.stack(g, dim=1), bias_sq)
        for (a, _, bias_sq, _), g in zip(rec.records, grads, strict=True)
    ]


def structured_pair(trace: bool, n_out: int) -> Callable:
    def pair(f1: list, f2: list) -> Tensor:
        total = 0.0
        for (a1, g1, bias), (a2, g2, _) in zip(f1, f2, strict=True):
            n1, n2 = g1.shape[0], g2.shape[0]
            if trace:  # Σ_k G_k G'_k^T
                gg = g1.reshape(n1, -1) @ g2.reshape(n2, -1).T
            else:  # G_k G'_k'^T -> (n1, n2, K, K)
                gg = g1.reshape(n1 * n_out, -1) @ g2.reshape(n2 * n_out, -1).T
                gg = gg.reshape(n1, n_out, n2, n_out).permute(0, 2, 1, 3)
            if a1 is None:  # only a bias c * b: <c g, c g'> = c^2 g.g'
                total = total + bias * gg
                continue
            aa = a1 @ a2.T
            if bias:
                aa = aa + bias
            total = total + (aa * gg if trace else aa[:, :, None, None] * gg)
        return total / n_out if trace else total

    return pair
