"""Spectral monitoring: the operator norms of each weight and of its change during training.

Yang, Simon & Bernstein 2023 ("A Spectral Condition for Feature Learning", arXiv:2310.17813)
show that feature learning at every width needs, for each layer l with weight W_l of shape
(fan_out, fan_in),

    ||W_l||_*  = Theta(sqrt(fan_out / fan_in))   and   ||Delta W_l||_* = Theta(sqrt(fan_out / fan_in)),

with ||.||_* the spectral norm (largest singular value) and Delta W_l = W_l - W_l(0). muP
satisfies both; the standard parametrization at a width-independent learning rate makes the
updates of hidden and readout layers too large. `SpectralMonitor` logs, every `every` steps,
sigma(W) and sigma(Delta W) divided by sqrt(fan_out / fan_in): quantities that stay O(1) in the
width exactly when the condition holds.

To be cheap enough to leave on, the norms come from a few products with W^T W per call,
warm-started from the previous call's top right singular vector: weights move slowly, so the
estimate stays converged. By default the products build a small Krylov subspace (Lanczos, the
Rayleigh-Ritz refinement of power iteration: same cost, much faster convergence at the edge of
a random matrix's spectrum); `power_iteration` is the plain version. Both are lower bounds
that approach sigma from below; `exact=True` uses an SVD instead.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import Tensor, nn

from ntk._checks import (
    check_bool,
    check_choice,
    check_number_list,
    check_positive_int,
    check_sequence,
)
from ntk.errors import TrainingDivergedError
from ntk.scaling.attention import fused_blocks
from ntk.scaling.geometry import WeightGeometry, geometry_of, registered_geometry, torch_layout

Multipliers = Mapping[str, float] | Callable[[str, nn.Module], float] | None


@torch.no_grad()
def power_iteration(
    w: Tensor, v: Tensor | None = None, n_iter: int = 3, *, generator: torch.Generator | None = None
) -> tuple[float, Tensor]:
    """Largest singular value of the matrix `w` (m, n) by `n_iter` steps of power iteration.

    Iterates v <- W^T W v / ||W^T W v|| from `v` (n,) (a random start if None) and returns
    (||W v||, v). The estimate never exceeds the true value and converges at the rate
    (sigma_2 / sigma_1)^(2 n_iter). A zero matrix gives 0. Complex matrices iterate with the
    conjugate transpose W^H; half precision is computed in float32.
    """
    check_positive_int("n_iter", n_iter, minimum=0)
    w, scale = _scaled_matrix(w)
    v = _start_vector(v, w, generator)
    for _ in range(n_iter):
        u = w @ v  # (m,)
        v_new = w.mH @ u  # (n,)
        norm = v_new.norm()
        if norm == 0:  # v is in the null space (or w == 0): the estimate stays ||w v||
            break
        v = v_new / norm
    return scale * float((w @ v).norm()), v


def _scaled_matrix(w: object) -> tuple[Tensor, float]:
    """w / max|w_ij| and that scale: products with W^H W then neither overflow (float32 norms
    ~1e19 square to inf) nor underflow (~1e-30 squares to 0)."""
    if not isinstance(w, Tensor):
        raise TypeError(f"w must be a torch.Tensor matrix, got {type(w).__name__}")
    if w.ndim != 2:
        raise ValueError(f"w must be a matrix (2 dimensions), got shape {tuple(w.shape)}")
    if not (w.is_floating_point() or w.is_complex()):
        raise TypeError(f"w must be a floating or complex matrix, got {w.dtype}")
    w = w.detach()
    if w.dtype in (torch.float16, torch.bfloat16):  # no CPU matmul/eigh kernels for these
        w = w.float()
    scale = float(w.abs().max()) if w.numel() else 0.0
    if not math.isfinite(scale):
        raise ValueError("w contains NaN or Inf entries: its spectral norm is undefined")
    return (w / scale if scale > 0 else w), scale


def _start_vector(v: object, w: Tensor, generator: torch.Generator | None) -> Tensor:
    """The unit start vector (n,) in w's dtype: `v`, or a random one."""
    n = w.shape[1]
    if v is None:
        real = w.real.dtype if w.is_complex() else w.dtype
        v = torch.randn(n, generator=generator, dtype=real).to(w.device, w.dtype)
    elif not isinstance(v, Tensor) or v.shape != (n,):
        shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"v must be a vector of shape ({n},) (w's columns), got {shape}")
    v = v.detach().to(w.device, w.dtype)
    norm = v.norm()
    if not torch.isfinite(norm):
        raise ValueError("v contains NaN or Inf entries")
    return v / norm.clamp_min(torch.finfo(norm.dtype).tiny)


