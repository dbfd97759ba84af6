"""muP: feature learning, and "wider is better", at any width with one learning rate.

Under the Maximal Update Parametrization (Yang & Hu 2021, arXiv:2011.14522) every layer's
features move by Theta(1) during training at any width n, and the network has a feature-learning
infinite-width limit; with `mup.optim.MuAdam` the same learning rate then works at every width
and, at that learning rate, the training loss improves monotonically with the width (Yang et
al. 2022, "Tensor Programs V", arXiv:2203.03466, Fig. 1). Under the standard parametrization
(SP) with Adam at the same learning rate the readout update grows with n (Δf ~ n * lr), so the
best learning rate shifts with the width and a fixed one over-shoots the wide networks.

The experiment (`run_mup_widths`): MLPs of widths 10 ... 10000 trained with one peak learning
rate, Adam / MuAdam with a cosine decay, mini-batches of 256, on `ntk.data.make_low_dim_task`
(y = He_2(<u, x>) in d = 32, 4096 training points with label noise 0.5): the final *training*
loss measures how well a network fits (and partly memorizes) the data in a fixed budget of
steps, which is where width helps, as in Tensor Programs V. We record

* the final train and test loss (0.5 * mean squared error) per width;
* the relative change ||h(T) - h(0)||_F / ||h(0)||_F of the last hidden layer's features on a
  probe batch, and its fitted log-log slope against the width (muP: ~0; NTK regime: -1/2);
* that every loss stays finite.

`compare_mup_sp` puts the muP and SP training curves of one width (5000) side by side.
Default depth is 1 hidden layer so that width 10000 trains in seconds on a CPU; `depth=2`
adds a (width x width) hidden matrix (10^8 weights at width 10000). With one hidden layer and
Adam, SP moves its features by O(1) too (the input layer has a finite fan-in and Adam's update
size does not depend on the gradient's scale): SP fails through its readout, whose update
grows with the width. The feature-change contrast appears in a hidden (width x width) layer:
`run_depth2_features` trains depth-2 networks (widths 50 to 2000), where SP's hidden
features change ~ width * lr while muP's stay Theta(1).

    python ntk/feature_learning_mup.py --out figures
    # writes figures/feature_learning_mup.png and figures/mup_vs_standard_comparison.png
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pandas as pd
import torch
from torch import nn

from ntk._checks import check_parametrization
from ntk.chapters import _cli
from ntk.chapters._plots import finish_figure
from ntk.data import Task, make_low_dim_task
from ntk.fitting import fit_loglog_slope
from ntk.models.mlp import WideMLP, WideMLP_MuP
from ntk.training import History, TrainingDivergedError, train

WIDTHS = (10, 50, 200, 1000, 5000, 10000)
PARAMETRIZATIONS = ("mup", "sp")
OPTIMIZER = {"mup": "muadam", "sp": "adam"}


@dataclass(frozen=True)
class Setup:
    """Everything but the width: task, architecture and optimization (the defaults of main)."""

    steps: int = 1500
    lr: float = 0.03
    batch_size: int = 256
    seed: int = 0
    depth: int = 1
    base_width: int = 10  # muP == SP at this width (up to muP's zero readout init)
    dim: int = 32
    n_train: int = 4096
    n_test: int = 1024
    noise: float = 0.5
    log_points: int = 30  # logged steps per run (loss curves)

    def task(self) -> Task:
        """The low-dimensional-projection regression task (same for every width)."""
        return make_low_dim_task(
            self.n_train, self.n_test, self.dim, degree=2, noise=self.noise, seed=self.seed
        )


def cosine_schedule(steps: int) -> Callable[[int], float]:
    """lr factor 0.5 (1 + cos(pi t / steps)): the peak lr at t = 0, decaying to 0."""
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * step / steps))


def build_model(parametrization: str, width: int, setup: Setup = Setup()) -> nn.Module:
    """A fresh MLP (seeded by `setup.seed`): `WideMLP_MuP` (zero readout) or SP `WideMLP`."""
    parametrization = check_parametrization("parametrization", parametrization, PARAMETRIZATIONS)
    torch.manual_seed(setup.seed)
    if parametrization == "mup":
        return WideMLP_MuP(
            setup.dim, width, depth=setup.depth, base_width=setup.base_width, readout_zero_init=True
        )
    return WideMLP(setup.dim, width, depth=setup.depth, parametrization="sp")


def train_width(
    parametrization: str, width: int, setup: Setup = Setup(), task: Task | None = None
) -> tuple[dict, History | None]:
    """Train one network; return its summary row and History (None if it diverged)."""
    parametrization = check_parametrization("parametrization", parametrization, PARAMETRIZATIONS)
    task = task if task is not None else setup.task()
    model = build_model(parametrization, width, setup)
    layer = f"hidden.{setup.depth - 1}"
    row = {"parametrization": parametrization, "width": width}
    start = time.perf_counter()
    try:
        hist = train(
            model,
            *task,
            steps=setup.steps,
            lr=setup.lr,
            optimizer=OPTIMIZER[parametrization],
            batch_size=setup.batch_size,
            log_every=max(1, setup.steps // setup.log_points),
            seed=setup.seed,
            track_weights=False,
            lr_schedule=cosine_schedule(setup.steps),
            progress=False,
        )
    except TrainingDivergedError as err:  # SP at a large width and lr may blow up
        row.update(
            train_loss=math.inf,
            test_loss=math.inf,
            feature_change=math.nan,
            diverged_at=err.step,
            seconds=time.perf_counter() - start,
        )
        return row, None
    final = hist.final()
    row.update(
        train_loss=final["train_loss"],
        test_loss=final["test_loss"],
        feature_change=final[f"feature_change/{layer}"],
        diverged_at=None,
        seconds=time.perf_counter() - start,
    )
    return row, hist


@dataclass
class WidthSweep:
    """`table`: one row per (parametrization, width); `histories[(parametrization, width)]`."""

    table: pd.DataFrame
    histories: dict[tuple[str, int], History] = field(default_factory=dict)
    setup: Setup = Setup()

    def losses(self, parametrization: str, column: str = "train_loss") -> pd.Series:
        """Final losses of one parametrization, indexed by width."""
        parametrization = check_parametrization(
            "parametrization", parametrization, PARAMETRIZATIONS
        )
        t = self.table[self.table.parametrization == parametrization]
        return t.set_index("width")[column]

    def feature_slope(self, parametrization: str) -> float:
        """Fitted exponent p of feature change ~ width^p."""
        parametrization = check_parametrization(
            "parametrization", parametrization, PARAMETRIZATIONS
        )
        t = self.table[self.table.parametrization == parametrization]
        return fit_loglog_slope(t.width, t.feature_change)

    def is_monotone(self, parametrization: str, column: str = "train_loss") -> bool:
        """True when the loss strictly decreases with every increase of the width."""
        losses = self.losses(parametrization, column).sort_index().to_numpy()
        return bool((losses[1:] < losses[:-1]).all())

    def relative_improvement(self, parametrization: str = "mup") -> float:
        """(L(narrowest) - L(widest)) / L(narrowest) of the final training loss."""
        losses = self.losses(parametrization).sort_index()
        return float((losses.iloc[0] - losses.iloc[-1]) / losses.iloc[0])


def run_mup_widths(
    widths: tuple[int, ...] = WIDTHS,
    setup: Setup = Setup(),
    parametrizations: tuple[str, ...] = PARAMETRIZATIONS,
    *,
    verbose: bool = False,
) -> WidthSweep:
    """Train every parametrization at every width with the same task, lr and seed."""
    task = setup.task()
    rows, histories = [], {}
    for p in parametrizations:
        for width in widths:
            row, hist = train_width(p, width, setup, task)
            rows.append(row)
            if hist is not None:
                histories[(p, width)] = hist
            if verbose:
                print(
                    f"  {p:8s} width {width:6d}: train loss {row['train_loss']:.4g}, "
                    f"feature change {row['feature_change']:.3g} ({row['seconds']:.1f} s)",
                    flush=True,
                )
    return WidthSweep(pd.DataFrame(rows), histories, setup)


DEPTH2_WIDTHS = (50, 200, 1000, 2000)
DEPTH2_SETUP = Setup(depth=2, steps=100, batch_size=64, n_train=1024)


def run_depth2_features(
    widths: tuple[int, ...] = DEPTH2_WIDTHS, setup: Setup = DEPTH2_SETUP
) -> WidthSweep:
    """`run_mup_widths` with two hidden layers: feature change of the (width x width) layer."""
    return run_mup_widths(widths, setup)


def compare_mup_sp(
    width: int = 5000, setup: Setup = Setup(), sweep: WidthSweep | None = None
) -> dict[str, History | None]:
    """Training histories of muP and SP at one width (reused from `sweep` when it has them)."""
    out: dict[str, History | None] = {}
    task = None
    for p in PARAMETRIZATIONS:
        if sweep is not None and (p, width) in sweep.histories:
            out[p] = sweep.histories[(p, width)]
        else:
            task = task if task is not None else setup.task()
            out[p] = train_width(p, width, setup, task)[1]
    return out


# ------------------------------------------------------------------------------ figures

COLORS = {"mup": "C0", "sp": "C3"}
LABELS = {"mup": "muP (MuAdam)", "sp": "SP (Adam)"}


def plot_width_sweep(sweep: WidthSweep, depth2: WidthSweep | None = None):
    """Final loss and feature change against width, the muP loss curves, and optionally the
    depth-2 feature change."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4 if depth2 is not None else 3, figsize=(20 if depth2 else 15, 4.2))
    for p in sweep.table.parametrization.unique():
        t = sweep.table[sweep.table.parametrization == p]
        axes[0].loglog(t.width, t.train_loss, "o-", color=COLORS[p], label=f"{LABELS[p]} train")
        axes[0].loglog(
            t.width, t.test_loss, "s--", color=COLORS[p], alpha=0.6, label=f"{LABELS[p]} test"
        )
        axes[1].loglog(
            t.width,
            t.feature_change,
            "o-",
            color=COLORS[p],
            label=f"{LABELS[p]}: slope {sweep.feature_slope(p):+.2f}",
        )
    axes[0].set(
        xlabel="width",
        ylabel="final loss (0.5 MSE)",
        title=f"one learning rate ({sweep.setup.lr:g}) at every width",
    )
    axes[1].set(xlabel="width", ylabel="||h(T) - h(0)|| / ||h(0)||", title="feature change")
    cmap = plt.get_cmap("viridis")
    widths = sorted(w for p, w in sweep.histories if p == "mup")
    for i, w in enumerate(widths):
        h = sweep.histories[("mup", w)]
        axes[2].semilogy(
            h.step, h.train_loss, color=cmap(i / max(1, len(widths) - 1)), label=f"width {w}"
        )
    axes[2].set(xlabel="step", ylabel="train loss", title="muP: wider is better")
    if depth2 is not None:
        for p in depth2.table.parametrization.unique():
            t = depth2.table[depth2.table.parametrization == p]
            axes[3].loglog(
                t.width,
                t.feature_change,
                "o-",
                color=COLORS[p],
                label=f"{LABELS[p]}: slope {depth2.feature_slope(p):+.2f}",
            )
        axes[3].set(
            xlabel="width",
            ylabel="||h2(T) - h2(0)|| / ||h2(0)||",
            title="depth 2: hidden (width x width) layer",
        )
    return finish_figure(fig, axes)


