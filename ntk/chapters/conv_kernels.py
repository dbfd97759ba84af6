"""Chapter 16 experiments: kernels of convolutional networks, and what pooling buys.

Each function runs one experiment and returns data; `notebooks/16_conv_kernels.py` plots,
summarizes and asserts. Every network is one `ntk.kernels.stax` description, read twice: its
analytic NNGP/NTK (float64) and its finite `nn.Module`.

Theory in brief. A convolution shares weights across positions, so at infinite width the
pre-activation covariance of two images is a position-position tensor Sigma(x, x')(p, p'), and
a 3x3 convolution averages it over the nine filter taps, the same tap at both positions
(Novak et al. 2019, arXiv:1810.05148; Garriga-Alonso et al. 2019, arXiv:1808.05587). The
readout decides what survives: after Flatten the kernel is the mean over positions of
Sigma(p, p), which compares x at p with x' at the SAME p (no translation invariance: the
CNN-GP "without pooling"); after global average pooling it is the mean over ALL pairs (p, p'),
so a shifted copy of an image matches its original wherever the content moved (Novak et al.
2019, sec. 3.2; Arora et al. 2019, arXiv:1904.11955, CNTK-GAP). The NTK follows the same
recursion as the MLP's (chapter 02) at every position pair.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pandas as pd
import torch

from ntk._checks import check_positive_int
from ntk.chapters.neural_tangent_kernel import discrete_gd_kernels
from ntk.kernels.analytic import Kernels, MLPKernel
from ntk.kernels.predict import gp_posterior, gradient_descent_mse_ensemble
from ntk.kernels.stax import (
    Activation,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Layer,
    Relu,
    serial,
)
from ntk.training import train

SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (rows, columns): one pixel, four directions
RIDGE = 1e-4  # kernel regression's ridge, relative to the kernel's mean diagonal
N_CLASSES = 10
PAIRS = 25  # test images whose kernel with their own shifted copy is measured


@dataclass(frozen=True)
class DigitImages:
    """sklearn's 8x8 digits as (N, 1, 8, 8) float64 images: the pixels (0..16) minus their
    mean over the training set, divided by the training set's root mean square, one scalar
    each (the input kernel's diagonal is ~1, and the background is the same constant
    everywhere). The per-pixel standardization of `ntk.data.load_digits_task` is not used: it
    gives every position its own scale, which a translation does not preserve.

    `x_shifted[i]` is `x_test[i]` moved by one pixel in direction SHIFTS[i % 4], what enters the
    frame filled with the background (an exact translation of the digit on its background).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor  # labels (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_shifted: torch.Tensor

    def targets(self, n: int | None = None) -> torch.Tensor:
        """One-hot targets of the first n training images, centered (entries 0.9, -0.1)."""
        y = self.y_train[:n]
        return torch.nn.functional.one_hot(y, N_CLASSES).double() - 1.0 / N_CLASSES


