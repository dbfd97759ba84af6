"""From lazy to rich: the output scale alpha moves a network between kernel regime and features.

Chizat, Oyallon & Bach (2019), "On Lazy Training in Differentiable Programming"
(arXiv:1812.07956): for any model f(x; w) and scale alpha > 0, train the centered, rescaled model

    f_alpha(x; w) = alpha * (f(x; w) - f(x; w_0))    on    L_alpha(w) = L(f_alpha) / alpha^2,

with L = 0.5 * mean((f_alpha - y)^2), by gradient descent w <- w - lr * grad L_alpha (the same as
lr / alpha^2 on L itself). In function space df_alpha/dt = -lr * Theta_w (f_alpha - y) / N with
Theta_w the NTK of f at the current w: at initialization the dynamics are the same for every
alpha, but the weights need to move only ~ 1/alpha to change f_alpha by O(1). Large alpha is
the lazy (kernel) regime: weights, features and the tangent kernel barely move (all ~ 1/alpha),
and training is kernel regression with Theta_{w_0}. Small alpha is the rich regime, where the
features move by O(1).

Here f is a two-layer GELU network in NTK parametrization, f(x) = n^{-1/2} sum_i a_i
gelu(<w_i, x> / sqrt(d)), whose own weights move ~ n^{-1/2}: the relevant scale is alpha *
sqrt(n) (lazy when >> 1, rich when <~ 1; the scale is Geiger et al. 2020's, arXiv:1906.08034;
Woodworth et al. 2020, arXiv:2002.09277, study the same transition in the init scale). At
alpha = n^{-1/2} the network is the two-layer mean-field (= muP) network of chapter 05. `run_grid` trains it at widths x alphas on a single-index task
(`ntk.data.make_low_dim_task`: y = He_2(<u, x>) / sqrt(2) in d = 32, 256 training points)
and records per run: held-out loss, feature movement ||h(T) - h(0)||_F / ||h(0)||_F and
kernel movement ||Theta(T) - Theta(0)||_F / ||Theta(0)||_F on 64 training inputs, and the
first-layer alignment with u (1/d at initialization). Float64 throughout: the lazy corner
moves weights by ~1e-4, where float32 round-off would be seen as kernel movement.

    python -m ntk.chapters.lazy_to_rich --out figures
    # writes figures/04_phase_diagram.png, 04_movement.png, 04_neurons.png
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.func import functional_call

from ntk._checks import check_choice, check_module, check_positive, check_positive_int
from ntk.chapters import _cli
from ntk.data import Task, make_low_dim_task
from ntk.fitting import fit_loglog_slope
from ntk.kernels.analytic import MLPKernel
from ntk.kernels.empirical import empirical_ntk
from ntk.kernels.predict import gradient_descent_mse_ensemble
from ntk.models.mlp import WideMLP
from ntk.training import History, TrainingDivergedError, relative_change, train

WIDTHS = (16, 64, 256, 1024)
ALPHAS = (1 / 16, 1 / 4, 1.0, 4.0, 16.0, 64.0)
DTYPE = torch.float64


class AlphaScaled(nn.Module):
    """f_alpha(x) = alpha * (f(x; w) - f(x; w_0)): `model` centered at its initial weights.

    The initial weights w_0 are buffers (copied at construction), so only `model`'s parameters
    train. `hidden_activations` is `model`'s, for the feature diagnostics of `train`.
    """

    def __init__(self, model: nn.Module, alpha: float) -> None:
        super().__init__()
        self.model = check_module("model", model)
        self.alpha = check_positive("alpha", alpha)
        self._names = [name for name, _ in model.named_parameters()]
        for name, p in model.named_parameters():
            self.register_buffer(_buffer_name(name), p.detach().clone())

    def initial_parameters(self) -> dict[str, Tensor]:
        """w_0, by parameter name of `model`."""
        return {name: getattr(self, _buffer_name(name)) for name in self._names}

    def hidden_activations(self, x: Tensor) -> list[Tensor]:
        return self.model.hidden_activations(x)

    def forward(self, x: Tensor) -> Tensor:
        f0 = functional_call(self.model, self.initial_parameters(), (x,))
        return self.alpha * (self.model(x) - f0)


def _buffer_name(name: str) -> str:
    return "init_" + name.replace(".", "_")


@dataclass(frozen=True)
class Setup:
    """Task, network and gradient descent shared by every (width, alpha)."""

    dim: int = 32
    n_train: int = 256
    n_test: int = 1024
    steps: int = 300
    lr: float = 1.0  # on L_alpha, i.e. lr / alpha^2 on L
    activation: str = "gelu"
    probe_size: int = 64  # training inputs on which features and the kernel are compared
    seed: int = 0  # data and initialization

    def __post_init__(self) -> None:
        for name in ("dim", "n_train", "n_test", "steps", "probe_size"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("seed", self.seed, minimum=0)
        check_positive("lr", self.lr)
        if self.probe_size > self.n_train:
            raise ValueError(f"probe_size must be <= n_train={self.n_train}, got {self.probe_size}")

    def task(self) -> Task:
        """y = He_2(<u, x>) / sqrt(2), x uniform on the sphere of radius sqrt(d), no noise."""
        return make_low_dim_task(
            self.n_train, self.n_test, self.dim, degree=2, seed=self.seed, dtype=DTYPE
        )

    def network(self, width: int) -> WideMLP:
        """The two-layer NTK-parametrized network (seeded: the same w_0 for every alpha)."""
        torch.manual_seed(self.seed)
        net = WideMLP(self.dim, width, depth=1, activation=self.activation, parametrization="ntk")
        return net.to(DTYPE)


def alignment(weight: Tensor, directions: Tensor) -> float:
    """||W U||_F^2 / ||W||_F^2: the fraction of the first layer's weight energy in span(U).

    weight: (n, d), one row per neuron; directions: (d, r) with orthonormal columns. For
    isotropic random rows the expectation is r / d; rows inside span(U) give 1.
    """
    w = weight.detach().double()
    u = directions.to(w)
    if w.ndim != 2 or u.ndim != 2 or w.shape[1] != u.shape[0]:
        raise ValueError(
            f"weight must be (n, d) and directions (d, r), got {tuple(w.shape)} and {tuple(u.shape)}"
        )
    return ((w @ u).pow(2).sum() / w.pow(2).sum()).item()


@dataclass
class Run:
    """One (width, alpha): summary `row`, `history`, the first-layer weights projected on
    (u, the rest): `neurons` = {"init"|"final": (n, 2) tensor of (<w_i, u>, ||P_perp w_i||)},
    and the trained f_alpha on the held-out inputs, `prediction` (N, 1) (None if diverged)."""

    row: dict
    history: History | None
    neurons: dict[str, Tensor]
    prediction: Tensor | None = None


def neuron_coordinates(weight: Tensor, u: Tensor) -> Tensor:
    """(n, 2): each row w_i as (<w_i, u>, ||w_i - <w_i, u> u||), u a unit (d,) vector."""
    w = weight.detach().to(DTYPE)
    along = w @ u.to(DTYPE)
    perp = torch.linalg.vector_norm(w - along[:, None] * u.to(DTYPE), dim=1)
    return torch.stack([along, perp], dim=1)


def run_one(width: int, alpha: float, setup: Setup = Setup(), task: Task | None = None) -> Run:
    """Train f_alpha of one width by full-batch gradient descent and measure what moved."""
    check_positive_int("width", width)
    check_positive("alpha", alpha)
    task = task if task is not None else setup.task()
    u = task.info["directions"][:, 0]
    net = setup.network(width)
    probe = task.x_train[: setup.probe_size]
    theta0 = empirical_ntk(net, probe)
    neurons = {"init": neuron_coordinates(net.hidden[0].weight, u)}
    row = {"width": width, "alpha": alpha, "alpha_sqrt_n": alpha * math.sqrt(width)}
    row["alignment_init"] = alignment(net.hidden[0].weight, task.info["directions"])
    scaled = AlphaScaled(net, alpha)
    start = time.perf_counter()
    try:
        hist = train(
            scaled,
            *task,
            steps=setup.steps,
            lr=setup.lr / alpha**2,
            optimizer="sgd",
            log_every=max(1, setup.steps // 20),
            seed=setup.seed,
            probe_size=setup.probe_size,
            track_weights=False,
            progress=False,
        )
    except TrainingDivergedError as err:
        nan = math.nan
        row.update(train_loss=math.inf, test_loss=math.inf, feature_change=nan)
        row.update(kernel_change=nan, alignment=nan, diverged_at=err.step)
        row["seconds"] = time.perf_counter() - start
        return Run(row, None, neurons)
    final = hist.final()
    neurons["final"] = neuron_coordinates(net.hidden[0].weight, u)
    with torch.no_grad():
        prediction = scaled(task.x_test)  # (N, 1): the trained f_alpha
    row.update(
        train_loss=final["train_loss"],
        test_loss=final["test_loss"],
        feature_change=final["feature_change/hidden.0"],
        kernel_change=relative_change(empirical_ntk(net, probe), theta0),
        alignment=alignment(net.hidden[0].weight, task.info["directions"]),
        diverged_at=None,
        seconds=time.perf_counter() - start,
    )
    return Run(row, hist, neurons, prediction)


@dataclass
class PhaseDiagram:
    """All runs: `table` (one row per width and alpha), `histories` and `neurons` keyed by
    (width, alpha), `kernel_loss`: held-out loss of analytic NTK regression at the same
    training time (the alpha -> infinity, width -> infinity limit), and `zero_loss`: held-out
    loss of predicting 0 (what f_alpha = 0 at initialization scores); the held-out
    `predictions` of every run, analytic NTK regression's (`kernel_prediction`) and, per
    width, regression with the network's own initial kernel (`own_kernel_predictions`), for
    `function_distance`."""

    table: pd.DataFrame
    histories: dict[tuple[int, float], History] = field(default_factory=dict)
    neurons: dict[tuple[int, float], dict[str, Tensor]] = field(default_factory=dict)
    kernel_loss: float = math.nan
    setup: Setup = Setup()
    zero_loss: float = math.nan
    predictions: dict[tuple[int, float], Tensor] = field(default_factory=dict)
    kernel_prediction: Tensor | None = None
    own_kernel_predictions: dict[int, Tensor] = field(default_factory=dict)

    def function_distance(self, width: int, alpha: float, reference: str = "own") -> float:
        """||f_alpha - f_K|| / ||f_K|| on the held-out inputs: the trained network against
        kernel regression at the same training time with its own initial kernel Theta_{w_0}
        (`reference="own"`, the lazy limit alpha -> inf at this width: Chizat et al. 2019) or
        with the analytic NTK (`"analytic"`, the further width -> inf limit). The zero
        predictor is at distance 1; NaN if the run diverged."""
        ref = {"own": self.own_kernel_predictions.get(width), "analytic": self.kernel_prediction}
        target = ref[check_choice("reference", reference, tuple(ref))]
        pred = self.predictions.get((width, alpha))
        if pred is None or target is None:
            return math.nan
        return ((pred - target).norm() / target.norm()).item()

    def distance_table(self, reference: str = "own") -> pd.DataFrame:
        """`function_distance` as a (alpha x width) table."""
        return pd.DataFrame(
            {
                w: {
                    a: self.function_distance(w, a, reference)
                    for a in sorted(set(self.table.alpha))
                }
                for w in sorted(set(self.table.width))
            }
        ).rename_axis(index="alpha", columns="width")

    def grid(self, column: str) -> pd.DataFrame:
        """`column` as a (alpha x width) table."""
        return self.table.pivot(index="alpha", columns="width", values=column)

    def alpha_slope(self, column: str, width: int, n_largest: int = 2) -> float:
        """Exponent p of column ~ alpha^p at one width, fitted over the `n_largest` alphas
        (the lazy corner; theory -1)."""
        t = self.table[self.table.width == width].sort_values("alpha").tail(n_largest)
        return fit_loglog_slope(t.alpha, t[column])

    def neuron_movement(self, width: int, alpha: float) -> dict[str, float]:
        """How the first-layer neurons of one run moved, from their (<w_i, u>, ||P_perp w_i||)
        coordinates: `largest_move`, max_i ||c_i(T) - c_i(0)|| / mean_i ||c_i(0)||;
        `grown_along`, the fraction of neurons whose |<w_i, u>| ends above twice the largest
        at initialization; `grown_across`, the fraction whose ||P_perp w_i|| grew by > 10%.
        NaN when the run diverged."""
        coords, keys = self.neurons[(width, alpha)], ("largest_move", "grown_along", "grown_across")
        if "final" not in coords:
            return dict.fromkeys(keys, math.nan)
        start, end = coords["init"], coords["final"]
        move = torch.linalg.vector_norm(end - start, dim=1).max()
        along = (end[:, 0].abs() > 2 * start[:, 0].abs().max()).double().mean()
        across = (end[:, 1] > 1.1 * start[:, 1]).double().mean()
        move = move / torch.linalg.vector_norm(start, dim=1).mean()
        return dict(zip(keys, (move.item(), along.item(), across.item()), strict=True))

    def neuron_table(self, alphas: tuple[float, ...] | None = None) -> pd.DataFrame:
        """`neuron_movement` for every width at `alphas` (default: the smallest and largest)."""
        all_alphas = sorted(set(self.table.alpha))
        alphas = alphas or (all_alphas[0], all_alphas[-1])
        rows = [
            {"width": w, "alpha": a, **self.neuron_movement(w, a)}
            for a in alphas
            for w in sorted(set(self.table.width))
        ]
        return pd.DataFrame(rows)

    def collapse(self, column: str = "feature_change") -> pd.DataFrame:
        """Pairs of runs with the same alpha * sqrt(n) at different widths: their `column`
        values side by side (columns narrow, wide, ratio wide / narrow)."""
        t = self.table.assign(key=np.round(np.log2(self.table.alpha_sqrt_n), 6))
        rows = []
        for key, group in t.groupby("key"):
            g = group.sort_values("width")
            for (_, a), (_, b) in zip(g.iloc[:-1].iterrows(), g.iloc[1:].iterrows(), strict=True):
                rows.append(
                    {
                        "alpha_sqrt_n": 2.0**key,
                        "narrow": a.width,
                        "wide": b.width,
                        "ratio": b[column] / a[column],
                    }
                )
        return pd.DataFrame(rows, columns=["alpha_sqrt_n", "narrow", "wide", "ratio"])


def ntk_regression(setup: Setup = Setup(), task: Task | None = None, width: int | None = None):
    """Held-out predictions (N, 1) of NTK regression at training time `steps` (learning rate
    `lr`), from f_alpha = 0: with the analytic kernel of f (`width=None`; the lazy limit of
    every run) or with the initial empirical NTK of the network of `width` (its own lazy
    limit, alpha -> inf at that width)."""
    task = task if task is not None else setup.task()
    x_tr, y_tr, x_te, _ = task
    if width is None:
        kernel = MLPKernel(depth=1, activation=setup.activation, weight_std=1.0, bias_std=0.0)
        k_tr, k_te = kernel.ntk(x_tr), kernel.ntk(x_te, x_tr)
    else:
        net = setup.network(width)
        k_tr, k_te = empirical_ntk(net, x_tr), empirical_ntk(net, x_te, x_tr)
    return gradient_descent_mse_ensemble(
        k_tr, k_te, y_tr, t=float(setup.steps), learning_rate=setup.lr
    ).mean


def ntk_regression_loss(setup: Setup = Setup(), task: Task | None = None) -> float:
    """Held-out loss of analytic NTK regression (`ntk_regression`): the lazy limit of every run."""
    task = task if task is not None else setup.task()
    return 0.5 * (ntk_regression(setup, task) - task.y_test).pow(2).mean().item()


def run_grid(
    widths: tuple[int, ...] = WIDTHS,
    alphas: tuple[float, ...] = ALPHAS,
    setup: Setup = Setup(),
    *,
    verbose: bool = False,
) -> PhaseDiagram:
    """`run_one` at every width and alpha, on one task and one initialization per width."""
    task = setup.task()
    rows, histories, neurons, predictions = [], {}, {}, {}
    for width in widths:
        for alpha in alphas:
            run = run_one(width, alpha, setup, task)
            rows.append(run.row)
            neurons[(width, alpha)] = run.neurons
            if run.history is not None:
                histories[(width, alpha)] = run.history
                predictions[(width, alpha)] = run.prediction
            if verbose:
                r = run.row
                print(
                    f"  width {width:5d} alpha {alpha:8.4g}: held-out loss {r['test_loss']:.3g}, "
                    f"features {r['feature_change']:.3g}, kernel {r['kernel_change']:.3g} "
                    f"({r['seconds']:.1f} s)",
                    flush=True,
                )
    zero = 0.5 * task.y_test.pow(2).mean().item()
    kernel = ntk_regression(setup, task)
    return PhaseDiagram(
        pd.DataFrame(rows),
        histories,
        neurons,
        0.5 * (kernel - task.y_test).pow(2).mean().item(),
        setup,
        zero,
        predictions,
        kernel,
        {w: ntk_regression(setup, task, width=w) for w in widths},
    )


# ------------------------------------------------------------------------------ figures


def _width_colors(widths: list[int]) -> dict[int, tuple]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    return {w: cmap(i / max(1, len(widths) - 1)) for i, w in enumerate(widths)}


def plot_phase_diagram(pd_: PhaseDiagram):
    """Held-out loss, feature movement and kernel movement over (width, alpha), each cell
    labelled with its value; the dashed line is alpha * sqrt(n) = 1."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    panels = [
        ("test_loss", "held-out loss (0.5 MSE)", None),
        ("feature_change", "feature movement ||h(T) - h(0)|| / ||h(0)||", LogNorm()),
        ("kernel_change", "kernel movement ||Θ(T) - Θ(0)|| / ||Θ(0)||", LogNorm()),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for ax, (column, title, norm) in zip(axes, panels, strict=True):
        grid = pd_.grid(column)
        widths, alphas = list(grid.columns), list(grid.index)
        image = ax.imshow(grid.to_numpy(), origin="lower", cmap="magma_r", norm=norm, aspect="auto")
        shade = image.norm(grid.to_numpy())  # 0 (light) .. 1 (dark) per cell
        for i in range(len(alphas)):
            for j in range(len(widths)):
                color = "white" if shade[i, j] > 0.5 else "black"
                ax.text(
                    j,
                    i,
                    f"{grid.iloc[i, j]:.2g}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color=color,
                )
        # alpha sqrt(n) = 1 on the cell grid (drawn where it lies inside the alpha range)
        js = np.arange(len(widths))
        rows = (np.log(1 / np.sqrt(widths)) - np.log(alphas[0])) / np.log(alphas[1] / alphas[0])
        inside = (rows >= 0) & (rows <= len(alphas) - 1)
        ax.plot(js[inside], rows[inside], "--", color="tab:cyan", lw=2, label="α √n = 1")
        ax.set_xticks(js, [str(w) for w in widths])
        ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set(xlabel="width n", ylabel="output scale α (log grid)")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False)
        fig.colorbar(image, ax=ax)
    fig.suptitle("lazy (top) to rich (bottom): f_α = α (f(w) - f(w₀)) trained on L / α²")
    fig.tight_layout()
    return fig