@torch.no_grad()
def lanczos(
    w: Tensor, v: Tensor | None = None, n_iter: int = 5, *, generator: torch.Generator | None = None
) -> tuple[float, Tensor]:
    """Largest singular value of `w` (m, n) from an `n_iter`-dimensional Krylov subspace.

    Lanczos on W^T W started at `v` (n,): the Rayleigh-Ritz estimate over
    span{v, W^T W v, ..., (W^T W)^(n_iter - 1) v}, which contains the power-iteration iterate,
    so for the same number of products with W it is never worse and near a spectral edge
    without a gap (a random matrix) far better: error ~ 1/k^2 instead of ~ 1/k. Returns
    (||W v*||, v*) with v* the top Ritz vector, a warm start for the next call. Fully
    reorthogonalized (k is small), a lower bound on the true value.
    """
    check_positive_int("n_iter", n_iter)
    w, scale = _scaled_matrix(w)
    n = w.shape[1]
    if n == 0 or w.shape[0] == 0:  # an empty matrix maps everything to 0: its norm is 0
        return 0.0, _start_vector(v, w, generator) if n else w.new_zeros(0)
    k = min(n_iter, n)
    real = w.real.dtype if w.is_complex() else w.dtype
    basis = torch.zeros(k, n, dtype=w.dtype, device=w.device)  # orthonormal Krylov basis
    basis[0] = _start_vector(v, w, generator)
    alpha = torch.zeros(k, dtype=real, device=w.device)
    beta = torch.zeros(k, dtype=real, device=w.device)
    m = k
    for j in range(k):
        z = w.mH @ (w @ basis[j])  # (n,): W^H W q_j
        alpha[j] = torch.vdot(basis[j], z).real  # real: W^H W is Hermitian
        for _ in range(2):  # twice is enough (Giraud et al. 2005)
            z = z - basis[: j + 1].T @ (basis[: j + 1].conj() @ z)
        b = z.norm()
        if j == k - 1 or b <= 1e-6 * alpha[: j + 1].abs().max().clamp_min(1e-30):
            m = j + 1  # invariant subspace found (or budget spent): the Ritz values are exact
            break
        beta[j] = b
        basis[j + 1] = z / b
    tri = torch.diag(alpha[:m]) + torch.diag(beta[: m - 1], 1) + torch.diag(beta[: m - 1], -1)
    _, vecs = torch.linalg.eigh(tri)
    top = basis[:m].T @ vecs[:, -1].to(w.dtype)  # (n,) top Ritz vector
    top = top / top.norm().clamp_min(torch.finfo(real).tiny)
    return scale * float((w @ top).norm()), top


@dataclass
class _Matrix:
    """One monitored matrix: a weight, or one block (q, k, v; a gate) of a stacked weight."""

    label: str
    module_name: str
    module: nn.Module
    geometry: WeightGeometry
    block: int | None  # index into geometry.blocks, None for the whole matrix

    def read(self) -> Tensor:
        """The matrix (fan_out, fan_in), or its block, from the live parameter."""
        w = self.geometry.matrix(self.module.get_parameter(self.geometry.param))
        if self.block is None:
            return w
        rows = self.geometry.block_size
        return w[self.block * rows : (self.block + 1) * rows]


