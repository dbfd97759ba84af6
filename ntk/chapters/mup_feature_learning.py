"""muP learns features at every width with one learning rate, and the wide limit exists.

Chapter 05 and the project's main job (`python ntk/feature_learning_mup.py`): two-layer ReLU
networks of widths 10 to 10000, one SGD learning rate, on a multi-index task
(`ntk.data.make_low_dim_task`): x uniform on the sphere of radius sqrt(d), d = 64, and

    y = (1 / sqrt(r)) sum_{j <= r} He_2(<u_j, x>) / sqrt(2),   r = 4 orthonormal u_j, no noise,

2048 training and 2048 held-out points. Rotation-invariant kernels need ~d^2 samples for this
degree-2 target (Ghorbani et al. 2021, arXiv:1904.12191); a network that finds span(u_j)
needs far fewer (Damian et al. 2022, arXiv:2206.15144). The held-out loss 0.5 mean((f - y)^2)
is the primary metric (predicting 0 scores 0.45 on the held-out set). `run_sweep` trains, on
the same mini-batches:

* "mup": `WideMLP_MuP` (readout multiplier base_width / n, zero readout) with `mup.MuSGD`
  (learning rate x n / base_width for the first layer and the readout weights): the Maximal
  Update Parametrization of a two-layer net (Yang & Hu 2021, arXiv:2011.14522), = SP at the
  base width 10; several init seeds, whose spread measures the distance to the limit;
* "sp": the standard parametrization (`WideMLP`), plain SGD;
* "ntk": the NTK parametrization, plain SGD, centered (trained on y + f_0, predicting f - f_0;
  Chizat et al. 2019, arXiv:1812.07956): the lazy regime, whose limit is NTK regression.

Per run: losses, held-out predictions, feature change, and the first-layer alignment
||W U||_F^2 / ||W||_F^2 with U = (u_1..u_r) (r / d = 1/16 at initialization).
`kernel_baselines` gives NNGP and NTK regression on the same task; `claims` checks the results.

    python ntk/feature_learning_mup.py --out figures
    # writes figures/feature_learning_mup.png and figures/mup_vs_standard_comparison.png
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor, nn

from ntk._checks import check_choices, check_parametrization, check_positive, check_positive_int
from ntk.chapters import _cli
from ntk.chapters._plots import plain_log_ticks
from ntk.chapters.lazy_to_rich import alignment
from ntk.data import Task, make_low_dim_task
from ntk.fitting import fit_loglog_slope
from ntk.kernels.analytic import MLPKernel
from ntk.kernels.predict import gp_posterior, gradient_descent_mse_ensemble
from ntk.models.mlp import WideMLP, WideMLP_MuP
from ntk.registry import select
from ntk.training import History, TrainingDivergedError, train

WIDTHS = (10, 30, 100, 300, 1000, 3000, 10000)
SEEDS = (0, 1, 2)
PARAMETRIZATIONS = select("mup", "sp", "ntk")
OPTIMIZER = {"mup": "musgd", "sp": "sgd", "ntk": "sgd"}


@dataclass(frozen=True)
class Setup:
    """Everything but the width and the init seed: task, architecture, optimization."""

    dim: int = 64
    n_directions: int = 4
    n_train: int = 2048
    n_test: int = 2048
    noise: float = 0.0
    steps: int = 400
    lr: float = 1.0
    batch_size: int = 256
    base_width: int = 10  # muP equals SP at this width (up to the zero readout)
    data_seed: int = 0  # the task and the mini-batch order, shared by every run
    log_points: int = 20  # logged steps per run (learning curves)

    def __post_init__(self) -> None:
        positive = ("dim", "n_directions", "n_train", "n_test", "steps", "batch_size", "base_width")
        for name in (*positive, "log_points"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("data_seed", self.data_seed, minimum=0)
        check_positive("lr", self.lr)
        if self.n_directions > self.dim:
            raise ValueError(f"n_directions must be <= dim={self.dim}, got {self.n_directions}")

    def task(self) -> Task:
        """The multi-index task: the same data for every width, seed and parametrization."""
        return make_low_dim_task(
            self.n_train,
            self.n_test,
            self.dim,
            degree=2,
            n_directions=self.n_directions,
            noise=self.noise,
            seed=self.data_seed,
        )

    def schedule(self) -> Callable[[int], float]:
        """Cosine decay of the learning rate: factor 0.5 (1 + cos(pi t / steps))."""
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * step / self.steps))


def build_model(parametrization: str, width: int, setup: Setup, seed: int = 0) -> nn.Module:
    """A fresh two-layer ReLU network (init seeded by `seed`) in the given parametrization."""
    parametrization = check_parametrization("parametrization", parametrization, PARAMETRIZATIONS)
    check_positive_int("width", width)
    torch.manual_seed(check_positive_int("seed", seed, minimum=0))
    if parametrization == "mup":
        return WideMLP_MuP(
            setup.dim, width, depth=1, base_width=setup.base_width, readout_zero_init=True
        )
    return WideMLP(setup.dim, width, depth=1, parametrization=parametrization)


@dataclass
class Run:
    """One trained network: its summary `row`, `history` and held-out predictions (N, 1);
    history and predictions are None when training diverged."""

    row: dict
    history: History | None
    predictions: Tensor | None


def train_one(
    parametrization: str, width: int, seed: int, setup: Setup, task: Task | None = None
) -> Run:
    """Train one network with SGD (MuSGD for muP) at `setup.lr`, cosine decay, mini-batches."""
    parametrization = check_parametrization("parametrization", parametrization, PARAMETRIZATIONS)
    task = task if task is not None else setup.task()
    x_tr, y_tr, x_te, y_te = task
    model = build_model(parametrization, width, setup, seed)
    align0 = alignment(model.hidden[0].weight, task.info["directions"])
    with torch.no_grad():  # lazy nets are centered: f - f_0 is the prediction
        f0_tr, f0_te = (model(x_tr), model(x_te)) if parametrization == "ntk" else (0.0, 0.0)
    row = {"parametrization": parametrization, "width": width, "seed": seed}
    start = time.perf_counter()
    try:
        hist = train(
            model,
            x_tr,
            y_tr + f0_tr,
            x_te,
            y_te + f0_te,
            steps=setup.steps,
            lr=setup.lr,
            optimizer=OPTIMIZER[parametrization],
            batch_size=setup.batch_size,
            log_every=max(1, setup.steps // setup.log_points),
            seed=setup.data_seed,
            track_weights=False,
            lr_schedule=setup.schedule(),
            progress=False,
        )
    except TrainingDivergedError as err:
        nan = math.nan
        row.update(train_loss=math.inf, test_loss=math.inf, alignment=nan, alignment_init=align0)
        row.update(feature_change=nan, diverged_at=err.step, seconds=time.perf_counter() - start)
        return Run(row, None, None)
    with torch.no_grad():
        pred = (model(x_te) - f0_te).double()
    final = hist.final()
    row.update(
        train_loss=final["train_loss"],
        test_loss=final["test_loss"],
        alignment=alignment(model.hidden[0].weight, task.info["directions"]),
        alignment_init=align0,
        feature_change=final["feature_change/hidden.0"],
        diverged_at=None,
        seconds=time.perf_counter() - start,
    )
    return Run(row, hist, pred)


@dataclass
class Sweep:
    """Runs over widths, seeds and parametrizations: `table` (one row per run), `histories`
    and held-out `predictions` keyed by (parametrization, width, seed)."""

    table: pd.DataFrame
    histories: dict[tuple[str, int, int], History] = field(default_factory=dict)
    predictions: dict[tuple[str, int, int], Tensor] = field(default_factory=dict)
    setup: Setup = Setup()

    def rows(self, parametrization: str) -> pd.DataFrame:
        parametrization = check_parametrization(
            "parametrization", parametrization, PARAMETRIZATIONS
        )
        rows = self.table[self.table.parametrization == parametrization]
        if rows.empty:
            raise ValueError(f"the sweep has no {parametrization!r} runs")
        return rows

    def mean(self, parametrization: str, column: str = "test_loss") -> pd.Series:
        """`column` averaged over seeds, indexed by width (increasing)."""
        return self.rows(parametrization).groupby("width")[column].mean().sort_index()

    def gaps(self, parametrization: str = "mup") -> pd.Series:
        """L(w_k) - L(w_{k+1}) of the seed-mean held-out loss, indexed by the wider width:
        positive when the wider network is better."""
        loss = self.mean(parametrization)
        return pd.Series(-loss.diff().to_numpy()[1:], index=loss.index[1:])

    def spread(self, parametrization: str = "mup") -> pd.Series:
        """RMS over seeds and held-out inputs of f_seed(x) - mean_seed f(x), by width: how far
        one network is from the seed average (NaN where fewer than two seeds trained)."""
        out = {}
        for w in sorted(set(self.rows(parametrization).width)):
            runs = [
                v for (p, n, _), v in self.predictions.items() if (p, n) == (parametrization, w)
            ]
            stack = torch.stack(runs) if len(runs) >= 2 else None  # (seeds, N, 1)
            out[w] = (
                math.nan if stack is None else (stack - stack.mean(0)).pow(2).mean().sqrt().item()
            )
        return pd.Series(out).sort_index()

    def spread_slope(self, parametrization: str = "mup") -> float:
        """Fitted exponent p of spread ~ width^p (-1/2 for independent O(n^-1/2) deviations)."""
        spread = self.spread(parametrization)
        return fit_loglog_slope(spread.index, spread.to_numpy())


def run_sweep(
    widths: tuple[int, ...] = WIDTHS,
    seeds: dict[str, tuple[int, ...]] | None = None,
    setup: Setup = Setup(),
    *,
    verbose: bool = False,
) -> Sweep:
    """Train every parametrization in `seeds` (name -> init seeds; default muP on `SEEDS`, SP
    and NTK on seed 0) at every width, on one task with the same mini-batches."""
    seeds = seeds if seeds is not None else {"mup": SEEDS, "sp": (0,), "ntk": (0,)}
    check_choices("seeds", list(seeds), PARAMETRIZATIONS)
    task = setup.task()
    rows, histories, predictions = [], {}, {}
    for p, p_seeds in seeds.items():
        for width in widths:
            for seed in p_seeds:
                run = train_one(p, width, seed, setup, task)
                rows.append(run.row)
                if run.history is not None:
                    histories[(p, width, seed)] = run.history
                    predictions[(p, width, seed)] = run.predictions
                if verbose:
                    r = run.row
                    print(
                        f"  {p:4s} width {width:6d} seed {seed}: held-out loss "
                        f"{r['test_loss']:.4g}, alignment {r['alignment']:.3f} "
                        f"({r['seconds']:.1f} s)",
                        flush=True,
                    )
    return Sweep(pd.DataFrame(rows), histories, predictions, setup)


def kernel_predictions(setup: Setup = Setup(), task: Task | None = None) -> dict[str, Tensor]:
    """Held-out predictions (N, 1), float64, of infinite-width kernel predictors on the task.

    The kernels of the two-layer ReLU network (`MLPKernel(depth=1)`, weight_std 1, no bias):
    the NNGP posterior mean (Bayesian inference with the infinitely wide network at init), NTK
    regression at the end of training (t = inf), and at the training time of the lazy networks
    (gradient flow of length lr * sum of the cosine schedule), their infinite-width limit.
    """
    task = task if task is not None else setup.task()
    x_tr, y_tr, x_te, _ = (t.double() for t in task)
    kernel = MLPKernel(depth=1, activation="relu", weight_std=1.0, bias_std=0.0)
    k_tr, k_te = kernel.kernels(x_tr), kernel.kernels(x_te, x_tr)
    schedule = setup.schedule()
    t_eff = sum(schedule(s) for s in range(setup.steps))
    return {
        "NNGP posterior": gp_posterior(k_tr.nngp, k_te.nngp, y_tr, diag_reg=1e-6).mean,
        "NTK regression (t = inf)": gradient_descent_mse_ensemble(
            k_tr.ntk, k_te.ntk, y_tr, diag_reg=1e-6
        ).mean,
        "NTK regression (lazy nets' t)": gradient_descent_mse_ensemble(
            k_tr.ntk, k_te.ntk, y_tr, t=t_eff, learning_rate=setup.lr
        ).mean,
    }


def kernel_baselines(setup: Setup = Setup(), task: Task | None = None) -> dict[str, float]:
    """Held-out loss 0.5 * mean((f - y)^2) of each of `kernel_predictions`."""
    task = task if task is not None else setup.task()
    y_te = task.y_test.double()
    return {
        name: 0.5 * (pred - y_te).pow(2).mean().item()
        for name, pred in kernel_predictions(setup, task).items()
    }


def distance_to_kernel(
    sweep: Sweep, parametrization: str = "ntk", target: Tensor | None = None
) -> pd.Series:
    """Relative function-space distance ||f_net - f_K|| / ||f_K|| on the held-out inputs between
    each trained network (first seed per width) and NTK regression stopped at the networks'
    training time, indexed by width. The zero predictor is at distance 1; the lazy networks'
    distance should fall like width^-1/2, the size of the finite-width kernel's fluctuation
    (Jacot et al. 2018; Lee et al. 2019). `target` defaults to that regression's predictions on
    `sweep.setup`'s task (`kernel_predictions`)."""
    if target is None:
        target = kernel_predictions(sweep.setup)["NTK regression (lazy nets' t)"]
    out = {}
    for (p, w, _), pred in sorted(sweep.predictions.items()):
        if p == parametrization and w not in out:
            out[w] = ((pred - target).norm() / target.norm()).item()
    return pd.Series(out).sort_index()


