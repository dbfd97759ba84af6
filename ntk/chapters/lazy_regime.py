"""The lazy regime: wide NTK-parametrized networks stop learning features.

Two experiments, both built from the package (`ntk.models`, `ntk.training`, `ntk.kernels`)
and shared by `notebooks/03_lazy_regime.py` and this module's `main()`.

1. `run_lazy_regime`: NTK-parametrized MLPs of growing width n trained by full-batch gradient
   descent on the same data. Theory (Jacot et al. 2018, arXiv:1806.07572; Lee et al. 2019,
   arXiv:1902.06720, Thm 2.1): the relative change of the weights and of the hidden features
   during training vanishes as n^{-1/2}, and the trained network approaches

   * its linearization f_lin(x; θ) = f(x; θ_0) + J(x; θ_0)(θ - θ_0) trained the same way, and
   * kernel regression with the *analytic* NTK Θ started from the network's own outputs f_0:
     f_t(x) = f_0(x) - Θ(x, X) Θ^{-1} (I - e^{-ηΘt/N}) (f_0(X) - Y)  (Lee et al. 2019, eq. 11).

   We fit log-log slopes of these quantities against the width.

2. `run_feature_task`: on a task whose target depends on a low-dimensional projection of the
   input (`ntk.data.make_low_dim_task`: y = He_2(<u, x>) in d = 32, a degree-2 polynomial that a
   rotation-invariant kernel learns only from ~d^2 samples), compare the test error of
   infinite-width NNGP and NTK kernel regression, of NTK-parametrized networks of growing width
   (which converge to the NTK predictor) and of muP networks of growing width (which learn the
   direction u and beat every fixed kernel; Yang & Hu 2021, arXiv:2011.14522).

The NTK-parametrized networks are *centered*: they are trained on y + f_0(x), so that
f(x) - f_0(x) is the prediction (Chizat et al. 2019, "On lazy training", arXiv:1812.07956).
That removes the random function f_0 ~ GP(0, K_NNGP) of a single network, whose variance
would otherwise add O(1) to its test error at every width, and makes the infinite-width limit
of the network exactly the NTK predictor Θ(x, X) Θ^{-1} (I - e^{-ηΘt/N}) Y. The muP networks
start from f_0 = 0 (zero readout), so they need no centering.

    python ntk/feature_learning_limitations.py --out figures   # writes figures/03_lazy_regime.png
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from ntk.chapters import _cli
from ntk.chapters._plots import finish_figure
from ntk.data import Task, make_low_dim_task
from ntk.fitting import fit_loglog_slope
from ntk.kernels.analytic import MLPKernel
from ntk.kernels.predict import (
    LinearizedModel,
    gp_posterior,
    gradient_descent_mse,
    gradient_descent_mse_ensemble,
)
from ntk.models.mlp import WideMLP, WideMLP_MuP
from ntk.training import train

LAZY_WIDTHS = (64, 128, 256, 512, 1024)
NTK_WIDTHS = (64, 256, 1024)
MUP_WIDTHS = (64, 256, 1024)
ACTIVATION = "relu"
WEIGHT_STD = math.sqrt(2.0)  # He scale: the ReLU network keeps E[z^2] constant across layers
DEPTH = 2


def rms(a: Tensor, b: Tensor) -> float:
    """Root-mean-square difference of two output tensors."""
    return (a.double() - b.double()).pow(2).mean().sqrt().item()


def _ntk_net(dim: int, width: int, seed: int) -> WideMLP:
    torch.manual_seed(seed)
    return WideMLP(
        dim, width, depth=DEPTH, activation=ACTIVATION, weight_std=WEIGHT_STD, parametrization="ntk"
    )


def _kernel() -> MLPKernel:
    return MLPKernel(depth=DEPTH, activation=ACTIVATION, weight_std=WEIGHT_STD, bias_std=0.0)


# ------------------------------------------------------------------ 1. lazy-regime scaling


@dataclass
class LazyRegime:
    """Per-width measurements (`table`) and fitted log-log slopes (`slopes`, name -> exponent)."""

    table: pd.DataFrame
    slopes: dict[str, float]
    steps: int
    lr: float


def run_lazy_regime(
    widths: tuple[int, ...] = LAZY_WIDTHS,
    *,
    steps: int = 200,
    lr: float = 1.0,
    seed: int = 0,
    n_train: int = 64,
    n_test: int = 128,
    dim: int = 16,
    linearize: bool = True,
) -> LazyRegime:
    """Train NTK-parametrized MLPs of each width by full-batch GD and measure laziness.

    Every network sees the same data (`make_low_dim_task(n_train, n_test, dim, seed=seed)`) and
    is trained for `steps` steps of size `lr` on 0.5 * mean((f - y)^2), from init seed `seed`.

    Columns of `table` (one row per width):
        weight_change_<layer>: ||W_T - W_0||_F / ||W_0||_F for every weight matrix;
        feature_change_<l>: ||h_l(T) - h_l(0)||_F / ||h_l(0)||_F on the training inputs;
        lin_distance: RMS over test inputs of f_net - f_lin (linearized net trained the same);
        ntk_distance: RMS of f_net - f_ntk, the analytic-NTK prediction from the same f_0;
        train_loss, test_mse: of the network.
    `slopes` holds the fitted exponent of each of these against the width.
    """
    task = make_low_dim_task(n_train, n_test, dim, seed=seed)
    x_tr, y_tr, x_te, y_te = task
    kernel = _kernel()
    theta_tr = kernel.ntk(x_tr)  # (N, N) float64
    theta_te = kernel.ntk(x_te, x_tr)  # (M, N)
    rows = []
    for width in widths:
        net = _ntk_net(dim, width, seed)
        with torch.no_grad():
            f0_tr, f0_te = net(x_tr), net(x_te)
        lin = LinearizedModel(net) if linearize else None
        hist = train(
            net,
            x_tr,
            y_tr,
            x_te,
            y_te,
            steps=steps,
            lr=lr,
            optimizer="sgd",
            log_every=steps,
            seed=seed,
            probe_size=n_train,
        )
        row: dict[str, float] = {"width": width}
        final = hist.final()
        for name, value in final.items():
            if name.startswith(("weight_change/", "feature_change/")):
                kind, layer = name.split("/")
                row[f"{kind}_{layer.removesuffix('.weight')}"] = value
        with torch.no_grad():
            f_te = net(x_te)
        f_ntk = gradient_descent_mse(
            theta_tr,
            theta_te,
            y_tr.double(),
            f0_tr.double(),
            f0_te.double(),
            t=float(steps),
            learning_rate=lr,
        )
        row["ntk_distance"] = rms(f_te, f_ntk)
        if lin is not None:
            train(
                lin,
                x_tr,
                y_tr,
                steps=steps,
                lr=lr,
                optimizer="sgd",
                log_every=steps,
                seed=seed,
                track_features=False,
                track_weights=False,
            )
            with torch.no_grad():
                row["lin_distance"] = rms(f_te, lin(x_te))
        row["train_loss"] = final["train_loss"]
        row["test_mse"] = final["test_metric"]
        rows.append(row)
    table = pd.DataFrame(rows)
    slopes = {
        col: fit_loglog_slope(table["width"], table[col])
        for col in table.columns
        if col.startswith(("weight_change", "feature_change")) or col.endswith("_distance")
    }
    return LazyRegime(table, slopes, steps, lr)


# ------------------------------------------------------- 2. kernels vs networks on a task


@dataclass
class FeatureTask:
    """Test MSE of kernel predictors (`kernels`, name -> MSE) and networks (`table`)."""

    kernels: dict[str, float]
    table: pd.DataFrame  # columns: model ("ntk" | "mup"), width, test_mse, ntk_distance
    task_info: dict


def feature_task(n_train: int = 512, n_test: int = 1024, dim: int = 32, seed: int = 0) -> Task:
    """The low-dimensional-projection task: y = He_2(<u, x>), x uniform on the sphere in R^32."""
    return make_low_dim_task(n_train, n_test, dim, degree=2, n_directions=1, seed=seed)


def run_feature_task(
    ntk_widths: tuple[int, ...] = NTK_WIDTHS,
    mup_widths: tuple[int, ...] = MUP_WIDTHS,
    *,
    steps: int = 300,
    ntk_lr: float = 1.0,
    mup_lr: float = 0.03,
    seed: int = 0,
    task: Task | None = None,
    base_width: int = 64,
) -> FeatureTask:
    """Kernel regression vs NTK-parametrized vs muP networks on `feature_task()`.

    Kernels: NNGP posterior mean (`gp_posterior`, tiny ridge 1e-6), NTK regression at the end
    of training (t = inf) and at the networks' training time t = steps (learning rate ntk_lr).
    NTK nets: centered (see module docstring), full-batch GD with `ntk_lr`, `steps` steps;
    `ntk_distance` is the RMS distance of their test outputs to the NTK predictor at t = steps.
    muP nets: `WideMLP_MuP` (zero readout, base width `base_width`) trained with
    `mup.optim.MuAdam` at `mup_lr`, full batch, `steps` steps.
    """
    task = task if task is not None else feature_task(seed=seed)
    x_tr, y_tr, x_te, y_te = task
    dim = x_tr.shape[1]
    kernel = _kernel()
    k_tr, k_te = kernel.kernels(x_tr), kernel.kernels(x_te, x_tr)
    y64, y_te64 = y_tr.double(), y_te.double()

    def mse(pred: Tensor) -> float:
        return (pred.double() - y_te64).pow(2).mean().item()

    ntk_at_t = gradient_descent_mse_ensemble(
        k_tr.ntk, k_te.ntk, y64, t=float(steps), learning_rate=ntk_lr
    ).mean
    kernels = {
        "NNGP (Bayesian, t=inf)": mse(gp_posterior(k_tr.nngp, k_te.nngp, y64, diag_reg=1e-6).mean),
        "NTK (t=inf)": mse(
            gradient_descent_mse_ensemble(k_tr.ntk, k_te.ntk, y64, diag_reg=1e-6).mean
        ),
        "NTK (t=steps)": mse(ntk_at_t),
    }
    rows = []
    for width in ntk_widths:
        net = _ntk_net(dim, width, seed)
        with torch.no_grad():
            f0_tr, f0_te = net(x_tr), net(x_te)
        # Centering: train on y + f0 so that f - f0 is the prediction (same gradients as the
        # centered network f - f0 trained on y).
        hist = train(
            net,
            x_tr,
            y_tr + f0_tr,
            x_te,
            y_te + f0_te,
            steps=steps,
            lr=ntk_lr,
            optimizer="sgd",
            log_every=steps,
            seed=seed,
            track_weights=False,
        )
        with torch.no_grad():
            pred = net(x_te) - f0_te
        rows.append(
            {
                "model": "ntk",
                "width": width,
                "test_mse": mse(pred),
                "ntk_distance": rms(pred, ntk_at_t),
                "feature_change": hist.final()[f"feature_change/hidden.{DEPTH - 1}"],
            }
        )
    for width in mup_widths:
        torch.manual_seed(seed)
        net = WideMLP_MuP(
            dim,
            width,
            depth=DEPTH,
            activation=ACTIVATION,
            weight_std=WEIGHT_STD,
            base_width=base_width,
            readout_zero_init=True,
        )
        hist = train(
            net,
            x_tr,
            y_tr,
            x_te,
            y_te,
            steps=steps,
            lr=mup_lr,
            optimizer="muadam",
            log_every=steps,
            seed=seed,
            track_weights=False,
        )
        with torch.no_grad():
            pred = net(x_te)
        rows.append(
            {
                "model": "mup",
                "width": width,
                "test_mse": mse(pred),
                "ntk_distance": rms(pred, ntk_at_t),
                "feature_change": hist.final()[f"feature_change/hidden.{DEPTH - 1}"],
            }
        )
    return FeatureTask(kernels, pd.DataFrame(rows), dict(task.info))


# ------------------------------------------------------------------------------ figures


def plot_lazy_regime(lazy: LazyRegime, task: FeatureTask | None = None):
    """Relative changes and distances vs width (log-log, fitted slopes) and the task's errors."""
    import matplotlib.pyplot as plt

    ncols = 3 if task is not None else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4.2))
    t, w = lazy.table, lazy.table["width"]
    ref = (w / w.iloc[0]) ** -0.5
    for col in [c for c in t.columns if c.startswith(("weight_change", "feature_change"))]:
        style = "o-" if col.startswith("feature") else "s--"
        axes[0].loglog(w, t[col], style, label=f"{col}: {lazy.slopes[col]:+.2f}")
    axes[0].loglog(w, t["feature_change_hidden.0"].iloc[0] * ref, "k:", label="n^-1/2")
    axes[0].set(
        xlabel="width n",
        ylabel="relative change after training",
        title="NTK parametrization: lazy training",
    )
    for col in [c for c in t.columns if c.endswith("_distance")]:
        label = {"lin_distance": "net - linearized net", "ntk_distance": "net - NTK prediction"}
        axes[1].loglog(w, t[col], "o-", label=f"{label[col]}: {lazy.slopes[col]:+.2f}")
    axes[1].loglog(w, t["ntk_distance"].iloc[0] * ref, "k:", label="n^-1/2")
    axes[1].set(
        xlabel="width n",
        ylabel="RMS distance of test outputs",
        title="the network becomes its linearization",
    )
    if task is not None:
        ax = axes[2]
        for model, color, label in (
            ("ntk", "C1", "NTK-param nets (centered)"),
            ("mup", "C0", "muP nets"),
        ):
            r = task.table[task.table.model == model]
            ax.semilogx(r.width, r.test_mse, "o-", color=color, label=label)
        for (name, value), ls in zip(task.kernels.items(), ("-.", "--", ":"), strict=True):
            ax.axhline(value, color="gray", ls=ls, label=f"{name}: {value:.3g}")
        ax.set(
            xlabel="width",
            ylabel="test MSE",
            yscale="log",
            title="y = He2(<u, x>): features beat kernels",
        )
    return finish_figure(fig, axes, fontsize=7)