def plot_movement(pd_: PhaseDiagram):
    """Feature and kernel movement against alpha (both ~ 1/alpha in the lazy corner) and the
    feature movement against alpha * sqrt(n) (one curve for all widths)."""
    import matplotlib.pyplot as plt

    t = pd_.table
    widths = sorted(set(t.width))
    colors = _width_colors(widths)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    for w in widths:
        r = t[t.width == w].sort_values("alpha")
        axes[0].loglog(r.alpha, r.feature_change, "o-", color=colors[w], label=f"width {w}")
        axes[1].loglog(r.alpha, r.kernel_change, "s-", color=colors[w], label=f"width {w}")
        axes[2].loglog(r.alpha_sqrt_n, r.feature_change, "o-", color=colors[w], label=f"width {w}")
    alphas = np.array(sorted(set(t.alpha)))
    for ax, column in zip(axes[:2], ("feature_change", "kernel_change"), strict=True):
        anchor = t[(t.alpha == alphas[-1])][column].max()
        ax.loglog(alphas[2:], anchor * alphas[-1] / alphas[2:], "k:", label="∝ 1/α")
    axes[0].set(xlabel="output scale α", ylabel="relative feature movement", title="features")
    axes[1].set(xlabel="output scale α", ylabel="relative kernel movement", title="tangent kernel")
    axes[2].set(
        xlabel="α √n", ylabel="relative feature movement", title="one curve in α √n (all widths)"
    )
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_neurons(ax, pd_: PhaseDiagram, width: int, alpha: float) -> None:
    """First-layer neurons of one run in the (<w_i, u>, ||P_perp w_i||) plane, before (grey)
    and after (colored) training, with arrows between."""
    coords = pd_.neurons[(width, alpha)]
    start = coords["init"].numpy()
    ax.scatter(start[:, 0], start[:, 1], s=12, color="0.6", label="initialization")
    if "final" in coords:
        end = coords["final"].numpy()
        ax.quiver(
            start[:, 0],
            start[:, 1],
            end[:, 0] - start[:, 0],
            end[:, 1] - start[:, 1],
            angles="xy",
            scale_units="xy",
            scale=1,
            width=0.003,
            color="C0",
            alpha=0.6,
        )
        ax.scatter(end[:, 0], end[:, 1], s=12, color="C0", label="after training")
    ax.set(
        xlabel="<w_i, u> (along the target direction)",
        ylabel="||w_i - <w_i, u> u|| (the other d - 1 directions)",
        title=f"width {width}, α = {alpha:g} (α √n = {alpha * math.sqrt(width):.3g})",
    )
    ax.legend(fontsize=8, loc="upper right")