def shift(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Images (N, C, H, W) moved by (rows, cols) pixels; what leaves the frame is lost, what
    enters is zero (a translation, not a roll)."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    src_r = slice(max(0, -rows), h - max(0, rows))
    dst_r = slice(max(0, rows), h - max(0, -rows))
    src_c = slice(max(0, -cols), w - max(0, cols))
    dst_c = slice(max(0, cols), w - max(0, -cols))
    out[..., dst_r, dst_c] = x[..., src_r, src_c]
    return out


def digit_images(n_train: int = 160, n_test: int = 100, seed: int = 0) -> DigitImages:
    """A class-stratified random split of the 1797 digits (shipped with sklearn, offline)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    # stratified: at least one image per class on each side
    check_positive_int("n_train", n_train, minimum=N_CLASSES)
    check_positive_int("n_test", n_test, minimum=N_CLASSES)
    x, y = load_digits(return_X_y=True)
    if n_train + n_test > len(y):
        raise ValueError(f"n_train + n_test must be at most {len(y)}, got {n_train + n_test}")
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, train_size=n_train, test_size=n_test, random_state=seed, stratify=y
    )
    raw = {
        "train": torch.as_tensor(x_tr, dtype=torch.float64).reshape(-1, 1, 8, 8),
        "test": torch.as_tensor(x_te, dtype=torch.float64).reshape(-1, 1, 8, 8),
    }
    # the raw background is 0: shift before centering, so the filled pixels are background
    raw["shifted"] = torch.cat(
        [shift(raw["test"][i : i + 1], *SHIFTS[i % len(SHIFTS)]) for i in range(len(x_te))]
    )
    mean = raw["train"].mean()
    scale = (raw["train"] - mean).square().mean().sqrt()
    x = {k: (v - mean) / scale for k, v in raw.items()}
    return DigitImages(
        x["train"], torch.as_tensor(y_tr), x["test"], torch.as_tensor(y_te), x["shifted"]
    )


# ------------------------------------------------------------------ the networks

RELU_STD = math.sqrt(2.0)  # He scale: the variance is kept through ReLU layers


def mlp(depth: int = 2, width: int = 512) -> Layer:
    """Fully connected: Flatten, then `depth` (Dense, ReLU) layers and a Dense readout; its
    kernels are `MLPKernel(depth, "relu", weight_std=sqrt 2)`'s on the flattened images."""
    layers = [Flatten()]
    for _ in range(depth):
        layers += [Dense(width, RELU_STD), Relu()]
    return serial(*layers, Dense(N_CLASSES, RELU_STD))


def cnn(depth: int = 2, width: int = 512, pool: bool = True, activation: str = "relu") -> Layer:
    """`depth` (3x3 SAME Conv, activation) layers, then global average pooling (pool=True) or
    Flatten, and a Dense readout."""
    layers = []
    for _ in range(depth):
        layers += [Conv(width, 3, weight_std=RELU_STD), Activation(activation)]
    return serial(*layers, GlobalAvgPool() if pool else Flatten(), Dense(N_CLASSES, RELU_STD))


class FlatMLPKernel:
    """`MLPKernel` on flattened images, with the `kernels`/`diag` calls of a stax network
    (`mlp(depth)` describes the same network; through stax the position-position input
    kernel would be formed only to be traced by Flatten: 4096 entries per pair, not one)."""

    def __init__(self, depth: int) -> None:
        self.kernel = MLPKernel(depth, "relu", weight_std=RELU_STD)

    def kernels(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> Kernels:
        return self.kernel.kernels(x1.flatten(1), None if x2 is None else x2.flatten(1))

    def diag(self, x: torch.Tensor) -> Kernels:
        return self.kernel.diag(x.flatten(1))


def networks(depth: int = 2) -> dict[str, Layer | FlatMLPKernel]:
    """The three readouts compared: name -> kernels."""
    return {
        "MLP": FlatMLPKernel(depth),
        "CNN, flatten": cnn(depth, pool=False),
        "CNN, GAP": cnn(depth, pool=True),
    }


# ------------------------------------------------------------------ kernel regression


def _accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return float((pred.argmax(1) == labels).double().mean())


def kernel_predictions(k_train, k_test_train, y: torch.Tensor, kind: str) -> torch.Tensor:
    """NNGP: the GP posterior mean (Bayesian inference with the infinitely wide net);
    NTK: the infinitely wide net trained to convergence by gradient flow (Lee et al. 2019)."""
    if kind == "nngp":
        return gp_posterior(k_train, k_test_train, y, diag_reg=RIDGE).mean
    return gradient_descent_mse_ensemble(k_train, k_test_train, y, None, diag_reg=RIDGE).mean


def kernel_accuracies(data: DigitImages, nets: dict[str, Layer | FlatMLPKernel]) -> pd.DataFrame:
    """Test and shifted-test accuracy of NNGP and NTK regression, one row per (net, kernel).

    Also the mean kernel correlation c(x, Sx) = K(x, Sx) / sqrt(K(x, x) K(Sx, Sx)) between a
    test image and its shifted copy, next to c between a test image and the training images of
    its own class (how alike the kernel finds a digit and the same digit written by others).
    """
    y = data.targets()
    x_eval = torch.cat([data.x_test, data.x_shifted])
    m = len(data.x_test)
    pairs = min(PAIRS, m)
    same = data.y_test[:, None] == data.y_train[None, :]
    rows = []
    for name, net in nets.items():
        start = time.perf_counter()
        k_train = net.kernels(data.x_train)
        k_eval = net.kernels(x_eval, data.x_train)
        d_eval, d_train = net.diag(x_eval), net.diag(data.x_train)
        # only the diagonal is used: the first PAIRS test images with their own shifted copies
        k_pair = net.kernels(data.x_test[:pairs], data.x_shifted[:pairs])
        seconds = time.perf_counter() - start
        for kind in ("nngp", "ntk"):
            kt, ke = getattr(k_train, kind), getattr(k_eval, kind)
            pred = kernel_predictions(kt, ke, y, kind)
            de, dt = getattr(d_eval, kind), getattr(d_train, kind)
            c_shift = getattr(k_pair, kind).diagonal() / (de[:pairs] * de[m : m + pairs]).sqrt()
            c_class = ke[:m] / (de[:m, None] * dt[None, :]).sqrt()
            rows.append(
                {
                    "network": name,
                    "kernel": kind.upper(),
                    "test": _accuracy(pred[:m], data.y_test),
                    "shifted": _accuracy(pred[m:], data.y_test),
                    "corr_shift": float(c_shift.mean()),
                    "corr_class": float(c_class[same].mean()),
                    "seconds": seconds,
                }
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ finite networks


@dataclass(frozen=True)
class FiniteSetup:
    """Full-batch gradient descent on 0.5 * mean((f - f_0 - y)^2) over the N x 10 targets,
    NTK parametrization, float32, outputs centered at initialization (f - f_0, as chapter 04's
    `AlphaScaled` at alpha = 1: f is trained on y + f_0(X), the same gradients), so the
    infinite-width limit is deterministic, the ensemble mean of Lee et al. 2019 eq. 15. The
    step is `lr_fraction` of the largest stable one, 2 N K / lambda_max(Theta), measured on the
    analytic NTK. erf, not ReLU: an odd activation's features have zero mean, so the many
    nearly uncorrelated position pairs that global pooling averages add ~0 to the kernel; with
    ReLU each adds a positive constant, one eigenvalue dominates the rest by ~60x and gradient
    descent would need ~60x more steps to learn the classes."""

    depth: int = 1
    activation: str = "erf"
    n_train: int = 80
    steps: int = 100
    lr_fraction: float = 0.45  # eta lambda_max / (N K) = 2 lr_fraction < 1


@dataclass
class FiniteResult:
    table: pd.DataFrame  # width, seed, gap, test, shifted, seconds
    kernel_test: float  # the infinite-width net after the same steps
    kernel_shifted: float
    learning_rate: float


def finite_vs_width(
    data: DigitImages, widths: list[int], seeds: list[int], setup: FiniteSetup | None = None
) -> FiniteResult:
    """Finite CNN-GAPs of growing width trained by GD, against the analytic CNTK's prediction
    after the same number of steps (exact for discrete steps: `discrete_gd_kernels`)."""
    setup = setup or FiniteSetup()
    n = setup.n_train
    x_tr, y = data.x_train[:n], data.targets(n)
    x_eval = torch.cat([data.x_test, data.x_shifted])
    m = len(data.x_test)
    description = cnn(setup.depth, pool=True, activation=setup.activation)
    k_train = description.kernels(x_tr).ntk
    k_eval = description.kernels(x_eval, x_tr).ntk
    lam_max = float(torch.linalg.eigvalsh(k_train)[-1])
    lr = 2 * setup.lr_fraction * n * N_CLASSES / lam_max
    # one output's loss weight is 1 / (N K): the per-step factor is I - (lr / K) Theta / N
    theta, theta_eval = discrete_gd_kernels(k_train, k_eval, lr / N_CLASSES)
    limit = gradient_descent_mse_ensemble(
        theta, theta_eval, y, float(setup.steps), learning_rate=lr
    ).mean
    rows = []
    for width in widths:
        for seed in seeds:
            torch.manual_seed(seed)
            net = cnn(setup.depth, width, True, setup.activation).module(
                (1, 8, 8), parametrization="ntk"
            )
            with torch.no_grad():  # centering: f - f_0 fits y <=> f fits y + f_0(X)
                f0_train, f0_eval = net(x_tr.float()), net(x_eval.float())
            start = time.perf_counter()
            train(
                net,
                x_tr.float(),
                y.float() + f0_train,
                steps=setup.steps,
                lr=lr,
                log_every=setup.steps,
                track_features=False,
                track_weights=False,
                progress=False,
                seed=seed,
            )
            with torch.no_grad():
                out = (net(x_eval.float()) - f0_eval).double()
            rows.append(
                {
                    "width": width,
                    "seed": seed,
                    "gap": float((out - limit).norm() / limit.norm()),
                    "test": _accuracy(out[:m], data.y_test),
                    "shifted": _accuracy(out[m:], data.y_test),
                    "seconds": time.perf_counter() - start,
                }
            )
    return FiniteResult(
        pd.DataFrame(rows),
        _accuracy(limit[:m], data.y_test),
        _accuracy(limit[m:], data.y_test),
        lr,
    )
