"""The lazy regime: wide NTK-parametrized networks freeze and become kernel regression.

`run_lazy_regime` trains NTK-parametrized MLPs of growing width n by full-batch gradient descent
on the same data and measures, per width, how far training moves them. Theory (Jacot et al.
2018, arXiv:1806.07572; Lee et al. 2019, arXiv:1902.06720, Thm 2.1; Chizat et al. 2019,
arXiv:1812.07956): each layer's gradient has Frobenius norm O(1), so after a fixed training time

  * the input (n x d) and readout (1 x n) weights, of norm ~ sqrt(n), change by a relative
    O(n^{-1/2}); the hidden n x n matrix, of norm ~ n, by a relative O(n^{-1});
  * every hidden feature moves by a relative O(n^{-1/2});
  * the overlap of the first layer with a target direction u,
    ||W_1 u||^2 / ||W_1||_F^2 (1/d for a random W_1), stays at its initial value up to a
    relative O(n^{-1}) (its first-order change sums random-sign terms over the units, so it
    cancels like a random walk): the network cannot rotate its features towards u;
  * the trained network approaches its linearization f_lin(x; θ) = f(x; θ_0) + J(x; θ_0)(θ - θ_0)
    trained the same way, and kernel regression with the *analytic* NTK Θ from the network's own
    initial outputs f_0, by the same gradient descent:
    f_t(x) = f_0(x) - Θ(x, X) Θ^{-1} (I - (I - ηΘ/N)^t) (f_0(X) - Y)  (Lee et al. 2019, eq. 11
    with the discrete-step factor in place of e^{-ηΘt/N}).

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
from ntk.data import make_low_dim_task
from ntk.fitting import fit_loglog_slope
from ntk.kernels.analytic import MLPKernel
from ntk.kernels.predict import LinearizedModel
from ntk.models.mlp import WideMLP
from ntk.training import train

LAZY_WIDTHS = (64, 128, 256, 512, 1024)
ACTIVATION = "relu"
WEIGHT_STD = math.sqrt(2.0)  # He scale: the ReLU network keeps E[z^2] constant across layers
DEPTH = 2

# Words for the measured columns (figure legends).
LABELS = {
    "weight_change_hidden.0": "input weights (n x d)",
    "weight_change_hidden.1": "hidden weights (n x n)",
    "weight_change_readout": "readout weights (1 x n)",
    "feature_change_hidden.0": "features of hidden layer 1",
    "feature_change_hidden.1": "features of hidden layer 2",
    "overlap_change": "overlap of the input weights with u",
    "lin_distance": "network vs its linearization",
    "ntk_distance": "network vs analytic-NTK regression",
}


def rms(a: Tensor, b: Tensor) -> float:
    """Root-mean-square difference of two output tensors."""
    return (a.double() - b.double()).pow(2).mean().sqrt().item()


def overlap(weight: Tensor, u: Tensor) -> float:
    """||W u||^2 / ||W||_F^2: the share of the first layer's weight energy along the unit vector
    u (1/d on average for a random W; 1 if every unit reads only <u, x>)."""
    w = weight.detach().double()
    return float((w @ u.double().reshape(-1)).pow(2).sum() / w.pow(2).sum())


def gd_prediction(
    theta_tr: Tensor,
    theta_te: Tensor,
    y: Tensor,
    f0_tr: Tensor,
    f0_te: Tensor,
    lr: float,
    steps: int,
) -> Tensor:
    """Test outputs of a linear model with kernel Θ after `steps` full-batch GD steps of size lr
    on 0.5 mean((f - y)^2): f0_te - Θ_*X Θ^{-1} (I - (I - lr Θ / N)^steps) (f0_tr - y), exactly
    the discrete dynamics (no gradient-flow approximation), computed in the eigenbasis of Θ."""
    n = theta_tr.shape[0]
    lam, v = torch.linalg.eigh(theta_tr)
    done = 1 - (1 - lr * lam / n) ** steps  # fraction of each eigencomponent fitted
    r0 = v.T @ (f0_tr.double() - y.double())  # (N, 1)
    return f0_te.double() - theta_te @ (v @ ((done / lam)[:, None] * r0))


def _ntk_net(dim: int, width: int, seed: int) -> WideMLP:
    torch.manual_seed(seed)
    return WideMLP(
        dim, width, depth=DEPTH, activation=ACTIVATION, weight_std=WEIGHT_STD, parametrization="ntk"
    )


def _kernel() -> MLPKernel:
    return MLPKernel(depth=DEPTH, activation=ACTIVATION, weight_std=WEIGHT_STD, bias_std=0.0)


@dataclass
class LazyRegime:
    """Per-width measurements (`table`), fitted log-log slopes (`slopes`, name -> exponent) and
    the test MSE of always predicting 0 (`zero_mse`, the target's mean square)."""

    table: pd.DataFrame
    slopes: dict[str, float]
    steps: int
    lr: float
    zero_mse: float
    dim: int


def _train_sgd(module, x: Tensor, y: Tensor, steps: int, lr: float, seed: int, **kw):
    return train(
        module, x, y, steps=steps, lr=lr, optimizer="sgd", log_every=steps, seed=seed, **kw
    )


def run_lazy_regime(
    widths: tuple[int, ...] = LAZY_WIDTHS,
    *,
    steps: int = 200,
    lr: float = 1.0,
    seed: int = 0,
    n_train: int = 64,
    n_test: int = 128,
    dim: int = 16,
) -> LazyRegime:
    """Train NTK-parametrized MLPs of each width by full-batch GD and measure laziness.

    Every network sees the same data (`make_low_dim_task(n_train, n_test, dim, seed=seed)`:
    y = He_2(<u, x>) / sqrt(2), x on the sphere of radius sqrt(d)) and is trained for `steps`
    steps of size `lr` on 0.5 * mean((f - y)^2), from init seed `seed`.

    Columns of `table` (one row per width):
        weight_change_<layer>: ||W_T - W_0||_F / ||W_0||_F for every weight matrix;
        feature_change_<l>: ||h_l(T) - h_l(0)||_F / ||h_l(0)||_F on the training inputs;
        overlap_init, overlap_final: `overlap` of the input weights with u, before and after;
        overlap_change: |overlap_final / overlap_init - 1|;
        lin_distance: RMS over test inputs of f_net - f_lin (linearized net, same GD);
        ntk_distance: RMS of f_net - f_ntk, `gd_prediction` with the analytic NTK, same f_0;
        train_loss, test_mse: of the network; ntk_test_mse: of f_ntk.
    """
    task = make_low_dim_task(n_train, n_test, dim, seed=seed)
    x_tr, y_tr, x_te, y_te = task
    u = task.info["directions"][:, 0]
    kernel = _kernel()
    theta_tr, theta_te = kernel.ntk(x_tr), kernel.ntk(x_te, x_tr)  # float64
    rows = []
    for width in widths:
        net = _ntk_net(dim, width, seed)
        with torch.no_grad():
            f0_tr, f0_te = net(x_tr), net(x_te)
        first = net.hidden[0].weight
        row: dict[str, float] = {"width": width, "overlap_init": overlap(first, u)}
        lin = LinearizedModel(net)  # built before training: it keeps θ_0 and J(θ_0)
        final = _train_sgd(net, x_tr, y_tr, steps, lr, seed, probe_size=n_train).final()
        for name, value in final.items():
            if name.startswith(("weight_change/", "feature_change/")):
                kind, layer = name.split("/")
                row[f"{kind}_{layer.removesuffix('.weight')}"] = value
        row["overlap_final"] = overlap(first, u)
        row["overlap_change"] = abs(row["overlap_final"] / row["overlap_init"] - 1)
        f_ntk = gd_prediction(theta_tr, theta_te, y_tr, f0_tr, f0_te, lr, steps)
        _train_sgd(lin, x_tr, y_tr, steps, lr, seed, track_features=False, track_weights=False)
        with torch.no_grad():
            f_te = net(x_te)
            row["lin_distance"] = rms(f_te, lin(x_te))
        row["ntk_distance"] = rms(f_te, f_ntk)
        row["train_loss"] = final["train_loss"]
        row["test_mse"] = rms(f_te, y_te) ** 2
        row["ntk_test_mse"] = rms(f_ntk, y_te) ** 2
        rows.append(row)
    table = pd.DataFrame(rows)
    slopes = {
        col: fit_loglog_slope(table["width"], table[col])
        for col in table.columns
        if col.startswith(("weight_change", "feature_change"))
        or col.endswith("_distance")
        or col == "overlap_change"
    }
    zero_mse = float(y_te.double().pow(2).mean())
    return LazyRegime(table, slopes, steps, lr, zero_mse, dim)


# ------------------------------------------------------------------------------ figures


def plot_lazy_regime(lazy: LazyRegime):
    """Three panels against the width: relative changes of weights and features (log-log,
    fitted slopes, n^-1/2 and n^-1 guides); the first layer's overlap with the target
    direction u before and after training; the network's distances to its linearization and
    to analytic-NTK regression."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    t, w = lazy.table, lazy.table["width"]
    ref = w / w.iloc[0]
    cols = [c for c in t.columns if c.startswith(("weight_change", "feature_change"))]
    for col in cols:
        style = "o-" if col.startswith("feature") else "s--"
        axes[0].loglog(w, t[col], style, label=f"{LABELS[col]}: slope {lazy.slopes[col]:+.2f}")
    axes[0].loglog(w, t[cols].iloc[0].max() * ref**-0.5, "k:", label="guide: width^-1/2")
    axes[0].loglog(
        w, t["weight_change_hidden.1"].iloc[0] * ref**-1.0, "k-.", lw=0.8, label="guide: width^-1"
    )
    axes[0].set(
        xlabel="width n",
        ylabel="relative change during training",
        title="weights and features move less as width grows",
    )
    axes[1].semilogx(w, t.overlap_init, "o-", label="before training")
    axes[1].semilogx(w, t.overlap_final, "x--", label="after training")
    axes[1].axhline(
        1 / lazy.dim, color="k", ls=":", label=f"random weights: 1/d = {1 / lazy.dim:.4f}"
    )
    axes[1].set(
        xlabel="width n",
        ylabel="share of input-weight energy along u",
        title="the first layer does not turn towards u",
        ylim=(0, 2.5 / lazy.dim),
    )
    for col in ("lin_distance", "ntk_distance"):
        axes[2].loglog(w, t[col], "o-", label=f"{LABELS[col]}: slope {lazy.slopes[col]:+.2f}")
    axes[2].loglog(w, t["ntk_distance"].iloc[0] * ref**-0.5, "k:", label="guide: width^-1/2")
    axes[2].loglog(
        w, t["lin_distance"].iloc[0] * ref**-0.75, "k--", lw=0.8, label="guide: width^-3/4"
    )
    axes[2].set(
        xlabel="width n",
        ylabel="RMS gap of test outputs",
        title="the trained network becomes kernel regression",
    )
    for ax in axes:
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(list(w), [str(v) for v in w])
    return finish_figure(fig, axes, fontsize=7)


# ---------------------------------------------------------------------------------- CLI


def summary(lazy: LazyRegime) -> str:
    """Printed report of the sweep."""
    lines = ["lazy regime (NTK parametrization, full-batch GD): fitted slopes vs width"]
    lines += [f"  {LABELS[name]:38s} {slope:+.3f}" for name, slope in lazy.slopes.items()]
    lines.append("  theory: -1/2 for features and input/readout weights, -1 for the overlap")
    lines.append("  with u and the hidden n x n matrix, -1/2 for the distance to the NTK")
    for r in lazy.table.itertuples():
        lines.append(
            f"  width {r.width:5d}: test MSE {r.test_mse:.3f} (NTK regression {r.ntk_test_mse:.3f},"
            f" predicting 0: {lazy.zero_mse:.3f}), overlap with u {r.overlap_init:.4f} ->"
            f" {r.overlap_final:.4f} (random: {1 / lazy.dim:.4f})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Chapter 03 as a script: figure 03_lazy_regime.png and a printed summary; returns the
    results."""
    parser = _cli.parser("Chapter 03: wide NTK-parametrized networks train lazily.")
    _cli.add_int_list(parser, "--widths", LAZY_WIDTHS, "widths of the lazy-regime sweep")
    parser.add_argument("--steps", type=int, default=200, help="GD steps")
    parser.add_argument("--lr", type=float, default=1.0, help="GD learning rate")
    args = parser.parse_args(argv)
    start = _cli.start(args)
    lazy = run_lazy_regime(tuple(args.widths), steps=args.steps, lr=args.lr, seed=args.seed)
    name = _cli.save(plot_lazy_regime(lazy), args.out, "03_lazy_regime.png").name
    print(summary(lazy))
    _cli.finish(args.out, [name], start)
    return {"lazy": lazy}


if __name__ == "__main__":  # python -m ntk.chapters.lazy_regime
    _cli.run(main)
