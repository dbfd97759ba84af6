"""Is f(X)_n a function of x_n alone? The assumption behind every per-example kernel.

The empirical NTK Θ(x, x') = <∂f(x)/∂θ, ∂f(x')/∂θ> is defined for a network that maps each
example on its own. A model that mixes the examples of a batch (batch statistics, a
sequence-first layer fed a batch-first tensor, `h - h.mean(0)`) or that is random (dropout in
training mode) has no such kernel: per-example methods and batched ones then disagree, and
neither is "the" NTK. Two checks, both before any Jacobian is formed:

* by module type (free): BatchNorm normalizing with batch statistics, dropout in training mode;
* by behaviour (a few forward passes on at most `PROBE_ROWS` examples): f on the batch must
  equal f on each row alone, and two calls on the same batch must agree. On a mismatch the
  forward passes are repeated with hooks on every module to name where mixing starts: the
  innermost modules whose inputs agree row by row but whose outputs do not.

Rows are compared up to sqrt(machine epsilon) times the output's scale: a batched matmul and
its single-row version may round differently, by far less.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

PROBE_ROWS = 4  # examples compared batched vs one at a time


def check_module_types(model: nn.Module) -> None:
    """Refuse modules that mix examples (batch statistics) or make f random (dropout)."""
    for name, m in model.named_modules():
        where = f"model.{name}" if name else "model"
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.training or m.running_mean is None:
                raise ValueError(
                    f"{where} ({type(m).__name__}) normalizes with batch statistics, so "
                    "examples are not processed independently; call model.eval() (with "
                    "track_running_stats=True) before computing the empirical NTK"
                )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise ValueError(
                f"{where} is dropout in training mode (f is random); call model.eval()"
            )


@torch.no_grad()
def check_rows_independent(model: nn.Module, x: Tensor) -> None:
    """Raise ValueError if f(x[:m]) differs from f run on each of those rows alone (m <=
    `PROBE_ROWS`), naming the modules where the mixing starts, or if f is random."""
    xb = x[:PROBE_ROWS]
    if len(xb) < 2:
        return
    batched, again = model(xb), model(xb)
    if not isinstance(batched, Tensor) or not torch.isfinite(batched).all():
        return  # the caller reports non-tensor and non-finite outputs
    tol = _tolerance(batched)
    if not _close(batched, again, tol):
        raise ValueError(
            "model gives different outputs on two calls with the same batch (dropout, noise or "
            "sampling in its forward?); the empirical NTK needs a deterministic f: call "
            "model.eval() or remove the randomness"
        )
    singles = [model(xb[i : i + 1]) for i in range(len(xb))]
    gap = _row_gap(batched, singles)
    if gap is not None and gap <= tol:
        return
    where = _mixing_modules(model, xb)
    found = (
        "mixing starts in " + "; ".join(where)
        if where
        else "no single module is to blame (the mixing happens between modules)"
    )
    measured = "rows have other shapes" if gap is None else f"max |difference| {gap:.3g}"
    raise ValueError(
        f"model's output for one example depends on the other examples in the batch: f on "
        f"{len(xb)} rows differs from f on each row alone ({measured}); {found}. The "
        "empirical NTK needs examples processed independently, batch first (N, ...)"
    )


def _tolerance(out: Tensor) -> float:
    eps = torch.finfo(out.dtype).eps if out.is_floating_point() else 0.0
    return eps**0.5 * max(1.0, float(out.abs().max()))


def _close(a: Tensor, b: Tensor, tol: float) -> bool:
    return a.shape == b.shape and bool(((a - b).abs() <= tol).all())


def _row_gap(batched: Tensor, singles: list[Tensor]) -> float | None:
    """max |f(X)[i] - f(x_i)|, or None if the outputs are not one row per example."""
    if any(s.shape[:1] != (1,) or s.shape[1:] != batched.shape[1:] for s in singles):
        return None
    return float((batched - torch.cat(singles)).abs().max())


def _batch_slices(full: Tensor, single: Tensor, m: int, i: int) -> tuple[Tensor, Tensor] | None:
    """Row i of `full` and `single` (a run on row i alone), along the dim where `single` has
    size 1 and `full` size m (or both whole, if the shapes agree); None if not comparable."""
    if full.shape == single.shape:
        return full, single
    if full.ndim != single.ndim:
        return None
    for d in range(full.ndim):
        others = [j for j in range(full.ndim) if j != d]
        rest_same = all(full.shape[j] == single.shape[j] for j in others)
        if full.shape[d] == m and single.shape[d] == 1 and rest_same:
            return full.select(d, i), single.select(d, 0)
    return None


def _tensors(obj: object) -> list[Tensor]:
    """The tensors in a module's inputs or output, in order (nested tuples, lists, dicts)."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    return []


def _record_calls(model: nn.Module, x: Tensor) -> dict[str, list[tuple[list, list]]]:
    """name -> per call (input tensors, output tensors), from one forward pass."""
    calls: dict[str, list[tuple[list, list]]] = {}

    def hook_for(name: str):
        def hook(module, args, kwargs, output):
            ins = _tensors(list(args) + list(kwargs.values()))
            calls.setdefault(name, []).append((ins, _tensors(output)))

        return hook

    handles = [
        m.register_forward_hook(hook_for(name), with_kwargs=True)
        for name, m in model.named_modules()
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def _agree(full: list[Tensor], singles: list[list[Tensor]], tol: float) -> bool | None:
    """True if every tensor agrees row by row, False if one differs, None if not comparable."""
    m = len(singles)
    for j, t in enumerate(full):
        for i in range(m):
            if j >= len(singles[i]):
                return None
            pair = _batch_slices(t, singles[i][j], m, i)
            if pair is None:
                return None
            if not _close(pair[0].float(), pair[1].float(), tol):
                return False
    return True


def _mixing_modules(model: nn.Module, xb: Tensor) -> list[str]:
    """The innermost modules (with a hint) whose inputs agree row by row, outputs not."""
    full = _record_calls(model, xb)
    singles = [_record_calls(model, xb[i : i + 1]) for i in range(len(xb))]
    tol = _tolerance(model(xb))
    sources = []
    for name, calls in full.items():
        for c, (ins, outs) in enumerate(calls):
            rows = [s[name][c] if len(s.get(name, ())) > c else ([], []) for s in singles]
            inputs_agree = _agree(ins, [r[0] for r in rows], tol)
            if inputs_agree and _agree(outs, [r[1] for r in rows], tol) is False:
                sources.append(name)
                break
    modules = dict(model.named_modules())
    return [
        _describe(s, modules[s])
        for s in sources
        if not any(_contains(s, other) for other in sources)  # innermost only
    ]


def _contains(outer: str, inner: str) -> bool:
    """Is module `inner` a proper submodule of `outer` (by their names; "" is the model)?"""
    return inner != outer and (outer == "" or inner.startswith(f"{outer}."))


def _describe(name: str, module: nn.Module) -> str:
    kind = type(module).__name__
    text = f"model.{name} ({kind})" if name else f"model ({kind}), in its own forward"
    if getattr(module, "batch_first", None) is False:
        text += (
            ", which has batch_first=False: it reads dimension 1 of its input as the batch; "
            "build it with batch_first=True or pass it (T, N, ...)"
        )
    return text
