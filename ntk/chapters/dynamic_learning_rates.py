"""Chapter 11 experiments: alignment measured over training, and dynamic per-layer learning rates.

The notebook `notebooks/11_dynamic_lr.py` explains the measurement (`ntk.scaling.alignment`),
the linear program (`ntk.scaling.lp`) and the controller `DynamicLR` (`ntk.scaling.dynamic_lr`),
and calls these functions for the training runs. Two models, both muP with Adam(W), a linear
warmup into a cosine schedule, and `DynamicLR.step()` for the dynamic runs:

    mlp  depth-3 MLP on one-hot 8x8 digits, MSE 0.5 sum_k (f_k - y_k)^2, batches of 64;
         widths 64 (the base width) to 512; scored by the test-set loss after training
    gpt  the muP GPT of `ntk.lm` (2 blocks, 4 heads) on the default character corpus, blocks
         of 32 characters, batches of 16; n_embd 32 (the base width) to 128; scored by the
         validation loss after training

A static run measures alignment with an `AlignmentMeter` on the same schedule as a dynamic
run's `DynamicLR.step()` (after the first update, then every `EVERY` updates), so both kinds of
run report the same ratios.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from ntk.data import digits
from ntk.lm.data import TextData, eval_batches, load_corpus, sample_batch
from ntk.lm.model import GPTConfig
from ntk.lm.parametrize import gpt_recipe
from ntk.lm.step import lm_loss
from ntk.models import WideMLP
from ntk.scaling.abc_rules import abc_table
from ntk.scaling.alignment import AlignmentMeter, AlignmentRatios, exponents_from_widths
from ntk.scaling.dynamic_lr import DynamicLR
from ntk.scaling.parametrization import Parametrization, ParametrizationConfig
from ntk.training.losses import half_sse

EVERY = 10  # optimizer steps between alignment measurements
WARMUP = 10  # linear warmup steps before the cosine decay
MLP = dict(widths=(64, 128, 256, 512), base_width=64, steps=150, batch=64, probe=128)
GPT_SETUP = dict(widths=(32, 64, 128), base_width=32, steps=120, batch=16, block=32, probe=4)


@dataclass
class Run:
    """One training run: losses per step, alignment ratios and exponents c per measurement."""

    kind: str
    width: int
    seed: int
    dynamic: bool
    lr: float
    names: list[str]
    roles: list[str]
    fan_in: dict[str, int]
    losses: list[float] = field(default_factory=list)
    measured_at: list[int] = field(default_factory=list)
    ratios: list[dict[str, AlignmentRatios]] = field(default_factory=list)
    c: list[list[float]] = field(default_factory=list)
    score: float = math.nan  # test (mlp) or validation (gpt) loss after training


@functools.cache
def corpus() -> TextData:
    """The default character corpus of `ntk.lm` (generated, the same on every machine)."""
    return load_corpus(block_size=GPT_SETUP["block"])


def _schedule(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    warmup = torch.optim.lr_scheduler.LinearLR(opt, 0.1, 1.0, total_iters=WARMUP)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps - WARMUP)
    return torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[WARMUP])


def _train(
    run: Run,
    model: nn.Module,
    param: Parametrization,
    opt: torch.optim.Optimizer,
    batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    probe: torch.Tensor,
    steps: int,
) -> None:
    """`steps` updates; measures after update 1, 1 + EVERY, ... (ratios kept in `run`)."""
    sched = _schedule(opt, steps)
    if run.dynamic:
        controller = DynamicLR(param, opt, probe, every=EVERY)
    else:
        meter = AlignmentMeter(param, probe)
    for t in range(steps):
        x, y = batch(t)
        loss = loss_fn(model(x), y)
        if not math.isfinite(loss.item()):
            run.losses.append(math.inf)
            return
        opt.zero_grad()
        loss.backward()
        measured = None
        if run.dynamic:
            controller.step()  # after update 1, then every EVERY updates: measure, solve, set lrs
            run.c.append(list(controller.c))
            measured = controller.last if controller.measured_at == t else None
        elif t % EVERY == 1:  # the same steps, without the solve
            measured = meter.measure()
        if measured is not None:
            run.measured_at.append(t)
            run.ratios.append({m.name: m.ratios for m in measured if m is not None})
        opt.step()
        sched.step()
        run.losses.append(loss.item())


def mlp_run(width: int, seed: int, lr: float, dynamic: bool) -> Run:
    """A muP MLP trained on digits minibatches; static or dynamic per-layer learning rates."""
    task, cfg = digits(one_hot=True), MLP
    torch.manual_seed(seed)
    model = WideMLP(64, width, 10, depth=3)
    param = Parametrization(
        model, ParametrizationConfig("mup", "adam", lr=lr, base_width=cfg["base_width"])
    )
    opt = torch.optim.Adam(param.param_groups)
    g = torch.Generator().manual_seed(seed)
    order = torch.randint(0, len(task.x_train), (cfg["steps"], cfg["batch"]), generator=g)
    run = _run_record("mlp", width, seed, dynamic, lr, param)

    def batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return task.x_train[order[t]], task.y_train[order[t]]

    probe = task.x_train[: cfg["probe"]]
    _train(run, model, param, opt, batch, half_sse, probe, cfg["steps"])
    with torch.no_grad():
        run.score = half_sse(model(task.x_test), task.y_test).item()
    return run


def gpt_run(width: int, seed: int, lr: float, dynamic: bool) -> Run:
    """The muP GPT of `ntk.lm` on the default corpus; static or dynamic learning rates."""
    data, cfg = corpus(), GPT_SETUP
    config = GPTConfig(
        vocab_size=data.vocab_size, block_size=cfg["block"], n_layer=2, n_embd=width, n_head=4
    )
    # random (not zero) query and readout: every layer then has all three alignments to measure
    model, param, groups = gpt_recipe(
        config,
        "mup",
        base_width=cfg["base_width"],
        lr=lr,
        seed=seed,
        zero_query=False,
        zero_readout=False,
    )
    opt = torch.optim.AdamW(groups)
    g = torch.Generator().manual_seed(seed)
    run = _run_record("gpt", width, seed, dynamic, lr, param)
    val = eval_batches(data.val, cfg["batch"], cfg["block"], 4)
    probe = val[0][0][: cfg["probe"]]

    def batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return sample_batch(data.train, cfg["batch"], cfg["block"], g)

    _train(run, model, param, opt, batch, lm_loss, probe, cfg["steps"])
    with torch.no_grad():
        run.score = float(np.mean([lm_loss(model(x), y).item() for x, y in val]))
    return run


def _run_record(
    kind: str, width: int, seed: int, dynamic: bool, lr: float, param: Parametrization
) -> Run:
    layers = param.layers
    return Run(
        kind,
        width,
        seed,
        dynamic,
        lr,
        [s.name for s in layers],
        [s.role for s in layers],
        {s.name: s.geometry.fan_in for s in layers},
    )


RUNNERS = {"mlp": mlp_run, "gpt": gpt_run}


def sweep_base_lr(kind: str, lrs: list[float], seed: int = 0) -> pd.Series:
    """Score of static muP at the base width for each learning rate (inf if diverged)."""
    width = (MLP if kind == "mlp" else GPT_SETUP)["base_width"]
    scores = {}
    for lr in lrs:
        run = RUNNERS[kind](width, seed, lr, dynamic=False)
        scores[lr] = run.score if math.isfinite(run.losses[-1]) else math.inf
    return pd.Series(scores, name="score")


def static_vs_dynamic(kind: str, lrs: list[float], seeds: int = 3) -> tuple[pd.Series, list[Run]]:
    """The comparison of sections 4 and 5: `sweep_base_lr` over `lrs`, then static and
    dynamic runs at every width and `seeds` seeds with the best of them. Returns the sweep
    (its idxmin is the learning rate used) and the runs."""
    sweep = sweep_base_lr(kind, lrs)
    lr = float(sweep.idxmin())
    widths = (MLP if kind == "mlp" else GPT_SETUP)["widths"]
    runs = [
        RUNNERS[kind](w, seed, lr, dynamic)
        for w in widths
        for seed in range(seeds)
        for dynamic in (False, True)
    ]
    return sweep, runs


def exponent_table(runs: list[Run], index: int) -> pd.DataFrame:
    """Per layer at measurement `index`: the single-width exponents log rho / log n at each
    model width (n the layer's fan-in), and the slope of log rho against log n across the
    widths with its standard error (each width's ratios averaged over seeds on a log scale)."""
    rows = []
    widths = sorted({r.width for r in runs})
    for name in runs[0].names:
        if name not in runs[0].ratios[index]:
            continue
        per_width, fan_in = {}, {}
        for w in widths:
            same = [r for r in runs if r.width == w]
            logs = np.log([r.ratios[index][name] for r in same])
            fan_in[w] = same[0].fan_in[name]
            per_width[fan_in[w]] = AlignmentRatios(*np.exp(logs.mean(0)))
        slope, stderr = exponents_from_widths(per_width)
        row = dict(layer=name, step=runs[0].measured_at[index])
        for key in ("alpha", "omega", "u"):
            for w in widths:
                ratio = getattr(per_width[fan_in[w]], key)
                row[f"{key} @{w}"] = math.log(ratio) / math.log(fan_in[w])
            row[f"{key} slope"] = getattr(slope, key)
            row[f"{key} stderr"] = getattr(stderr, key)
        rows.append(row)
    return pd.DataFrame(rows).set_index("layer")


def scores(runs: list[Run]) -> pd.DataFrame:
    """Final score per (width, static/dynamic): mean and std over seeds, and the runs."""
    df = pd.DataFrame(
        dict(width=r.width, dynamic=r.dynamic, seed=r.seed, score=r.score) for r in runs
    )
    return df.groupby(["width", "dynamic"]).score.agg(["mean", "std", "min", "max", "count"])


# ---- readouts and figures of the notebook ---------------------------------------------------
def window_ratio(runs: list[Run], width: int, lo: int, hi: int) -> float:
    """Mean training loss over steps lo..hi-1, dynamic over static, at `width` (seeds pooled)."""
    mean = {}
    for dynamic in (False, True):
        losses = [r.losses[lo:hi] for r in runs if r.width == width and r.dynamic == dynamic]
        if not losses or not all(len(x) == hi - lo for x in losses):
            raise ValueError(f"no complete {'dynamic' if dynamic else 'static'} runs at {width}")
        mean[dynamic] = float(np.mean(losses))
    return mean[True] / mean[False]


def window_ratios(runs: list[Run], windows: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """`window_ratio` per width (rows) and named window of steps (columns)."""
    widths = sorted({r.width for r in runs})
    return pd.DataFrame(
        {k: [window_ratio(runs, w, lo, hi) for w in widths] for k, (lo, hi) in windows.items()},
        index=pd.Index(widths, name="width"),
    )


def schedule_factor(steps: int, t: int) -> float:
    """The factor s(t) that `_schedule` applies at step t: linear warmup from 0.1 over WARMUP
    steps, then cosine decay over the remaining steps (1 at the end of warmup)."""
    if t < WARMUP:
        return 0.1 + 0.9 * t / WARMUP
    return 0.5 * (1 + math.cos(math.pi * (t - WARMUP) / (steps - WARMUP)))


def multipliers(runs: list[Run], width: int, base: int) -> pd.Series:
    """(n / n0)^(c_static - c_l) per layer at the last solve, c averaged over the seeds: the
    factor by which the dynamic rule changed each layer's learning rate against muP's table."""
    dyn = [r for r in runs if r.dynamic and r.width == width]
    if not dyn:
        raise ValueError(f"no dynamic runs at width {width}")
    c = np.mean([r.c[-1] for r in dyn], 0)
    static = [x.c for x in abc_table("mup", "adam", "full", dyn[0].roles)]
    return pd.Series((width / base) ** (np.array(static) - c), index=dyn[0].names)


def plot_exponents(runs: list[Run], layers: list[str], title: str):
    """Single-width exponent at the widest width (dashed) and the slope across widths (solid),
    against the update, for alpha, omega and u. Returns the figure."""
    import matplotlib.pyplot as plt

    tables = [exponent_table(runs, i) for i in range(len(runs[0].measured_at))]
    steps = [t.step.iloc[0] for t in tables]
    widest = max(r.width for r in runs)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2), sharey=True)
    for ax, key, full in zip(axes, ("alpha", "omega", "u"), (1, 0.5, 1), strict=True):
        for i, layer in enumerate(layers):
            color = f"C{i}"
            ax.plot(steps, [t.loc[layer, f"{key} slope"] for t in tables], color=color, label=layer)
            ax.plot(steps, [t.loc[layer, f"{key} @{widest}"] for t in tables], "--", color=color)
        ax.axhline(full, color="k", lw=0.8)
        ax.axhline(0.5, color="k", lw=0.8, ls=":")
        ax.set(title=f"{key}", xlabel="update")
    axes[0].set_ylabel("exponent")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}: slope across widths (solid), one width n={widest} (dashed)")
    fig.tight_layout()
    return fig