# ------------------------------------------------------------------------------- claims


def claims(
    sweep: Sweep, kernels: dict[str, float], lazy_kernel_prediction: Tensor | None = None
) -> list[tuple[str, bool]]:
    """The chapter's result sentences, each with the verdict of its check on this sweep (the
    thresholds leave wide margins to the values measured at the default setup).
    `lazy_kernel_prediction`: NTK regression's held-out predictions at the lazy networks'
    training time (default: computed from `sweep.setup`, see `distance_to_kernel`)."""
    mup_loss, gaps = sweep.mean("mup"), sweep.gaps("mup")
    mup = sweep.rows("mup")
    align_mup = mup.groupby("width").alignment.min()
    # alignment at init ~ Beta(n r / 2, n (d - r) / 2): mean r/d, sd sqrt(2 r/d (1 - r/d) / (n d))
    ratio, nd = sweep.setup.n_directions / sweep.setup.dim, mup.width * sweep.setup.dim
    init_sd = (2 * ratio * (1 - ratio) / nd) ** 0.5
    ntk = sweep.rows("ntk").set_index("width").sort_index()
    sp = sweep.rows("sp").set_index("width").sort_index()
    base = sweep.setup.base_width
    kernel_best = min(kernels["NNGP posterior"], kernels["NTK regression (t = inf)"])
    # below ~10x the base width the kernel's fluctuation is O(1): the power law starts above
    # (a sweep without two such widths cannot show it: that claim then fails)
    distance = distance_to_kernel(sweep, "ntk", lazy_kernel_prediction)
    far = distance[distance.index >= 10 * base]
    return [
        (
            "muP: the held-out loss (mean over seeds) falls at every step in width",
            bool((gaps > 0).all()),
        ),
        (
            "muP: each improvement is smaller than the one before (the loss converges)",
            bool((gaps.diff().iloc[1:] < 0).all()),
        ),
        (
            "muP: networks from different seeds approach one function, spread ~ width^-1/2 "
            "(fitted slope between -0.7 and -0.3)",
            -0.7 < sweep.spread_slope("mup") < -0.3,
        ),
        (
            "muP: first-layer alignment with the target subspace >= 0.5 at every width and seed",
            bool((align_mup >= 0.5).all()),
        ),
        (
            "muP: at initialization the alignment is r/d = 1/16 within 4 of its standard "
            "deviations (about 0.014 at the base width) at every width and seed",
            bool(((mup.alignment_init - ratio).abs() < 4 * init_sd).all()),
        ),
        (
            "NTK (lazy): at every width the alignment stays within 10% of its initial value",
            bool(((ntk.alignment / ntk.alignment_init - 1).abs() < 0.1).all()),
        ),
        (
            "NTK (lazy): the networks approach NTK regression at the same training time in "
            "function space, distance ~ width^-1/2 (fitted slope from 10x the base width on "
            "between -0.75 and -0.25; predicting 0 is at distance 1)",
            len(far) >= 2 and -0.75 < fit_loglog_slope(far.index, far.to_numpy()) < -0.25,
        ),
        (
            "NTK (lazy): the widest network is within 0.2 of NTK regression in function space",
            bool(distance.iloc[-1] < 0.2),
        ),
        (
            "global-lr SP at the same learning rate trains at the base width and diverges at every wider one",
            bool(sp.diverged_at.isna().loc[base])
            and bool(sp.diverged_at.notna().loc[sp.index > base].all()),
        ),
        (
            "muP beats NNGP and NTK kernel regression at every width from 3x the base width on",
            bool((mup_loss[mup_loss.index >= 3 * base] < kernel_best).all()),
        ),
    ]


