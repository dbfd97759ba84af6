"""Predictions from kernels: GP posterior, gradient-flow ensembles, linearized networks.

All functions take kernel matrices (torch tensors, computed in float64) and follow the
conventions of `neural_tangents.predict` (NT), so results agree with it to float precision:

* Kernels over several outputs are "traced": an (N1, N2) kernel stands for Θ ⊗ I_K, the same
  kernel for every one of the K output channels (NT's default `trace_axes=(-1,)`).
  `gradient_descent_mse` also takes full (N1, N2, K, K) kernels (NT's `trace_axes=()`).
* Loss and time. Gradient descent runs on L(θ) = 1/(2 N K) Σ_{i,k} (f_k(x_i) - y_ik)², the
  mean over all N K train targets (NT's `0.5 * mean((f - y)**2)`), as gradient flow
  dθ/dt = -η ∇L. In function space this is df/dt = -(η / (N K)) Θ (f - y), so t counts
  gradient-descent steps of size η and only the product τ = η t / (N K) matters.
* `diag_reg` is relative: the train kernel becomes K + diag_reg · (tr K / N) I, i.e. scaled by
  the mean of its diagonal (NT's default `diag_reg_absolute_scale=False`); pass
  `diag_reg_absolute_scale=True` to add diag_reg · I instead.
* t = None (or t = inf) is the end of training, computed with a Cholesky solve; finite times use
  one eigendecomposition Θ = V diag(λ) V^T for all times, with the stable
  (1 - e^{-λτ}) / λ = -expm1(-λτ) / λ. Eigenvalues below eigh's round-off (N eps max λ) count
  as 0, and the prediction lives on the kernel's range: a singular train kernel (duplicate
  train points) gives a finite answer at every finite t, which tends to the pseudo-inverse
  solution Θ_*X Θ^+ Y as t grows (at duplicate points, the mean of their targets). At t = inf
  with diag_reg = 0 a singular kernel raises a ValueError (the inverse the Cholesky solve
  needs does not exist): pass diag_reg > 0 or a large finite t.

References:
  Rasmussen & Williams, "Gaussian Processes for Machine Learning" (2006), Alg. 2.1.
  Lee et al., "Deep Neural Networks as Gaussian Processes" (2018), arXiv:1711.00165.
  Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
  Descent" (2019), arXiv:1902.06720, eqs. 9-16.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ntk._checks import (
    as_tensor,
    check_bool,
    check_inputs,
    check_nonnegative,
    check_positive,
)
from ntk.kernels.linearized import LinearizedModel

__all__ = [
    "Prediction",
    "gp_posterior",
    "gradient_descent_mse_ensemble",
    "gradient_descent_mse",
    "LinearizedModel",
]

DTYPE = torch.float64


class Prediction(NamedTuple):
    """Mean (…, M, K) and covariance (…, M, M) of Gaussian outputs; cov is None if not asked.

    With a 1-D tensor of times both carry a leading time axis of length T.
    """

    mean: Tensor
    cov: Tensor | None


# ----------------------------------------------------------------------------- checks


def _matrix(name: str, k: object, shape: tuple[int | None, int | None]) -> Tensor:
    """A finite float64 matrix whose dims equal `shape` where given."""
    k = check_inputs(name, k, ndim=2, dtype=DTYPE)
    for dim, (got, want) in enumerate(zip(k.shape, shape, strict=True)):
        if want is not None and got != want:
            raise ValueError(
                f"{name} must have shape {_shape_str(shape)}, got {tuple(k.shape)} "
                f"(dimension {dim} is {got}, expected {want})"
            )
    return k


def _shape_str(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"


def _train_kernel(name: str, k: object) -> Tensor:
    """A square, symmetric, finite float64 (N, N) kernel."""
    k = check_inputs(name, k, ndim=2, dtype=DTYPE)
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) train kernel, got {tuple(k.shape)}")
    # loose tolerance: float32 empirical kernels are symmetric only to ~1e-7
    scale = k.abs().max().clamp_min(torch.finfo(DTYPE).tiny)
    if (k - k.T).abs().max() > 1e-5 * scale:
        raise ValueError(f"{name} must be a symmetric train kernel (N, N); it is not symmetric")
    return 0.5 * (k + k.T)


def _targets(name: str, y: object, n: int) -> tuple[Tensor, bool]:
    """Targets as (N, K) float64, and whether they came as a vector (N,)."""
    y = as_tensor(name, y)
    if y.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (N,) or (N, K), got {tuple(y.shape)}")
    vector = y.ndim == 1
    y = check_inputs(name, y[:, None] if vector else y, ndim=2, dtype=DTYPE)
    if y.shape[0] != n:
        raise ValueError(
            f"{name} must have N = {n} rows (as many as the train kernel), got {y.shape[0]}"
        )
    return y, vector


def _times(t: object) -> tuple[Tensor, bool]:
    """Times as a 1-D float64 tensor (T,) of values in [0, inf], and whether t was a scalar."""
    if t is None:
        return torch.tensor([math.inf], dtype=DTYPE), True
    if isinstance(t, bool):
        raise TypeError("t must be None, a number or a 1-D tensor of times, got bool")
    try:
        t = torch.as_tensor(t, dtype=DTYPE)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"t must be None, a number or a 1-D tensor of times, got {type(t).__name__}"
        ) from err
    if t.ndim > 1:
        raise ValueError(f"t must be a scalar or a 1-D tensor of times, got shape {tuple(t.shape)}")
    if torch.isnan(t).any() or (t < 0).any():
        raise ValueError("t must contain times >= 0 (inf allowed, NaN not)")
    return t.reshape(-1), t.ndim == 0


def _regularize(k: Tensor, diag_reg: float, absolute: bool) -> Tensor:
    """K + diag_reg * I, with diag_reg scaled by the mean diagonal tr(K)/N unless `absolute`."""
    diag_reg = check_nonnegative("diag_reg", diag_reg)
    check_bool("diag_reg_absolute_scale", absolute)
    if diag_reg == 0:
        return k
    scale = 1.0 if absolute else torch.diagonal(k).mean()
    return k + diag_reg * scale * torch.eye(k.shape[0], dtype=k.dtype, device=k.device)


def _cholesky(name: str, k: Tensor, diag_reg: float) -> Tensor:
    """Lower Cholesky factor of the (regularized) train kernel, or a clear error."""
    chol, info = torch.linalg.cholesky_ex(k)
    if info.item() != 0:
        raise ValueError(
            f"{name} (after adding the diag_reg = {diag_reg} ridge) is not positive "
            f"definite (Cholesky failed at row {info.item()}): the t = inf / posterior prediction "
            "needs its inverse. Remove duplicate train points, use a finite t, or pass diag_reg > 0."
        )
    return chol


# ----------------------------------------------------------------------------- GP posterior


def gp_posterior(
    k_train: Tensor,
    k_test_train: Tensor,
    y_train: Tensor,
    k_test: Tensor | None = None,
    *,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
) -> Prediction:
    """Exact GP posterior (Bayesian inference with an infinitely wide network, Lee et al. 2018).

        mean = K_*X (K + σ² I)^{-1} Y,    cov = K_** - K_*X (K + σ² I)^{-1} K_X*

    with σ² = diag_reg · tr(K)/N (or diag_reg if `diag_reg_absolute_scale`); Cholesky solves
    (Rasmussen & Williams Alg. 2.1), as `nt.predict.gp_inference(...)(get="nngp")`.

    Args:
      k_train: (N, N) NNGP kernel on train inputs; must be positive definite after regularization.
      k_test_train: (M, N) kernel between test and train inputs.
      y_train: (N,) or (N, K) train targets.
      k_test: (M, M) test kernel; the covariance is returned only if it is given.
      diag_reg: observation noise, relative to the mean diagonal of k_train (>= 0).

    Returns:
      Prediction(mean (M,) or (M, K), cov (M, M) or None).
    """
    k = _train_kernel("k_train", k_train)
    n = k.shape[0]
    y, vector = _targets("y_train", y_train, n)
    k_tx = _matrix("k_test_train", k_test_train, (None, n))
    m = k_tx.shape[0]
    chol = _cholesky("k_train", _regularize(k, diag_reg, diag_reg_absolute_scale), diag_reg)

    mean = k_tx @ torch.cholesky_solve(y, chol)  # (M, K)
    cov = None
    if k_test is not None:
        k_tt = _matrix("k_test", k_test, (m, m))
        half = torch.linalg.solve_triangular(chol, k_tx.T, upper=False)  # L^{-1} K_X*: (N, M)
        cov = k_tt - half.T @ half
        cov = 0.5 * (cov + cov.T)
    return Prediction(mean[:, 0] if vector else mean, cov)


# ----------------------------------------------------------------------------- gradient flow


class _GradientFlow:
    """The linear map A(t) taking train residuals to output changes under gradient flow.

    For test inputs A(t) = Θ_*X Θ^{-1} (I - e^{-Θτ}) (Lee et al. 2019, eq. 9), and
    A(inf) = Θ_*X Θ^{-1}; on the train set (Θ_*X = None) A(t) = I - e^{-Θτ}, A(inf) = I.
    Finite times share one eigendecomposition of Θ (eigenvalues clipped at 0, like NT, since
    negative ones are round-off); infinite ones use a Cholesky factor.
    """

    def __init__(
        self, theta: Tensor, theta_tx: Tensor | None, tau: Tensor, diag_reg: float, eps: float
    ):
        self.theta_tx, self.tau = theta_tx, tau  # (M, N) or None; (T,)
        self.finite = torch.isfinite(tau)
        self.n = theta.shape[0]
        if self.finite.any():
            evals, self.evecs = torch.linalg.eigh(theta)  # (N,), (N, N)
            lam = _resolved_eigenvalues(evals, eps)[None, :]  # (1, N)
            t = tau[self.finite][:, None]  # (Tf, 1)
            decay = torch.expm1(-lam * t)  # e^{-λτ} - 1: (Tf, N)
            if theta_tx is None:
                self.coef = -decay  # 1 - e^{-λτ}; 0 on the null space
                self.left = self.evecs
            else:
                # (1 - e^{-λτ}) / λ on the kernel's range. On its null space Θ v = 0 implies
                # Θ_*X v = 0 (both are Gram matrices of the same features), so those directions
                # contribute nothing at any t; giving them the exact coefficient τ would
                # multiply the round-off in Θ_*X v by τ, an error growing without bound in t.
                safe = torch.where(lam > 0, lam, torch.ones_like(lam))
                self.coef = torch.where(lam > 0, -decay / safe, torch.zeros_like(decay))
                self.left = theta_tx @ self.evecs  # (M, N)
        if theta_tx is not None and not self.finite.all():
            self.chol = _cholesky("ntk_train", theta, diag_reg)

    def apply(self, rhs: Tensor) -> Tensor:
        """A(t) @ rhs for every time: (N, K) -> (T, M, K)."""
        m = self.n if self.theta_tx is None else self.theta_tx.shape[0]
        out = rhs.new_empty((len(self.tau), m, rhs.shape[1]))
        if self.finite.any():
            proj = self.evecs.T @ rhs  # (N, K)
            out[self.finite] = self.left @ (self.coef[:, :, None] * proj)
        if not self.finite.all():
            out[~self.finite] = (
                rhs
                if self.theta_tx is None
                else self.theta_tx @ torch.cholesky_solve(rhs, self.chol)
            )
        return out

    def matrix(self) -> Tensor:
        """A(t) for every time: (T, M, N)."""
        return self.apply(torch.eye(self.n, dtype=DTYPE))


def _precision(k: object) -> float:
    """The relative precision of a kernel as given: float32 kernels (empirical NTKs) carry
    float32 round-off even after the cast to float64."""
    if isinstance(k, Tensor) and k.is_floating_point():
        return max(torch.finfo(k.dtype).eps, torch.finfo(DTYPE).eps)
    return torch.finfo(DTYPE).eps


def _resolved_eigenvalues(evals: Tensor, eps: float) -> Tensor:
    """Eigenvalues of a PSD train kernel with those below its round-off set to exactly 0.

    Eigenvalues of a kernel known to relative precision eps are accurate to about
    N eps max|λ| (the rank cutoff of numpy's matrix_rank), so smaller ones, negative ones
    included, are zero within round-off. A clearly negative eigenvalue means the matrix is not
    a kernel (gradient flow on it would grow like e^{|λ| τ}): that is an error, not something
    to clip.
    """
    top = evals.abs().max()
    cutoff = top * evals.numel() * eps
    # 1e-5 relative: float32 empirical kernels are PSD only to ~1e-7 of their largest eigenvalue
    if evals.min() < -max(float(cutoff), 1e-5 * float(top)):
        raise ValueError(
            f"ntk_train is not positive semi-definite (smallest eigenvalue {float(evals.min()):.3g}, "
            f"largest {float(evals.max()):.3g}): a kernel matrix must be; check how it was built"
        )
    return torch.where(evals > cutoff, evals, torch.zeros_like(evals))


def gradient_descent_mse_ensemble(
    ntk_train: Tensor,
    ntk_test_train: Tensor | None,
    y_train: Tensor,
    t: float | Tensor | None = None,
    *,
    nngp_train: Tensor | None = None,
    nngp_test_train: Tensor | None = None,
    nngp_test: Tensor | None = None,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
) -> Prediction:
    """Outputs of an infinite ensemble of infinitely wide networks trained by gradient flow on MSE.

    At infinite width f(x; θ_t) is Gaussian with (Lee et al. 2019, eqs. 15-16)

        mean(t) = Θ_*X Θ^{-1} (I - e^{-Θτ}) Y
        cov(t)  = K_** + A K A^T - (A K_X* + K_*X A^T),   A = Θ_*X Θ^{-1} (I - e^{-Θτ}),

    where K is the NNGP kernel (the covariance of f at initialization), Θ the NTK (on train
    inputs X and test inputs *), Θ = Θ_XX + diag_reg (see module docstring) and
    τ = learning_rate · t / (N K): gradient flow on the mean squared error over all N K targets,
    t counting steps of size learning_rate (as `nt.predict.gradient_descent_mse_ensemble`).
    At t = 0 this is the prior N(0, K_**); at t = inf the mean is the NTK regression Θ_*X Θ^{-1} Y.
    Passing NNGP kernels as ntk_* gives NT's get="nngp" (only the readout layer trained) at
    diag_reg = 0; with diag_reg > 0 NT's nngp covariance also regularizes the K in A K A^T, while
    here cov is always the exact covariance of the regularized linear dynamics.

    Args:
      ntk_train: (N, N) NTK on train inputs.
      ntk_test_train: (M, N) NTK between test and train inputs, or None for the train set
        itself (then mean = (I - e^{-Θτ}) Y and cov = e^{-Θτ} K e^{-Θτ}, as NT's x_test=None).
      y_train: (N,) or (N, K) targets.
      t: None or inf (end of training), a time >= 0, or a 1-D tensor of times (T,).
      nngp_train, nngp_test_train, nngp_test: (N, N), (M, N), (M, M) NNGP kernels; give all
        three (only nngp_train on the train set) to get the covariance.
      learning_rate: η > 0.
      diag_reg: ridge added to the NTK on train inputs, relative to its mean diagonal (>= 0).

    Returns:
      Prediction(mean (M, K) or (M,), cov (M, M) or None), with a leading (T,) axis if t is 1-D.
    """
    theta = _train_kernel("ntk_train", ntk_train)
    n = theta.shape[0]
    y, vector = _targets("y_train", y_train, n)
    theta_tx = (
        None if ntk_test_train is None else _matrix("ntk_test_train", ntk_test_train, (None, n))
    )
    m = n if theta_tx is None else theta_tx.shape[0]
    times, scalar = _times(t)
    lr = check_positive("learning_rate", learning_rate)

    given = {"nngp_train": nngp_train, "nngp_test_train": nngp_test_train, "nngp_test": nngp_test}
    needed = ["nngp_train"] if theta_tx is None else list(given)
    extra = [k for k, v in given.items() if v is not None and k not in needed]
    if extra:
        raise ValueError(
            f"{', '.join(extra)} must be None when ntk_test_train is None (train-set predictions)"
        )
    present = [k for k in needed if given[k] is not None]
    if present and len(present) != len(needed):
        missing = [k for k in needed if given[k] is None]
        raise ValueError(f"for the covariance pass all of {needed}; missing {missing}")

    tau = times * lr / y.numel()  # τ = η t / (N K)
    theta = _regularize(theta, diag_reg, diag_reg_absolute_scale)
    flow = _GradientFlow(theta, theta_tx, tau, diag_reg, _precision(ntk_train))
    mean = flow.apply(y)  # (T, M, K)

    cov = None
    if present:
        k = _train_kernel("nngp_train", nngp_train)
        if k.shape[0] != n:
            raise ValueError(
                f"nngp_train must have shape ({n}, {n}) like ntk_train, got {tuple(k.shape)}"
            )
        a = flow.matrix()  # (T, M, N)
        if theta_tx is None:
            # residual map e^{-Θτ} = I - A; computed directly so cov(inf) = 0 exactly
            e = torch.eye(n, dtype=DTYPE) - a
            cov = e @ k @ e.transpose(-1, -2)
        else:
            k_tx = _matrix("nngp_test_train", nngp_test_train, (m, n))
            k_tt = _matrix("nngp_test", nngp_test, (m, m))
            cross = a @ k_tx.T  # A K_X*: (T, M, M)
            cov = k_tt + a @ k @ a.transpose(-1, -2) - cross - cross.transpose(-1, -2)
        cov = 0.5 * (cov + cov.transpose(-1, -2))

    if vector:
        mean = mean[..., 0]
    if scalar:
        mean = mean[0]
        cov = None if cov is None else cov[0]
    return Prediction(mean, cov)


def _full_kernel(name: str, k: Tensor, rows: int | None, n: int, out: int) -> Tensor:
    """A full (R, N, K, K) kernel as the (R K, N K) matrix over (input, output) pairs."""
    want = (rows, n, out, out)
    if k.ndim != 4 or any(w is not None and g != w for g, w in zip(k.shape, want, strict=True)):
        raise ValueError(
            f"{name} must be a full kernel of shape {_shape_str(want)}, got {tuple(k.shape)}"
        )
    k = check_inputs(name, k, ndim=4, dtype=DTYPE)
    return k.permute(0, 2, 1, 3).reshape(k.shape[0] * out, n * out)


def _outputs(name: str, f: object, rows: int, out: int, vector: bool) -> Tensor:
    """Network outputs shaped like the targets: (R,) if `vector` else (R, K); returned as (R, K)."""
    f = as_tensor(name, f)
    if vector:
        if f.ndim != 1:
            raise ValueError(f"{name} must have shape ({rows},) like y_train, got {tuple(f.shape)}")
        f = f[:, None]
    return _matrix(name, f, (rows, out))


def gradient_descent_mse(
    ntk_train: Tensor,
    ntk_test_train: Tensor | None,
    y_train: Tensor,
    f0_train: Tensor,
    f0_test: Tensor | None,
    t: float | Tensor | None = None,
    *,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
) -> Tensor:
    """Outputs of one linearized network trained by gradient flow on MSE, in closed form.

    A network linearized around its initialization θ_0 (see `LinearizedModel`) has the constant
    tangent kernel Θ (its empirical NTK), and gradient flow on MSE solves to (Lee et al. 2019,
    eqs. 10-11)

        f_t(X) = Y + e^{-Θτ} (f_0(X) - Y)
        f_t(*) = f_0(*) - Θ_*X Θ^{-1} (I - e^{-Θτ}) (f_0(X) - Y),     τ = η t / (N K),

    the same conventions as `nt.predict.gradient_descent_mse(...)(t, f0_train, f0_test, ...)`
    (traced kernels: NT's default trace_axes=(-1,); full kernels: trace_axes=()).

    Args:
      ntk_train: (N, N) traced or (N, N, K, K) full NTK on train inputs.
      ntk_test_train: (M, N) or (M, N, K, K) NTK between test and train inputs; None (with
        f0_test None) to get the train-set outputs f_t(X) instead.
      y_train: (N, K) or (N,) targets; f0_train (N, K) or (N,) and f0_test (M, K) or (M,) the
        network outputs at t = 0, shaped like y_train.
      t: None or inf (end of training), a time >= 0, or a 1-D tensor of times (T,).
      learning_rate: η > 0; diag_reg: relative ridge on ntk_train (>= 0).

    Returns:
      Test outputs (M, K) (train outputs (N, K) if ntk_test_train is None), shaped like y_train
      in the last axis, with a leading (T,) axis if t is 1-D.
    """
    if (ntk_test_train is None) != (f0_test is None):
        raise ValueError(
            "ntk_test_train and f0_test must both be given (test outputs) or both be None (train outputs)"
        )
    ntk_train = as_tensor("ntk_train", ntk_train)
    full = ntk_train.ndim == 4
    if full:
        n, out = ntk_train.shape[0], ntk_train.shape[2]
        theta = _train_kernel("ntk_train", _full_kernel("ntk_train", ntk_train, n, n, out))
    else:
        theta = _train_kernel("ntk_train", ntk_train)
        n = theta.shape[0]
    y, vector = _targets("y_train", y_train, n)
    if full and (vector or y.shape[1] != out):
        raise ValueError(
            f"y_train must have shape ({n}, {out}) to match the full ntk_train, got {tuple(y_train.shape)}"
        )
    out = y.shape[1]
    f0 = _outputs("f0_train", f0_train, n, out, vector)  # (N, K)
    theta_tx = None
    if ntk_test_train is not None:
        ntk_test_train = as_tensor("ntk_test_train", ntk_test_train)
        if full:
            theta_tx = _full_kernel("ntk_test_train", ntk_test_train, None, n, out)  # (M K, N K)
            m = ntk_test_train.shape[0]
        else:
            theta_tx = _matrix("ntk_test_train", ntk_test_train, (None, n))  # (M, N)
            m = theta_tx.shape[0]
        f0 = _outputs("f0_test", f0_test, m, out, vector)  # (M, K)
    times, scalar = _times(t)
    lr = check_positive("learning_rate", learning_rate)

    tau = times * lr / y.numel()
    theta = _regularize(theta, diag_reg, diag_reg_absolute_scale)
    flow = _GradientFlow(theta, theta_tx, tau, diag_reg, _precision(ntk_train))
    residual = _outputs("f0_train", f0_train, n, out, vector) - y  # (N, K)
    if full:  # the output index is part of the kernel's: (N, K) -> (N K, 1) -> (T, M, K)
        change = flow.apply(residual.reshape(-1, 1)).reshape(len(times), -1, out)
    else:
        change = flow.apply(residual)  # (T, M, K)
    fx = f0 - change
    if vector:
        fx = fx[..., 0]
    return fx[0] if scalar else fx