def plot_runs(runs: list[Run], score_label: str, title: str):
    """Left: final score against width, static and dynamic (mean, std over seeds). Right: the
    training loss against steps at the widest width (mean, min-max). Returns the figure."""
    import matplotlib.pyplot as plt

    widths = sorted({r.width for r in runs})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
    for dynamic, color in ((False, "C0"), (True, "C3")):
        label = "dynamic" if dynamic else "static muP"
        per_width = [
            [r.score for r in runs if r.width == w and r.dynamic == dynamic] for w in widths
        ]
        mean, std = np.mean(per_width, 1), np.std(per_width, 1)
        ax1.errorbar(widths, mean, std, color=color, marker="o", capsize=3, label=label)
        curves = np.array(
            [r.losses for r in runs if r.width == widths[-1] and r.dynamic == dynamic]
        )
        ax2.plot(curves.mean(0), color=color, label=f"{label}, width {widths[-1]}")
        ax2.fill_between(
            range(curves.shape[1]), curves.min(0), curves.max(0), color=color, alpha=0.2
        )
    ax1.set(
        xscale="log", xlabel="width", ylabel=score_label, title=f"{title}: after training (3 seeds)"
    )
    ax2.set(
        yscale="log",
        xlabel="step",
        ylabel="training loss",
        title="loss against steps (mean, min-max)",
    )
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    return fig