# ------------------------------------------------------------------------------ figures

COLORS = {"mup": "C0", "sp": "C3", "ntk": "C1"}
LABELS = {"mup": "muP (MuSGD)", "sp": "global-lr SP (SGD)", "ntk": "NTK param. (SGD, centered)"}


def plot_width_sweep(sweep: Sweep, kernels: dict[str, float]):
    """Held-out loss against width (with kernel regression), its convergence (gaps between
    consecutive widths, spread across seeds), and the first-layer alignment."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    mup = sweep.rows("mup")
    axes[0].loglog(
        mup.width, mup.test_loss, ".", color=COLORS["mup"], alpha=0.5, label="muP, one seed each"
    )
    mean = sweep.mean("mup")
    axes[0].loglog(mean.index, mean, "o-", color=COLORS["mup"], label="muP, mean over seeds")
    ntk = sweep.mean("ntk")
    axes[0].loglog(ntk.index, ntk, "s-", color=COLORS["ntk"], label=LABELS["ntk"])
    for (name, value), ls in zip(kernels.items(), ("-.", "--", ":"), strict=True):
        axes[0].axhline(value, color="gray", ls=ls, label=name)
    axes[0].set(
        xlabel="width n",
        ylabel="held-out loss (0.5 MSE)",
        title=f"one learning rate ({sweep.setup.lr:g}) at every width",
    )
    gaps, spread = sweep.gaps("mup"), sweep.spread("mup")
    axes[1].loglog(gaps.index, gaps, "o-", color="C2", label="improvement over the previous width")
    axes[1].loglog(
        spread.index, spread, "s-", color="C4", label="spread of predictions across seeds (RMS)"
    )
    ref = spread.iloc[0] * (spread.index / spread.index[0]) ** -0.5
    axes[1].loglog(spread.index, ref, "k:", label="∝ n^-1/2")
    axes[1].set(
        xlabel="width n",
        ylabel="loss improvement; RMS spread of outputs",
        title="muP converges to its infinite-width limit",
    )
    for p in ("mup", "ntk"):
        a = sweep.mean(p, "alignment")
        axes[2].semilogx(a.index, a, "o-", color=COLORS[p], label=LABELS[p])
    init = sweep.table.alignment_init.mean()
    axes[2].axhline(init, color="gray", ls=":", label=f"at initialization (≈ r/d = {init:.3f})")
    axes[2].set(
        xlabel="width n",
        ylabel="||W U||² / ||W||²",
        ylim=(0, 1),
        title="first-layer weights in the target subspace",
    )
    for ax in axes[:2]:
        plain_log_ticks(ax)
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_parametrizations(sweep: Sweep, width: int):
    """The three parametrizations at one learning rate: held-out loss over training at one
    width, and the step at which SP diverged, per width."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for p in PARAMETRIZATIONS:
        hist = sweep.histories.get((p, width, 0))
        if hist is not None:
            axes[0].semilogy(hist.step, hist.test_loss, color=COLORS[p], label=LABELS[p])
    sp = sweep.rows("sp").sort_values("width")
    diverged = sp[sp.diverged_at.notna()]
    if width in set(diverged.width):
        step = int(diverged.set_index("width").diverged_at.loc[width])
        axes[0].plot(
            [], [], "x", color=COLORS["sp"], label=f"global-lr SP: diverged at step {step}"
        )
    axes[0].set(xlabel="step", ylabel="held-out loss (0.5 MSE)", title=f"width {width}")
    trained = sp[sp.diverged_at.isna()]
    axes[1].semilogx(
        diverged.width,
        diverged.diverged_at,
        "x",
        ms=9,
        color=COLORS["sp"],
        label="global-lr SP: step at which the loss became inf/nan",
    )
    axes[1].semilogx(
        trained.width,
        [sweep.setup.steps] * len(trained),
        "o",
        color=COLORS["sp"],
        label=f"global-lr SP: trained all {sweep.setup.steps} steps",
    )
    axes[1].set(
        xlabel="width n",
        ylabel="step",
        yscale="symlog",
        title=f"global-lr SP at learning rate {sweep.setup.lr:g}",
    )
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------- CLI