# ---------------------------------------------------------------------------------- CLI


def summary(lazy: LazyRegime, task: FeatureTask) -> str:
    """Printed report of both experiments."""
    lines = ["lazy regime (NTK parametrization, full-batch GD): fitted slopes vs width"]
    lines += [f"  {name:26s} {slope:+.3f}" for name, slope in lazy.slopes.items()]
    lines.append("  theory: -1/2 for features and for input/readout weights, -1 for a hidden")
    lines.append("  (n x n) matrix in Frobenius norm; -1/2 (or faster) for the distances")
    lines.append("feature task (test MSE):")
    lines += [f"  {name:26s} {value:.4g}" for name, value in task.kernels.items()]
    for r in task.table.itertuples():
        lines.append(
            f"  {r.model:4s} net width {r.width:5d}   {r.test_mse:.4g}"
            f"   (distance to NTK prediction {r.ntk_distance:.3g})"
        )
    best_mup = task.table[task.table.model == "mup"].sort_values("width").test_mse.iloc[-1]
    ntk_inf = task.kernels["NTK (t=inf)"]
    lines.append(
        f"widest muP net beats the infinite-width NTK predictor: {best_mup < ntk_inf} "
        f"({best_mup:.4g} < {ntk_inf:.4g})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Chapter 03 as a script: figure 03_lazy_regime.png and a printed summary; returns the
    results."""
    parser = _cli.parser("Chapter 03: wide NTK-parametrized networks stop learning features.")
    _cli.add_int_list(parser, "--widths", LAZY_WIDTHS, "widths of the lazy-regime sweep")
    help = "widths of the NTK-param and muP nets on the feature task"
    _cli.add_int_list(parser, "--task-widths", NTK_WIDTHS, help)
    parser.add_argument("--steps", type=int, default=200, help="GD steps of the lazy sweep")
    parser.add_argument("--lr", type=float, default=1.0, help="GD learning rate (lazy sweep)")
    parser.add_argument("--task-steps", type=int, default=300, help="steps on the feature task")
    parser.add_argument("--mup-lr", type=float, default=0.03, help="MuAdam learning rate")
    args = parser.parse_args(argv)
    start = _cli.start(args)
    lazy = run_lazy_regime(tuple(args.widths), steps=args.steps, lr=args.lr, seed=args.seed)
    widths = tuple(args.task_widths)
    task = run_feature_task(
        widths, widths, steps=args.task_steps, mup_lr=args.mup_lr, seed=args.seed
    )
    name = _cli.save(plot_lazy_regime(lazy, task), args.out, "03_lazy_regime.png").name
    print(summary(lazy, task))
    _cli.finish(args.out, [name], start)
    return {"lazy": lazy, "task": task}
