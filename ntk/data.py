"""Offline data sets: the tasks every chapter trains on, all deterministic in their seed.

`make_low_dim_task` (a multi-index model on the sphere), `load_digits_task` (scikit-learn's
8x8 digits), `sphere_task` (a smooth target on the sphere), `toy_regression_task` (1-D
regression) and `point_on_sphere` (one input of fixed norm).

`make_low_dim_task` draws a (multi-)index model: inputs x in R^d, uniform on the sphere of
radius sqrt(d) (or x ~ N(0, I_d)), and a target that depends on x only through r << d
projections <u_j, x> on random orthonormal directions u_j,

    y = (1 / sqrt(r)) * sum_j He_k(<u_j, x>) / sqrt(k!),

with He_k the probabilists' Hermite polynomial (so each term has unit variance when
<u_j, x> ~ N(0, 1)). Any fixed rotation-invariant kernel (NNGP, NTK) learns a degree-k
polynomial on the sphere only from n ~ d^k samples (Ghorbani et al. 2021, arXiv:1904.12191),
while a network that learns the directions u_j needs far fewer (Ba et al. 2022,
arXiv:2205.01445; Damian et al. 2022, arXiv:2206.15144): the task separates feature learning
from the kernel regime.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ntk._checks import (
    check_bool,
    check_callable,
    check_choice,
    check_float_dtype,
    check_fraction,
    check_nonnegative,
    check_positive_int,
    check_real,
)

# The recurrence costs one pass per degree; degrees beyond this learn nothing on any data set
MAX_HERMITE_DEGREE = 10_000


@dataclass
class Task:
    """Train/test tensors; unpacks as `x_train, y_train, x_test, y_test = task`."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    info: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.x_train, self.y_train, self.x_test, self.y_test))


