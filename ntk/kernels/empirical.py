"""Empirical (finite-width) neural tangent kernel of any `torch.nn.Module`.

For a network f(x; θ) with K outputs the empirical NTK (Jacot et al. 2018) is

    Θ_kk'(x, x') = Σ_p ∂f_k(x)/∂θ_p · ∂f_k'(x')/∂θ_p ,

a (N1, N2, K, K) array of blocks; traced over outputs it is (1/K) Σ_k Θ_kk, the same
normalisation as neural-tangents' `trace_axes` (which averages, not sums).

Three ways to compute it:

* "jacobian": per-example Jacobians J(x) (K x P) with `vmap(jacrev)`, contracted over the P
  parameters (Jacobian contraction, Novak et al. 2022). Memory: chunk * K * P numbers. For
  models that do not support vmap (nn.LSTM) the rows come from a loop of plain backward passes
  instead (a warning says so).
* "ntvp": NTK-vector products (Novak et al. 2022, "Fast Finite Width Neural Tangent Kernel"):
  each column Θ v = J1 (J2^T v) is a vector-Jacobian product followed by a Jacobian-vector
  product, so J(x1) is never stored. Needs forward-mode AD, which PyTorch's fused attention
  kernels (SDPA, hence Hugging Face models) and nn.LSTM lack: "ntvp" then raises, and "auto"
  falls back to "jacobian" in memory-sized chunks, with a warning.
* "structured": for networks whose parameters all enter through linear maps z = a W^T + b
  (nn.Linear, or any `F.linear` call; a bias may also be added outside as z = ... + c b),
  with elementwise ops and constants in between, any module nesting. Then ∂f_k/∂W = g_k a^T
  with a the layer input and g_k = ∂f_k/∂z, hence <∂f_k(x)/∂W, ∂f_k'(x')/∂W> =
  (a·a')(g_k·g'_k') and

      Θ_kk' = Σ_l (A_l A_l'^T + c_l^2 [has bias]) ⊙ (G_l,k G_l',k'^T),

  from one forward pass (recording every A_l, N x fan_in) and one backward pass per output
  (recording every G_l, N x fan_out). Cost is a few forward passes plus N^2 * width per
  layer; no Jacobian is ever formed, so widths of 10^4 and more fit in a few GB. The forward
  runs under a `TorchFunctionMode` that sees every op: it records A_l at each `F.linear`,
  adds a zero "probe" to z_l whose gradient is G_l, and refuses (StructuredUnsupported) any
  model where a parameter is used otherwise, or twice, or on inputs that are not (N, fan_in).
  That path lives in `ntk.kernels.structured`.

All three assume that examples are processed independently (f(X)_n depends on x_n only).
`ntk.kernels.independence` checks it before anything is computed: BatchNorm using batch
statistics and dropout in training mode are refused by type, and f on a few rows at once must
equal f on each row alone (which catches a sequence-first LSTM or TransformerEncoder fed a
batch-first tensor, or `h - h.mean(0)` in a forward); the error names where mixing starts.

References: Jacot, Gabriel, Hongler (2018) "Neural Tangent Kernel", NeurIPS;
Novak, Sohl-Dickstein, Schoenholz (2022) "Fast Finite Width Neural Tangent Kernel", ICML.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ntk._checks import (
    as_tensor,
    check_bool,
    check_choice,
    check_inputs,
    check_module,
    check_positive_int,
    check_same_features,
)
from ntk.kernels.independence import check_module_types, check_rows_independent
from ntk.kernels.jacobian import (
    Rows,
    first_line,
    jacobian_pair,
    loop_rows,
    ntvp_pair,
    transform_failure,
    vmap_rows,
)
from ntk.kernels.structured import (
    StructuredUnsupported,
    structured_features,
    structured_layers,
    structured_pair,
)

METHODS = ("auto", "structured", "jacobian", "ntvp")

# Bytes of per-example quantities (features, Jacobian rows) held at once; chunks are sized to it.
MEMORY_BUDGET = 1 << 30


def empirical_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    method: str = "auto",
    trace_outputs: bool = True,
    chunk_size: int | None = None,
    trainable_only: bool = False,
) -> Tensor:
    """Empirical NTK of `model` at its current parameters.

    Args:
      model: any `nn.Module` mapping a batch (N, ...) to outputs (N,) or (N, K, ...)
        (trailing output dims are flattened into K). It is not modified.
      x1: inputs (N1, ...). Numpy arrays and lists are converted; cast to the model's dtype.
      x2: inputs (N2, ...), or None for x2 = x1 (the symmetric Gram matrix).
      method: "auto" (structured when the model qualifies, else "jacobian" or "ntvp",
        whichever costs less as timed on two examples, saying which it chose and why in a
        warning; "jacobian" when the model lacks forward-mode AD), "structured", "jacobian",
        "ntvp".
      trace_outputs: True -> (N1, N2) kernel averaged over the K outputs (neural-tangents'
        `trace_axes=(-1,)`); False -> full (N1, N2, K, K) blocks.
      chunk_size: most examples whose per-example quantities are held at once; None picks
        it from `MEMORY_BUDGET`. Smaller chunks use less memory and recompute more.
      trainable_only: differentiate only parameters with `requires_grad=True` (default: all).

    Returns:
      Θ, detached, in the model's dtype and device.

    Raises:
      TypeError / ValueError for bad arguments (naming them), for a model that mixes the
      examples of a batch or is random (naming where), and for method="ntvp" or "structured"
      on a model that does not support it; FloatingPointError when Θ would contain Inf or NaN
      (overflow in the model's dtype, or non-finite parameters).
    """
    params = _check_arguments(model, method, trace_outputs, chunk_size, trainable_only)

    ref = next(p for p in params.values())
    dtype = ref.dtype if ref.is_floating_point() else torch.get_default_dtype()
    # integer inputs stay integer for embedding models (token ids), else become floats
    keep_int = any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules())
    x1 = _as_batch("x1", x1, dtype, ref.device, keep_int)
    symmetric = x2 is None
    x2 = x1 if symmetric else _as_batch("x2", x2, dtype, ref.device, keep_int)
    check_same_features("x1", x1, "x2", x2)
    n_out = _probe_outputs(model, x1)
    check_rows_independent(model, x1 if symmetric else torch.cat([x1, x2]))
    run = _Run(x1, x2, symmetric, trace_outputs, n_out)

    if method in ("auto", "structured"):
        k = _structured(model, params, run, chunk_size, explicit=method == "structured")
        if k is not None:
            return k

    n_params = sum(p.numel() for p in params.values())
    row_bytes = 2 * ref.element_size() * n_out * n_params  # a Jacobian row block and a temporary
    chunk = chunk_size or max(1, MEMORY_BUDGET // row_bytes)
    rows, t_rows, probe = _jacobian_rows(model, params, x1)
    if method == "auto":
        method = _choose(model, params, run, (probe, t_rows), chunk, row_bytes)
    if method == "ntvp":
        pair = ntvp_pair(model, params, n_out, trace_outputs)
        failure = transform_failure(lambda: pair(x1[:1], rows(x1[:1])))
        if failure is None:
            return run(chunk, lambda x: x, rows, pair)
        _ntvp_unsupported(failure, explicit=True, chunk=chunk, row_bytes=row_bytes)
    return run(chunk, rows, rows, jacobian_pair(trace_outputs, n_out))


def _jacobian_feature_rows(n1: int, n2: int, symmetric: bool, chunk: int) -> int:
    """How many Jacobian rows `_blocked` computes: x2's once, x1's once per block of x2
    (above the diagonal only when symmetric)."""
    if n1 <= chunk and n2 <= chunk:
        return n1 if symmetric else n1 + n2
    blocks = -(-n2 // chunk)
    if symmetric:  # block column j recomputes the x1 blocks above the diagonal: j * chunk rows
        return n2 + sum(min(j * chunk, n1) for j in range(blocks))
    return n2 + n1 * blocks


def _choose(
    model: nn.Module,
    params: dict[str, Tensor],
    run: _Run,
    timed_rows: tuple[Rows, float],
    chunk: int,
    row_bytes: int,
) -> str:
    """method="auto" without the structured path: "jacobian" or "ntvp", whichever is cheaper
    by the costs of Novak et al. 2022 (section 3), timed on this model:

        jacobian ~ (Jacobian rows computed) t_row + (example pairs) t_contract
        ntvp     ~ N2 t_row + (example pairs) t_ntvp

    with t_row the time of one example's Jacobian rows (K backward passes), t_contract that of
    contracting two rows (P K^2 or P K multiply-adds), t_ntvp that of one pair's K jvps (a
    forward pass each). A CNN reuses each weight at every position, so its forward pass costs
    far more than P: there the Jacobian's K backward passes per example beat ntvp's K forward
    passes per pair. Says which it chose and the estimates (a warning)."""
    j, t_rows = timed_rows  # the Jacobian rows of x1[:2], and their time per example
    x = run.x1[: min(2, len(run.x1))]
    m = len(x)
    contract = jacobian_pair(run.trace, run.n_out)
    t0 = time.perf_counter()
    contract(j, j)
    t_contract = (time.perf_counter() - t0) / (m * m)
    n1, n2 = len(run.x1), len(run.x2)
    pairs = n1 * (n1 + 1) / 2 if run.symmetric else n1 * n2
    n_rows = _jacobian_feature_rows(n1, n2, run.symmetric, chunk)
    jacobian = n_rows * t_rows + pairs * t_contract
    pair = ntvp_pair(model, params, run.n_out, run.trace)
    first = {name: rows[:1] for name, rows in j.items()}
    t0 = time.perf_counter()
    failure = transform_failure(lambda: pair(x[:1], first))  # one pair: K jvps
    t_ntvp = time.perf_counter() - t0
    if failure is not None:
        if (n1 + (0 if run.symmetric else n2)) * row_bytes > MEMORY_BUDGET:
            _ntvp_unsupported(failure, explicit=False, chunk=chunk, row_bytes=row_bytes)
        return "jacobian"
    ntvp = n2 * t_rows + pairs * t_ntvp
    chosen, other = ("ntvp", "jacobian") if ntvp < jacobian else ("jacobian", "ntvp")
    costs = {"jacobian": jacobian, "ntvp": ntvp}
    warnings.warn(
        f"empirical_ntk(method='auto') chose {chosen!r}: estimated {costs[chosen]:.2g} s, "
        f"{other!r} {costs[other]:.2g} s (timed on {m} examples; the structured path does not "
        "apply to this model); pass method= to choose yourself",
        stacklevel=3,
    )
    return chosen


class _Run:
    """The inputs and output format of one `empirical_ntk` call; calling it assembles Θ."""

    def __init__(self, x1: Tensor, x2: Tensor, symmetric: bool, trace: bool, n_out: int):
        self.x1, self.x2, self.symmetric, self.trace, self.n_out = x1, x2, symmetric, trace, n_out

    def __call__(self, chunk: int, feats1: Callable, feats2: Callable, pair: Callable) -> Tensor:
        k = _blocked(
            self.x1, self.x2, self.symmetric, chunk, feats1, feats2, pair, self.trace, self.n_out
        )
        return _check_finite(k)


def _structured(
    model: nn.Module, params: dict[str, Tensor], run: _Run, chunk_size: int | None, explicit: bool
) -> Tensor | None:
    """The structured kernel; None when the model does not qualify and `explicit` is False."""
    try:  # qualify on one example, then run
        layers = structured_layers(model, params, run.x1[:1])
    except StructuredUnsupported:
        if explicit:
            raise
        return None
    ref = next(iter(params.values()))
    # ~3x the recorded features: A, G, and the autograd graph of the forward pass
    per_example = 3 * ref.element_size() * sum(fi + run.n_out * fo for fi, fo in layers)
    chunk = chunk_size or max(1, MEMORY_BUDGET // per_example)

    def feats(x: Tensor) -> list:
        return structured_features(model, params, x, run.n_out)

    return run(chunk, feats, feats, structured_pair(run.trace, run.n_out))


def _jacobian_rows(
    model: nn.Module, params: dict[str, Tensor], x: Tensor
) -> tuple[Callable, float, Rows]:
    """(rows, seconds per example, rows of x[:2]): vmap(jacrev) Jacobian rows if the model
    supports vmap (tried and timed on two examples), else the autograd loop, saying so once."""
    rows, probe = vmap_rows(model, params), {}
    t0 = time.perf_counter()
    failure = transform_failure(lambda: probe.update(rows(x[:2])))
    if failure is None:
        return rows, (time.perf_counter() - t0) / len(x[:2]), probe
    warnings.warn(
        f"the model does not support torch.func.vmap ({first_line(failure)}); computing its "
        "Jacobian one example and one output at a time with autograd (same result, slower)",
        stacklevel=3,
    )
    rows = loop_rows(model, params)
    t0 = time.perf_counter()
    probe = rows(x[:2])
    return rows, (time.perf_counter() - t0) / len(x[:2]), probe


def _ntvp_unsupported(failure: Exception, *, explicit: bool, chunk: int, row_bytes: int) -> None:
    """Raise (method="ntvp") or say once that "auto" falls back to Jacobian contraction."""
    if explicit:
        raise ValueError(
            "method='ntvp' needs forward-mode AD (torch.func.jvp under vmap), which this model "
            f"does not support: {first_line(failure)}; use method='jacobian', or 'auto', which "
            "falls back to it (Hugging Face models support forward mode with "
            "attn_implementation='eager')"
        ) from failure
    gb = chunk * row_bytes / 1e9
    warnings.warn(
        f"method='auto': the Jacobian rows exceed MEMORY_BUDGET, but the model does not support "
        f"forward-mode AD for NTK-vector products ({first_line(failure)}); falling back to "
        f"method='jacobian' in chunks of {chunk} examples (about {gb:.2g} GB of Jacobian rows "
        "at a time)",
        stacklevel=3,
    )


# ----------------------------------------------------------------------------- checks


def _check_arguments(
    model: nn.Module,
    method: str,
    trace_outputs: bool,
    chunk_size: int | None,
    trainable_only: bool,
) -> dict[str, Tensor]:
    """Check the arguments of `empirical_ntk`; return the parameters to differentiate."""
    check_module("model", model)
    check_choice("method", method, METHODS)
    check_bool("trace_outputs", trace_outputs)
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    check_bool("trainable_only", trainable_only)
    params = {
        name: p for name, p in model.named_parameters() if p.requires_grad or not trainable_only
    }
    if not params:
        raise ValueError("model has no parameters to differentiate (check trainable_only)")
    check_module_types(model)
    return params


def _check_finite(k: Tensor) -> Tensor:
    """Raise instead of returning a kernel with Inf/NaN entries (overflow, or NaN weights)."""
    if not torch.isfinite(k).all():
        raise FloatingPointError(
            f"the empirical NTK has Inf or NaN entries in {k.dtype}: the model's outputs or "
            "gradients overflow (very large weights or inputs) or its parameters are not "
            "finite; check the parameters, or compute in float64 (model.double())"
        )
    return k


def _as_batch(
    name: str, x: object, dtype: torch.dtype, device: torch.device, keep_int: bool = False
) -> Tensor:
    """A finite, non-empty batch (N, ...) of at least 2 dims, cast to the model's dtype."""
    x = as_tensor(name, x)
    checked = check_inputs(name, x, ndim=max(x.ndim, 2), dtype=dtype)
    is_int = not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)
    return (x if keep_int and is_int else checked).to(device)