def plot_neurons(pd_: PhaseDiagram, width: int = 64, alphas: tuple[float, ...] | None = None):
    """`draw_neurons` for a few alphas (default: smallest, 1, largest) at one width."""
    import matplotlib.pyplot as plt

    all_alphas = sorted(set(pd_.table.alpha))
    alphas = alphas or (all_alphas[0], 1.0 if 1.0 in all_alphas else all_alphas[1], all_alphas[-1])
    fig, axes = plt.subplots(1, len(alphas), figsize=(5.3 * len(alphas), 4.4))
    for ax, alpha in zip(np.atleast_1d(axes), alphas, strict=True):
        draw_neurons(ax, pd_, width, alpha)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------- CLI


def summary(pd_: PhaseDiagram) -> str:
    """The printed report: the grids, the slopes across alpha, the collapse, the losses of
    the corners against predicting 0 and kernel regression, and how the neurons moved."""
    lines = []
    for column in ("train_loss", "test_loss", "feature_change", "kernel_change", "alignment"):
        lines.append(f"{column} (rows: alpha, columns: width)")
        lines.append(pd_.grid(column).to_string(float_format=lambda v: f"{v:.3g}"))
    for w in sorted(set(pd_.table.width)):
        lines.append(
            f"width {w:5d}: slope across the two largest alphas of feature movement "
            f"{pd_.alpha_slope('feature_change', w):+.3f}, of kernel movement "
            f"{pd_.alpha_slope('kernel_change', w):+.3f} (theory -1)"
        )
    ratios = pd_.collapse().ratio
    if len(ratios):
        lines.append(
            f"feature movement at equal alpha*sqrt(n), wide / narrow: {ratios.min():.3f} to "
            f"{ratios.max():.3f} (1 if alpha*sqrt(n) alone sets it)"
        )
    lines.append(f"analytic NTK regression at the same training time: {pd_.kernel_loss:.4g}")
    lines.append(f"held-out loss of predicting 0: {pd_.zero_loss:.4g}")
    loss = pd_.grid("test_loss")
    for w in loss.columns:  # the corners: rich / lazy, and lazy against kernel regression
        rich, lazy = loss[w].iloc[0], loss[w].iloc[-1]
        lines.append(
            f"width {w:5d}: held-out loss smallest / largest alpha {rich / lazy:.3f}, "
            f"largest alpha - NTK regression {lazy - pd_.kernel_loss:+.3f}"
        )
    lines.append("first-layer neurons, smallest and largest alpha:")
    lines.append(pd_.neuron_table().to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Chapter 04 as a script: figures 04_phase_diagram.png, 04_movement.png, 04_neurons.png
    and a printed summary; returns the results."""
    d = Setup()
    parser = _cli.parser("Chapter 04: the output scale alpha moves a network from lazy to rich.")
    _cli.add_int_list(parser, "--widths", WIDTHS, "network widths")
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=list(ALPHAS), help="output scales alpha"
    )
    parser.add_argument("--steps", type=int, default=d.steps, help="gradient-descent steps")
    args = parser.parse_args(argv)
    setup = Setup(steps=args.steps, seed=args.seed)
    start = _cli.start(args)
    pd_ = run_grid(tuple(args.widths), tuple(args.alphas), setup, verbose=True)
    width = sorted(args.widths)[min(1, len(args.widths) - 1)]
    names = [
        _cli.save(plot_phase_diagram(pd_), args.out, "04_phase_diagram.png").name,
        _cli.save(plot_movement(pd_), args.out, "04_movement.png").name,
        _cli.save(plot_neurons(pd_, width), args.out, "04_neurons.png").name,
    ]
    print(summary(pd_))
    _cli.finish(args.out, names, start)
    return {"phase_diagram": pd_}


if __name__ == "__main__":
    _cli.run(main)