def weight_matrices(model: nn.Module) -> tuple[list[_Matrix], list[str]]:
    """(matrices, assumed): every weight matrix of `model` with its registered geometry
    (`ntk.scaling.geometry`), stacked weights split into their blocks (LSTM gates, q/k/v, GPT-2's
    fused c_attn), and the names of modules of unregistered types whose `weight` is read in
    PyTorch's (out, in, *kernel) layout."""
    fused = fused_blocks(model)
    matrices, assumed = [], []
    for name, module in model.named_modules():
        if registered_geometry(module):
            # parameters of child modules (MultiheadAttention's out_proj) are read in the child
            geoms = [g for g in geometry_of(module, name) if "." not in g.param]
        elif (g := torch_layout(module)) is not None:
            geoms = [g]
            assumed.append(name or "<model>")
        else:
            continue
        for g in geoms:
            if id(module) in fused and len(geoms) == 1 and not g.blocks:
                g = replace(g, blocks=fused[id(module)])
            if len(geoms) == 1:
                label = name or "<model>"
            else:
                label = f"{name}.{g.param}" if name else g.param
            if not g.blocks:
                matrices.append(_Matrix(label, name, module, g, None))
            for k, block in enumerate(g.blocks):
                matrices.append(_Matrix(f"{label}[{block}]", name, module, g, k))
    return matrices, assumed


def _default_multiplier(name: str, module: nn.Module, modules: dict[str, nn.Module]) -> float:
    """The constant that multiplies the stored weight in forward.

    mup's MuReadout divides its input by width_mult and multiplies it by output_mult; a
    wrapper with a numeric `multiplier` around a single module (`ntk.scaling.parametrization`'s
    ScaledModule) scales its output; other layers use the weight as it is.
    """
    mult = 1.0
    if hasattr(module, "output_mult") and hasattr(module, "width_mult"):
        mult *= float(module.output_mult) / float(module.width_mult())
    parts = name.split(".")
    for k in range(len(parts) - 1, 0, -1):  # ancestors, nearest first
        parent = modules.get(".".join(parts[:k]))
        factor = getattr(parent, "multiplier", None)
        if isinstance(factor, (int, float)) and len(list(parent.children())) == 1:
            mult *= float(factor)
    return mult