def summary(sweep: Sweep, kernels: dict[str, float]) -> str:
    """The printed report: per-run table, per-width muP means, kernel baselines, claims."""
    cols = (
        "parametrization width seed train_loss test_loss alignment_init alignment "
        "feature_change diverged_at seconds"
    ).split()
    lines = [sweep.table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")]
    mean, gaps, spread = sweep.mean("mup"), sweep.gaps("mup"), sweep.spread("mup")
    lines.append("muP by width: mean held-out loss, improvement over previous width, spread")
    for w in mean.index:
        gap = f"{gaps.loc[w]:.4g}" if w in gaps.index else "-"
        lines.append(f"  {w:6d}  {mean.loc[w]:.4g}  {gap:>9s}  {spread.loc[w]:.3g}")
    lines.append(f"spread ~ width^p: fitted p = {sweep.spread_slope('mup'):.2f} (theory -1/2)")
    lines += [f"{name}: held-out loss {value:.4g}" for name, value in kernels.items()]
    lines += [f"{'PASS' if ok else 'FAIL'}: {text}" for text, ok in claims(sweep, kernels)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Chapter 05 as a script, the main job: figures feature_learning_mup.png and
    mup_vs_standard_comparison.png and a printed report ending with the checked claims;
    returns the results."""
    d = Setup()
    parser = _cli.parser("Chapter 05: muP learns features at every width with one learning rate.")
    _cli.add_int_list(parser, "--widths", WIDTHS, "network widths")
    _cli.add_int_list(parser, "--seeds", SEEDS, "initialization seeds of the muP networks")
    parser.add_argument("--steps", type=int, default=d.steps, help="SGD steps")
    parser.add_argument("--lr", type=float, default=d.lr, help="learning rate, every width")
    parser.add_argument("--n-train", type=int, default=d.n_train, help="training points")
    parser.add_argument(
        "--compare-width", type=int, default=1000, help="width of the learning-curve comparison"
    )
    args = parser.parse_args(argv)
    setup = Setup(steps=args.steps, lr=args.lr, n_train=args.n_train, data_seed=args.seed)
    start = _cli.start(args)
    print(
        f"widths {args.widths}, {setup.steps} SGD steps at lr {setup.lr}, muP seeds {args.seeds}",
        flush=True,
    )
    kernels = kernel_baselines(setup)
    seeds = {"mup": tuple(args.seeds), "sp": (0,), "ntk": (0,)}
    sweep = run_sweep(tuple(args.widths), seeds, setup, verbose=True)
    names = [
        _cli.save(plot_width_sweep(sweep, kernels), args.out, "feature_learning_mup.png").name,
        _cli.save(
            plot_parametrizations(sweep, args.compare_width),
            args.out,
            "mup_vs_standard_comparison.png",  # a stable name: documents link to this figure
        ).name,
    ]
    _cli.finish(args.out, names, start)
    print(summary(sweep, kernels))
    return {"sweep": sweep, "kernels": kernels}


if __name__ == "__main__":  # python -m ntk.chapters.mup_feature_learning
    _cli.run(main)
