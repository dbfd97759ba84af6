"""The general path of the empirical NTK: per-example Jacobians and NTK-vector products.

For one example x, J(x) = ∂f(x)/∂θ is K x P. Θ(x, x') = J(x) J(x')^T / K (traced) is
computed either by contracting stored Jacobian rows ("jacobian") or, without storing J(x), as
NTK-vector products Θ v = J(x) (J(x')^T v): a vector-Jacobian product followed by a
Jacobian-vector product ("ntvp", Novak, Sohl-Dickstein & Schoenholz 2022, "Fast Finite Width
Neural Tangent Kernel", ICML).

Both rely on torch.func transforms: `vmap` over the examples of a chunk, `jacrev` (reverse
mode) and, for "ntvp", `jvp` (forward mode). Not every op supports them: PyTorch's fused CPU
attention (`F.scaled_dot_product_attention`, hence Hugging Face's default attention) and the
fused `nn.TransformerEncoderLayer` have no forward-mode AD; `nn.LSTM` has no vmap batching rule
(and its fallback fails in float64). The transforms are therefore tried on one example first
(`transform_failure`), and Jacobian rows fall back to a loop of ordinary backward passes, one
example and one output at a time, which needs nothing but autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vmap

Rows = dict[str, Tensor]  # parameter name -> (n, K, *param.shape)


def transform_failure(fn: Callable[[], object]) -> Exception | None:
    """Run `fn` (a transform of a model whose plain forward works); return what it raised."""
    try:
        fn()
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
        return err
    return None


def first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"


def one_example_fn(model: nn.Module, params: dict[str, Tensor]) -> Callable:
    """f(θ, x) for one example x, flattened to (K,), through `functional_call`."""

    def f_one(theta: dict[str, Tensor], x: Tensor) -> Tensor:
        for name, t in theta.items():  # Python attributes of the parameters, e.g. mup's infshape
            for attr, value in vars(params[name]).items():
                setattr(t, attr, value)
        return functional_call(model, theta, (x.unsqueeze(0),)).reshape(-1)

    return f_one


def vmap_rows(model: nn.Module, params: dict[str, Tensor]) -> Callable[[Tensor], Rows]:
    """Jacobian rows of a chunk with vmap(jacrev): one batched backward pass per output."""
    f_one = one_example_fn(model, params)
    detached = {name: p.detach() for name, p in params.items()}

    def rows(x: Tensor) -> Rows:
        return vmap(jacrev(f_one), in_dims=(None, 0))(detached, x)

    return rows


def loop_rows(model: nn.Module, params: dict[str, Tensor]) -> Callable[[Tensor], Rows]:
    """Jacobian rows from plain autograd: a forward pass per example, a backward per output."""
    f_one = one_example_fn(model, params)

    def rows(x: Tensor) -> Rows:
        out: dict[str, list[Tensor]] = {name: [] for name in params}
        for xi in x:
            theta = {name: p.detach().requires_grad_() for name, p in params.items()}
            with torch.enable_grad():
                f = f_one(theta, xi)
                per_k: list[tuple] = []
                for k in range(len(f)):
                    g = torch.autograd.grad(
                        f[k], list(theta.values()), retain_graph=True, allow_unused=True
                    )
                    per_k.append(g)
            for j, (name, t) in enumerate(theta.items()):
                grads = [torch.zeros_like(t) if g[j] is None else g[j] for g in per_k]
                out[name].append(torch.stack(grads))  # (K, *shape)
        return {name: torch.stack(v) for name, v in out.items()}

    return rows


def jacobian_pair(trace: bool, n_out: int) -> Callable[[Rows, Rows], Tensor]:
    """Θ from two chunks' Jacobian rows: Σ_p J1[n,k,p] J2[m,k',p] (traced: k = k', / K)."""

    def pair(j1: Rows, j2: Rows) -> Tensor:
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


def ntvp_pair(
    model: nn.Module, params: dict[str, Tensor], n_out: int, trace: bool
) -> Callable[[Tensor, Rows], Tensor]:
    """Θ[x1c, x2c] from inputs x1c and the Jacobian rows of x2c, by NTK-vector products.

    For the basis v = e_(m, k'), the vjp J2^T e is row (m, k') of J2, pushed through a jvp of
    the batch function on x1c.
    """
    f_one = one_example_fn(model, params)
    detached = {name: p.detach() for name, p in params.items()}

    def pair(x1c: Tensor, rows2: Rows) -> Tensor:
        n2 = next(iter(rows2.values())).shape[0]
        tangents = {k: v.flatten(0, 1) for k, v in rows2.items()}  # (n2 * K, *shape)

        def f_batch(theta: dict[str, Tensor]) -> Tensor:  # (n1, K)
            return vmap(f_one, in_dims=(None, 0))(theta, x1c)

        def column(t: dict[str, Tensor]) -> Tensor:
            return jvp(f_batch, (detached,), (t,))[1]

        cols = vmap(column)(tangents).reshape(n2, n_out, len(x1c), n_out)  # [m, k', n, k]
        full = cols.permute(2, 0, 3, 1)  # (n1, n2, K, K)
        return full.diagonal(dim1=2, dim2=3).mean(-1) if trace else full

    return pair