class SpectralMonitor:
    """Log sigma(W) and sigma(W - W0) relative to sqrt(fan_out / fan_in), layer by layer.

    Args:
        model: any module. Every weight matrix is read with its registered geometry
            (`ntk.scaling.geometry`: Linear, Conv (out, in * kernel), Embedding (dim, num),
            Hugging Face Conv1D (transposed), nn.MultiheadAttention, RNN/LSTM/GRU); stacked
            weights are monitored per block (q, k, v of in_proj_weight and GPT-2's c_attn;
            LSTM/GRU gates), labelled "name.param[block]". Unregistered modules with a
            >= 2-D `weight` are read as (out, in, *kernel), with a warning naming them.
        every: log when `step % every == 0` (call the monitor every step; it skips cheaply).
        n_iter: products with W^T W per call and matrix (warm-started from the last call).
        n_iter_init: products the first time a matrix is seen.
        method: "lanczos" (a Krylov subspace; the default, more accurate per product) or
            "power" (plain power iteration).
        layers: None (all), a predicate on names, or a list of names (module names or
            row labels).
        multipliers: constant factors the forward pass applies to a layer's stored weight,
            as {label: factor} or `f(label, module)`. By default: mup's MuReadout
            output_mult / width_mult times the `multiplier` of single-module wrappers around
            the layer (`ntk.scaling.parametrization.ScaledModule`), else 1. Multipliers applied
            elsewhere in forward (e.g. `WideMLP(parametrization="ntk")`) must be passed:
            `multipliers=lambda name, m: model.multipliers(m)[0]`.
        exact: use torch.linalg.matrix_norm(ord=2) (an SVD) instead of power iteration.
        seed: seed of the private generator of the random start vectors (the global torch RNG
            is left alone, so monitoring does not change training).

    Use `monitor(step)` inside a training loop, or `monitor.attach(optimizer)` to log after
    every optimizer step; `monitor.dataframe()` returns the log with columns step, layer,
    fan_in, fan_out, scale = sqrt(fan_out / fan_in), sigma_w, sigma_dw, rel_w, rel_dw.
    `state_dict()` / `load_state_dict()` carry the warm starts through a checkpoint, so a
    resumed run measures what the uninterrupted one measures, bit for bit.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        every: int = 1,
        n_iter: int = 5,
        n_iter_init: int = 30,
        method: str = "lanczos",
        layers: Callable[[str], bool] | Iterable[str] | None = None,
        multipliers: Multipliers = None,
        exact: bool = False,
        seed: int = 0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.every = check_positive_int("every", every)
        self.n_iter = check_positive_int("n_iter", n_iter)
        self.n_iter_init = check_positive_int("n_iter_init", n_iter_init)
        self.exact = check_bool("exact", exact)
        check_choice("method", method, ("lanczos", "power"))
        self._estimate = lanczos if method == "lanczos" else power_iteration
        self.generator = torch.Generator().manual_seed(check_positive_int("seed", seed, minimum=0))
        modules = dict(model.named_modules())
        matrices, assumed = weight_matrices(model)
        if layers is None:
            keep = lambda name: True  # noqa: E731
        elif callable(layers):
            keep = layers
        else:
            names = set(check_sequence("layers", layers, "module or matrix names"))
            known = set(modules) | {m.label for m in matrices}
            unknown = sorted(str(n) for n in names - known)
            if unknown:
                raise ValueError(f"layers names modules the model does not have: {unknown}")
            keep = names.__contains__
        if assumed:
            warnings.warn(
                f"SpectralMonitor: {assumed} have no registered geometry; their weights are "
                "read in PyTorch's (out, in, *kernel) layout (ntk.scaling.register_geometry "
                "tells otherwise)",
                stacklevel=2,
            )
        self.matrices = {m.label: m for m in matrices if keep(m.label) or keep(m.module_name)}
        if not self.matrices:
            raise ValueError("model has no layer with a weight matrix (after the layers filter)")
        self.layers: dict[str, nn.Module] = {k: m.module for k, m in self.matrices.items()}
        self.multiplier: dict[str, float] = {}
        for label, m in self.matrices.items():
            if multipliers is None:
                self.multiplier[label] = _default_multiplier(m.module_name, m.module, modules)
            elif callable(multipliers):
                self.multiplier[label] = check_number_list(
                    f"multipliers({label!r}, module)", [multipliers(label, m.module)]
                )[0]
            else:
                self.multiplier[label] = check_number_list(
                    f"multipliers[{label!r}]", [multipliers.get(label, 1.0)]
                )[0]
        self.w0 = {label: m.read().detach().clone() for label, m in self.matrices.items()}
        self._v: dict[tuple[str, str], Tensor] = {}  # warm starts, keyed (layer, "w" | "dw")
        self.records: list[dict] = []
        self._calls = 0

    def _sigma(self, key: tuple[str, str], w: Tensor) -> float:
        if self.exact:
            w, scale = _scaled_matrix(w)
            return scale * float(torch.linalg.matrix_norm(w, ord=2))
        v = self._v.get(key)
        sigma, self._v[key] = self._estimate(
            w, v, self.n_iter if v is not None else self.n_iter_init, generator=self.generator
        )
        return sigma

    def state_dict(self) -> dict:
        """What the next measurements depend on besides the weights: the warm-start vectors,
        the generator of the random starts and the call count. W0 is not stored: it is the
        model's initialization, which a resumed run rebuilds from its seed before loading."""
        vectors = [[layer, kind, v.clone()] for (layer, kind), v in self._v.items()]
        return {"vectors": vectors, "generator": self.generator.get_state(), "calls": self._calls}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`'s content (of a monitor of the same layers)."""
        if not isinstance(state, dict) or set(state) != {"vectors", "generator", "calls"}:
            raise ValueError("state must be a SpectralMonitor.state_dict()")
        unknown = sorted({layer for layer, _, _ in state["vectors"]} - set(self.matrices))
        if unknown:
            raise ValueError(f"state has warm starts of layers this monitor lacks: {unknown}")
        self._v = {(layer, kind): v.clone() for layer, kind, v in state["vectors"]}
        self.generator.set_state(state["generator"])
        self._calls = int(state["calls"])

    @torch.no_grad()
    def log(self, step: int) -> list[dict]:
        """Measure every layer now and append the rows (also returned) to the log."""
        check_positive_int("step", step, minimum=0)
        rows = []
        for name, matrix in self.matrices.items():
            w = matrix.read()
            fan_out, fan_in = w.shape
            if not torch.isfinite(w).all():  # training diverged: there is no norm to log
                err = TrainingDivergedError(step, math.nan)
                err.add_note(f"SpectralMonitor: layer {name!r} has NaN or Inf weights")
                raise err
            mult = abs(self.multiplier[name])
            scale = math.sqrt(fan_out / fan_in)
            sigma_w = mult * self._sigma((name, "w"), w)
            sigma_dw = mult * self._sigma((name, "dw"), w - self.w0[name])
            rows.append(
                dict(
                    step=step,
                    layer=name,
                    fan_in=fan_in,
                    fan_out=fan_out,
                    scale=scale,
                    sigma_w=sigma_w,
                    sigma_dw=sigma_dw,
                    rel_w=sigma_w / scale,
                    rel_dw=sigma_dw / scale,
                )
            )
        self.records.extend(rows)
        return rows

    def __call__(self, step: int | None = None) -> bool:
        """Log if `step` (by default the number of calls so far) is a multiple of `every`."""
        step = self._calls if step is None else check_positive_int("step", step, minimum=0)
        self._calls += 1
        if step % self.every:
            return False
        self.log(step)
        return True

    def attach(self, optimizer: torch.optim.Optimizer):
        """Log at step 0 now, then after every optimizer step (steps counted from 1).

        Returns the hook handle; `handle.remove()` stops logging.
        """
        self(0)
        return optimizer.register_step_post_hook(lambda opt, args, kwargs: self())

    def dataframe(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(
            self.records,
            columns=[
                "step",
                "layer",
                "fan_in",
                "fan_out",
                "scale",
                "sigma_w",
                "sigma_dw",
                "rel_w",
                "rel_dw",
            ],
        )


def plot_spectral(df: pd.DataFrame, x: str = "width", *, axes=None, title: str | None = None):
    """Two log-log panels, rel_w and rel_dw against `x` ("width" or "step"), one line per layer.

    `df` is a `SpectralMonitor.dataframe()`, or several concatenated with a `width` column
    (the seed mean is plotted). Returns the figure.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if x not in df.columns:
        raise ValueError(f"x must be a column of df ('width' or 'step'), got {x!r}")
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.0))
    fig = axes[0].figure
    layers = list(dict.fromkeys(df["layer"]))
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(layers), 1)))
    for ax, q, label in zip(axes, ["rel_w", "rel_dw"], ["||W||", "||W - W0||"], strict=True):
        for layer, color in zip(layers, colors, strict=True):
            s = df[df["layer"] == layer].groupby(x)[q].mean()
            s = s[s > 0]
            ax.plot(s.index, s.to_numpy(), marker="o", ms=3, color=color, label=layer)
        if x == "width":
            ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel(x)
        ax.set_title(f"{label} / sqrt(fan_out / fan_in)")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