def _probe_outputs(model: nn.Module, x1: Tensor) -> int:
    """Run one example through the model; return the number of outputs K."""
    try:
        with torch.no_grad():
            out = model(x1[:1])
    except Exception as err:
        raise ValueError(
            f"x1 with shape {tuple(x1.shape)} does not fit the model: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"model must return a tensor, got {type(out).__name__}; wrap it in a module whose "
            "forward returns one tensor (e.g. a Hugging Face model's .logits)"
        )
    if out.ndim == 0 or out.shape[0] != 1:
        raise ValueError(f"model output must be batch first (N, ...), got {tuple(out.shape)}")
    return max(1, out[0].numel())


# ------------------------------------------------------------------ blocked assembly


def _blocked(
    x1: Tensor,
    x2: Tensor,
    symmetric: bool,
    chunk: int,
    feats1: Callable,
    feats2: Callable,
    pair: Callable,
    trace: bool,
    n_out: int,
) -> Tensor:
    """Assemble Θ block by block: features of <= `chunk` examples per side at a time.

    In the symmetric case only blocks on or above the diagonal are computed.
    """
    n1, n2 = len(x1), len(x2)
    out = None
    for j in range(0, n2, chunk):
        f2 = feats2(x2[j : j + chunk])
        for i in range(0, n1, chunk):
            if symmetric and i > j:
                continue
            same = symmetric and i == j and feats1 is feats2
            block = pair(f2 if same else feats1(x1[i : i + chunk]), f2).detach()
            if n1 <= chunk and n2 <= chunk:
                return block
            if out is None:
                shape = (n1, n2) if trace else (n1, n2, n_out, n_out)
                out = block.new_empty(shape)
            out[i : i + chunk, j : j + chunk] = block
            if symmetric and i != j:
                mirrored = block.transpose(0, 1)
                out[j : j + chunk, i : i + chunk] = mirrored if trace else mirrored.transpose(2, 3)
    return out