def plot_comparison(histories: dict[str, History | None], width: int):
    """Loss and feature-change curves of muP and SP at one width."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for p, h in histories.items():
        if h is None:
            continue
        axes[0].semilogy(h.step, h.train_loss, color=COLORS[p], label=f"{LABELS[p]} train")
        axes[0].semilogy(h.step, h.test_loss, "--", color=COLORS[p], label=f"{LABELS[p]} test")
        (layer,) = [k for k in h.feature_change][-1:]
        axes[1].plot(h.step, h.feature_change[layer], color=COLORS[p], label=LABELS[p])
    axes[0].set(xlabel="step", ylabel="loss (0.5 MSE)", title=f"width {width}")
    axes[1].set(xlabel="step", ylabel="||h(t) - h(0)|| / ||h(0)||", title="feature change")
    return finish_figure(fig, axes)


# ---------------------------------------------------------------------------------- CLI


def summary(
    sweep: WidthSweep, comparison_width: int | None = None, depth2: WidthSweep | None = None
) -> str:
    """The printed report; its last line is the widest-vs-narrowest muP improvement."""
    t = sweep.table
    lines = [
        f"{'param':9s} {'width':>6s} {'train loss':>11s} {'test loss':>10s} "
        f"{'feat. change':>12s} {'time s':>7s}"
    ]
    for r in t.itertuples():
        lines.append(
            f"{r.parametrization:9s} {r.width:6d} {r.train_loss:11.4g} "
            f"{r.test_loss:10.4g} {r.feature_change:12.3g} {r.seconds:7.1f}"
        )
    for p in t.parametrization.unique():
        finite = bool(torch.isfinite(torch.tensor(sweep.losses(p).to_numpy())).all())
        lines.append(
            f"{LABELS[p]}: train loss monotone in width: {sweep.is_monotone(p)}; "
            f"feature-change slope {sweep.feature_slope(p):+.3f}; "
            f"all losses finite: {finite}"
        )
    if comparison_width is not None and comparison_width in set(t.width):
        m = sweep.losses("mup").get(comparison_width)
        s = sweep.losses("sp").get(comparison_width) if "sp" in set(t.parametrization) else None
        if s is not None:
            lines.append(f"width {comparison_width}: muP train loss {m:.4g} vs SP {s:.4g}")
    if depth2 is not None:
        lines.append(
            f"depth 2 (widths {sorted(set(depth2.table.width))}): hidden-layer "
            f"feature-change slope muP {depth2.feature_slope('mup'):+.3f}, "
            f"SP {depth2.feature_slope('sp'):+.3f}"
        )
    losses = sweep.losses("mup").sort_index()
    lines.append(
        f"relative improvement of the widest ({losses.index[-1]}) over the narrowest "
        f"({losses.index[0]}) muP network: {100 * sweep.relative_improvement('mup'):.4g}% "
        f"(final train loss {losses.iloc[0]:.4g} -> {losses.iloc[-1]:.4g})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Chapter 05 as a script, the main job: figures feature_learning_mup.png and
    mup_vs_standard_comparison.png and a printed report whose last line is the muP improvement;
    returns the results."""
    d = Setup()
    parser = _cli.parser("Chapter 05: muP learns features at every width with one learning rate.")
    _cli.add_int_list(parser, "--widths", WIDTHS, "network widths")
    parser.add_argument("--steps", type=int, default=d.steps, help="training steps")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate, all widths")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="mini-batch size")
    parser.add_argument("--depth", type=int, default=d.depth, help="hidden layers")
    parser.add_argument(
        "--compare-width", type=int, default=5000, help="width of the muP/SP comparison"
    )
    parser.add_argument("--skip-depth2", action="store_true", help="skip the depth-2 sweep")
    args = parser.parse_args(argv)
    setup = Setup(
        steps=args.steps, lr=args.lr, seed=args.seed, batch_size=args.batch_size, depth=args.depth
    )
    start = _cli.start(args)
    print(
        f"muP vs SP, widths {args.widths}, {setup.steps} steps, lr {setup.lr}, "
        f"depth {setup.depth}, seed {setup.seed}",
        flush=True,
    )
    sweep = run_mup_widths(tuple(args.widths), setup, verbose=True)
    comparison = compare_mup_sp(args.compare_width, setup, sweep)
    depth2 = None
    if not args.skip_depth2:
        print(f"depth 2, widths {list(DEPTH2_WIDTHS)}, {DEPTH2_SETUP.steps} steps", flush=True)
        depth2_setup = replace(DEPTH2_SETUP, lr=setup.lr, seed=setup.seed)
        depth2 = run_depth2_features(DEPTH2_WIDTHS, depth2_setup)
    names = [
        _cli.save(plot_width_sweep(sweep, depth2), args.out, "feature_learning_mup.png").name,
        _cli.save(
            plot_comparison(comparison, args.compare_width),
            args.out,
            "mup_vs_standard_comparison.png",  # a stable name: documents link to this figure
        ).name,
    ]
    _cli.finish(args.out, names, start)
    print(summary(sweep, args.compare_width, depth2))
    return {"sweep": sweep, "comparison": comparison, "depth2": depth2}
