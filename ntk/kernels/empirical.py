"""Empirical (finite-width) neural tangent kernel of any `torch.nn.Module`.

For a network f(x; θ) with K outputs the empirical NTK (Jacot et al. 2018) is

    Θ_kk'(x, x') = Σ_p ∂f_k(x)/∂θ_p · ∂f_k'(x')/∂θ_p ,

a (N1, N2, K, K) array of blocks; traced over outputs it is (1/K) Σ_k Θ_kk, the same
normalisation as neural-tangents' `trace_axes` (which averages, not sums).

Three ways to compute it:

* "jacobian": per-example Jacobians J(x) (K x P) with `vmap(jacrev)`, contracted over the P
  parameters (Jacobian contraction, Novak et al. 2022). Memory: chunk * K * P numbers.
* "ntvp": NTK-vector products (Novak et al. 2022, "Fast Finite Width Neural Tangent Kernel"):
  each column Θ v = J1 (J2^T v) is a vector-Jacobian product followed by a Jacobian-vector
  product, so J(x1) is never stored.
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
BatchNorm using batch statistics breaks this and dropout makes f random, so both are refused
in training mode: call `model.eval()` first.

References: Jacot, Gabriel, Hongler (2018) "Neural Tangent Kernel", NeurIPS;
Novak, Sohl-Dickstein, Schoenholz (2022) "Fast Finite Width Neural Tangent Kernel", ICML.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vmap

from ntk._checks import (
    as_tensor,
    check_bool,
    check_choice,
    check_inputs,
    check_module,
    check_positive_int,
    check_same_features,
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
      method: "auto" (structured when the model qualifies, else "jacobian" when all
        Jacobian rows fit in `MEMORY_BUDGET`, else "ntvp"), "structured", "jacobian", "ntvp".
      trace_outputs: True -> (N1, N2) kernel averaged over the K outputs (neural-tangents'
        `trace_axes=(-1,)`); False -> full (N1, N2, K, K) blocks.
      chunk_size: most examples whose per-example quantities are held at once; None picks
        it from `MEMORY_BUDGET`. Smaller chunks use less memory and recompute more.
      trainable_only: differentiate only parameters with `requires_grad=True` (default: all).

    Returns:
      Θ, detached, in the model's dtype and device.

    Raises:
      TypeError / ValueError for bad arguments (naming them); FloatingPointError when Θ would
      contain Inf or NaN (overflow in the model's dtype, or non-finite parameters).
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

    if method in ("auto", "structured"):
        try:  # qualify on one example, then run; "auto" falls back if the model is unfit
            layers = structured_layers(model, params, x1[:1])
        except StructuredUnsupported:
            if method == "structured":
                raise
        else:
            # ~3x the recorded features: A, G, and the autograd graph of the forward pass
            per_example = 3 * ref.element_size() * sum(fi + n_out * fo for fi, fo in layers)
            chunk = chunk_size or max(1, MEMORY_BUDGET // per_example)

            def feats(x: Tensor) -> list:
                return structured_features(model, params, x, n_out)

            pair = structured_pair(trace_outputs, n_out)
            k = _blocked(x1, x2, symmetric, chunk, feats, feats, pair, trace_outputs, n_out)
            return _check_finite(k)

    n_params = sum(p.numel() for p in params.values())
    row_bytes = 2 * ref.element_size() * n_out * n_params  # a Jacobian row block and a temporary
    if method == "auto":
        n_rows = len(x1) if symmetric else len(x1) + len(x2)
        method = "jacobian" if n_rows * row_bytes <= MEMORY_BUDGET else "ntvp"
    chunk = chunk_size or max(1, MEMORY_BUDGET // row_bytes)
    detached = {name: p.detach() for name, p in params.items()}

    def f_one(theta: dict[str, Tensor], x: Tensor) -> Tensor:  # one example -> (K,)
        for name, t in theta.items():  # Python attributes of the parameters, e.g. mup's infshape
            for attr, value in vars(params[name]).items():
                setattr(t, attr, value)
        return functional_call(model, theta, (x.unsqueeze(0),)).reshape(-1)

    def jac_rows(x: Tensor) -> dict[str, Tensor]:  # name -> (n, K, *param.shape)
        return vmap(jacrev(f_one), in_dims=(None, 0))(detached, x)

    if method == "jacobian":
        pair = _jacobian_pair(trace_outputs, n_out)
        k = _blocked(x1, x2, symmetric, chunk, jac_rows, jac_rows, pair, trace_outputs, n_out)
        return _check_finite(k)

    def ntvp_pair(x1c: Tensor, rows2: dict[str, Tensor]) -> Tensor:
        # Θ[x1c, x2c] v for the basis v = e_(m, k'): the vjp J2^T e is row (m, k') of J2,
        # pushed through a jvp of the batch function on x1c.
        n2 = next(iter(rows2.values())).shape[0]
        tangents = {k: v.flatten(0, 1) for k, v in rows2.items()}  # (n2 * K, *shape)

        def f_batch(theta: dict[str, Tensor]) -> Tensor:  # (n1, K)
            return vmap(f_one, in_dims=(None, 0))(theta, x1c)

        def column(t: dict[str, Tensor]) -> Tensor:
            return jvp(f_batch, (detached,), (t,))[1]

        cols = vmap(column)(tangents).reshape(n2, n_out, len(x1c), n_out)  # [m, k', n, k]
        full = cols.permute(2, 0, 3, 1)  # (n1, n2, K, K)
        return full.diagonal(dim1=2, dim2=3).mean(-1) if trace_outputs else full

    k = _blocked(x1, x2, symmetric, chunk, lambda x: x, jac_rows, ntvp_pair, trace_outputs, n_out)
    return _check_finite(k)


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
    _check_examples_independent(model)
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


def _check_examples_independent(model: nn.Module) -> None:
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
        raise TypeError(f"model must return a tensor, got {type(out).__name__}")
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


# ---------------------------------------------------------------- jacobian contraction


def _jacobian_pair(trace: bool, n_out: int) -> Callable:
    def pair(j1: dict[str, Tensor], j2: dict[str, Tensor]) -> Tensor:
        total = 0.0
        for name, a in j1.items():
            b = j2[name]
            n1, n2 = a.shape[0], b.shape[0]
            if trace:  # Σ_k Σ_p J1[n,k,p] J2[m,k,p]
                total = total + a.reshape(n1, -1) @ b.reshape(n2, -1).T
            else:  # Σ_p J1[n,k,p] J2[m,k',p] -> (n1, n2, K, K)
                g = a.reshape(n1 * n_out, -1) @ b.reshape(n2 * n_out, -1).T
                total = total + g.reshape(n1, n_out, n2, n_out).permute(0, 2, 1, 3)
        return total / n_out if trace else total

    return pair