def hermite(z: Tensor, degree: int) -> Tensor:
    """Normalized probabilists' Hermite polynomial h_k(z) = He_k(z) / sqrt(k!) (unit variance).

    From the three-term recurrence He_{k+1}(z) = z He_k(z) - k He_{k-1}(z), He_0 = 1, He_1 = z,
    for which E[He_j(g) He_k(g)] = k! [j = k] when g ~ N(0, 1) (e.g. Abramowitz & Stegun 22.2),
    run on the normalized polynomials, h_{k+1} = (z h_k - sqrt(k) h_{k-1}) / sqrt(k + 1), so
    that neither He_k nor k! overflows at high degree.
    """
    check_positive_int("degree", degree, minimum=0, maximum=MAX_HERMITE_DEGREE)
    if not isinstance(z, Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    check_real("z", z)
    prev, cur = torch.ones_like(z), z
    if degree == 0:
        return prev
    for k in range(1, degree):
        prev, cur = cur, (z * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)
    return cur


def make_low_dim_task(
    n_train: int = 512,
    n_test: int = 2048,
    dim: int = 32,
    *,
    degree: int = 2,
    n_directions: int = 1,
    link: Callable[[Tensor], Tensor] | None = None,
    noise: float = 0.0,
    input_dist: str = "sphere",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Task:
    """A multi-index regression task whose target lives on `n_directions` hidden directions.

    Args:
        n_train, n_test: numbers of samples.
        dim: input dimension d.
        degree: k, degree of the Hermite link (k=2: y = <u, x>^2 - 1 up to scale).
        n_directions: r orthonormal directions u_1..u_r (r <= d).
        link: a callable g replacing He_k / sqrt(k!) (applied to each projection).
        noise: std of Gaussian label noise added to the training targets only.
        input_dist: "sphere" (uniform, radius sqrt(d)) or "gaussian" (N(0, I_d)); both give
            E[x x^T] = I_d, so each projection has unit variance.
        seed: everything is a deterministic function of the seed (train rows do not depend on
            n_test).

    Returns:
        Task with x (N, d), y (N, 1) and info = {"directions": (d, r) tensor, ...}.
    """
    check_positive_int("n_train", n_train)
    check_positive_int("n_test", n_test)
    check_positive_int("dim", dim)
    check_positive_int("degree", degree, minimum=0, maximum=MAX_HERMITE_DEGREE)
    check_positive_int("n_directions", n_directions)
    if n_directions > dim:
        raise ValueError(f"n_directions must be <= dim={dim}, got {n_directions}")
    check_nonnegative("noise", noise)
    check_choice("input_dist", input_dist, ("sphere", "gaussian"))
    check_positive_int("seed", seed, minimum=0)
    check_float_dtype("dtype", dtype)
    if link is not None:
        check_callable("link", link, "(tensor -> tensor) or None")
    gen = torch.Generator().manual_seed(seed)
    g = link if link is not None else (lambda z: hermite(z, degree))

    # Directions: orthonormal columns from the QR of a Gaussian matrix, (d, r).
    u, _ = torch.linalg.qr(torch.randn(dim, n_directions, generator=gen, dtype=torch.float64))

    def sample(n: int) -> tuple[Tensor, Tensor]:
        x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
        if input_dist == "sphere":
            x = x * (math.sqrt(dim) / torch.linalg.vector_norm(x, dim=1, keepdim=True))
        z = x @ u  # (n, r)
        gz = g(z)
        if not isinstance(gz, Tensor) or gz.shape != z.shape:
            got = tuple(gz.shape) if isinstance(gz, Tensor) else type(gz).__name__
            raise ValueError(
                f"link must act elementwise: projections of shape {tuple(z.shape)} gave {got}"
            )
        if not torch.isfinite(gz).all():
            raise ValueError("link returned NaN or Inf on the projections <u_j, x>")
        y = gz.sum(dim=1, keepdim=True) / math.sqrt(n_directions)  # (n, 1)
        return x, y

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    y_train = y_train + noise * torch.randn(n_train, 1, generator=gen, dtype=torch.float64)
    info = {"directions": u.to(dtype), "degree": degree, "dim": dim, "noise": noise}
    info["input_dist"] = input_dist
    return Task(x_train.to(dtype), y_train.to(dtype), x_test.to(dtype), y_test.to(dtype), info)


def load_digits_task(
    test_fraction: float = 0.25,
    *,
    one_hot: bool = False,
    standardize: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Task:
    """scikit-learn's 8x8 digits (1797 images, 10 classes; shipped with sklearn, no download).

    Split stratified and deterministic in `seed`. Standardization uses training-set statistics
    per pixel (constant pixels are left at 0), so ||x||^2 / 64 is about 1 as for the synthetic
    task. Targets: labels (N,) int64, or one-hot (N, 10) in `dtype` if `one_hot`.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    check_fraction("test_fraction", test_fraction)
    check_positive_int("seed", seed, minimum=0)
    check_float_dtype("dtype", dtype)
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    if standardize:
        mean, std = x_tr.mean(0), x_tr.std(0)
        std = np.where(std > 0, std, 1.0)
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    else:
        x_tr, x_te = x_tr / 16.0, x_te / 16.0  # pixel values are 0..16

    def targets(labels: np.ndarray) -> Tensor:
        t = torch.as_tensor(labels, dtype=torch.long)
        return torch.nn.functional.one_hot(t, 10).to(dtype) if one_hot else t

    info = {"n_classes": 10, "standardize": standardize, "one_hot": one_hot}
    return Task(
        torch.as_tensor(x_tr, dtype=dtype),
        targets(y_tr),
        torch.as_tensor(x_te, dtype=dtype),
        targets(y_te),
        info,
    )


def digits(one_hot: bool = False) -> Task:
    """`load_digits_task(one_hot=one_hot)` with its defaults, made once per process (the
    chapters' shared, deterministic digits; do not modify the returned tensors)."""
    return _digits(check_bool("one_hot", one_hot))  # checked first: the cache hashes 1 as True


@functools.cache
def _digits(one_hot: bool) -> Task:
    return load_digits_task(one_hot=one_hot)


def point_on_sphere(in_features: int, seed: int = 0) -> Tensor:
    """One input with |x|^2 = in_features, so K^1(x, x) = weight_std^2 + bias_std^2: (1, d)."""
    check_positive_int("in_features", in_features)
    check_positive_int("seed", seed, minimum=0)
    x = torch.randn(1, in_features, generator=torch.Generator().manual_seed(seed))
    return x * math.sqrt(in_features) / x.norm()


def sphere_task(
    n_train: int = 16, n_test: int = 64, in_features: int = 4, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs uniform on the sphere of radius sqrt(d); target y = sin(2 <u, x>) + (<v, x>^2 - 1)/2
    for random unit u, v (smooth but not in the NTK's top eigenspace only). Returns
    x_train (N, d), y_train (N,), x_test (M, d), all float64."""
    check_positive_int("n_train", n_train)
    check_positive_int("n_test", n_test)
    check_positive_int("in_features", in_features)
    check_positive_int("seed", seed, minimum=0)
    gen = torch.Generator().manual_seed(seed)

    def sphere(n: int) -> Tensor:
        x = torch.randn(n, in_features, generator=gen, dtype=torch.float64)
        return x * math.sqrt(in_features) / x.norm(dim=1, keepdim=True)

    u, v = sphere(2) / math.sqrt(in_features)
    x_train, x_test = sphere(n_train), sphere(n_test)

    def target(x: Tensor) -> Tensor:
        return torch.sin(2 * x @ u) + ((x @ v) ** 2 - 1) / 2

    return x_train, target(x_train), x_test


def toy_regression_task(
    n_train: int = 10, n_test: int = 101, noise: float = 0.1, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """A 1-D task: y = sin(2x) + noise at n_train points in [-2, 2]; test grid on [-3, 3].

    Returns x_train (N, 1) sorted, y_train (N,), x_test (M, 1), all float64."""
    check_positive_int("n_train", n_train)
    check_positive_int("n_test", n_test)
    check_nonnegative("noise", noise)
    check_positive_int("seed", seed, minimum=0)
    gen = torch.Generator().manual_seed(seed)
    x_train = (4 * torch.rand(n_train, 1, generator=gen, dtype=torch.float64) - 2).sort(0)[0]
    y_train = torch.sin(2 * x_train[:, 0]) + noise * torch.randn(
        n_train, generator=gen, dtype=torch.float64
    )
    x_test = torch.linspace(-3, 3, n_test, dtype=torch.float64)[:, None]
    return x_train, y_train, x_test
