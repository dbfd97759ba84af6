"""Chapter 10 experiments: progressive sequence length and an EMA of the weights on the GPT.

The notebook `notebooks/10_progressive_ema.py` trains the muP GPT of `ntk.lm` with
`ntk.lm.train.train` at the same token budget, with a progressive schedule and at the longest
length throughout, both with an EMA of the weights, for three seeds (`train_runs`), and reads
the runs' CSV files with the functions below: the loss jump at each phase switch
(`phase_spikes`), the cost of each phase (`phase_costs`, measured tokens/s next to the FLOPs
per token), and the figure.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import io
import multiprocessing
from pathlib import Path
from typing import Any

import pandas as pd

from ntk.lm.config import RunConfig, build_config
from ntk.lm.run_log import read_metrics
from ntk.lm.train import train

TOKENS_PER_STEP = 4096
TOKENS = 750_000  # 184 steps
SCHEDULE = "32:250K,64:500K,128:inf"
SEEDS = (0, 1, 2)
RUNS = {"progressive": SCHEDULE, "fixed": None}  # name -> schedule (None: T = 128 throughout)


def chapter_config(out_dir: str | Path, schedule: str | None, *, seed: int = 0) -> RunConfig:
    """The chapter's run: a 2-layer GPT of width 64 (muP at its base width, where every width
    ratio is 1: each layer has its base init and all share one learning rate, i.e. global-lr
    SP at this width), AdamW at a constant learning rate 1e-2 after 10 warmup steps, S = 4096
    tokens per step, `TOKENS` tokens, EMA with beta 0.95, validation on 8K tokens every 20
    steps, one torch thread. `schedule` None: block size 128 throughout."""
    data = {
        "model": {"n_layer": 2, "n_embd": 64, "n_head": 4, "block_size": 128},
        "parametrization": {"name": "mup", "base_width": 64},
        "optim": {"lr": 1e-2, "warmup_tokens": 10 * TOKENS_PER_STEP, "decay": "constant"},
        "data": {"eval_tokens": 8192},
        "train": {
            "tokens": TOKENS,
            "tokens_per_step": TOKENS_PER_STEP,
            "schedule": schedule,
            "eval_every": 20,
            "seed": seed,
            # one thread: at width 64 a second one barely helps, and on a busy machine two
            # threads fighting for the cores slow training several-fold
            "threads": 1,
        },
        "ema": {"enabled": True, "beta": 0.95},
        "log": {"out_dir": str(out_dir), "progress": False},
        "checkpoint": {"every": 0, "resume": "never"},
    }
    return build_config(data)


def train_runs(
    out_dir: str | Path, seeds: tuple[int, ...] = SEEDS, *, workers: int = 2
) -> tuple[dict[tuple[str, int], pd.DataFrame], dict[tuple[str, int], dict[str, Any]]]:
    """Train every run of `RUNS` for every seed into out_dir/NAME-SEED, `workers` processes at
    a time (each on one torch thread, `chapter_config`). Returns the metrics of each run
    (`read_metrics`) and its last metrics row, both keyed by (name, seed)."""
    configs = {
        (name, seed): chapter_config(Path(out_dir) / f"{name}-{seed}", schedule, seed=seed)
        for seed in seeds
        for name, schedule in RUNS.items()
    }
    # fork where there is one: the runs need nothing from this process but the configs
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        lasts = dict(zip(configs, pool.map(_train_quietly, configs.values()), strict=True))
    metrics = {key: read_metrics(config.log.out_dir) for key, config in configs.items()}
    return metrics, lasts


def _train_quietly(config: RunConfig) -> dict[str, Any]:
    """`train(config)` with its printed run summary dropped: from parallel runs it would
    interleave (the run's metrics.csv holds everything)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return train(config)


def phase_spikes(metrics: pd.DataFrame, window: int = 5, span: int = 20) -> pd.DataFrame:
    """The training loss around each phase switch.

    Per switch: `before` (mean loss of the last `window` steps of the old phase), `first` (the
    loss of the first step at the new length), `spike` = first - before, `recovered_after`,
    the number of steps at the new length until the loss is back below `before` (NaN if never),
    and `noise`: the standard deviation, over the `span` steps before the switch, of each loss
    minus the mean of the `window` losses before it, the size of a "spike" at a step where
    nothing switches (NaN with fewer than 2 such steps).
    """
    rows = []
    trailing = metrics["loss"] - metrics["loss"].rolling(window).mean().shift(1)
    starts = metrics.index[metrics["phase"].diff() > 0]
    for i in starts:
        before = metrics.loc[i - window : i - 1, "loss"].mean()
        after = metrics.loc[i:, "loss"].reset_index(drop=True)
        below = after.index[after < before]
        quiet = trailing.loc[i - span : i - 1].dropna()
        rows.append(
            dict(
                step=int(metrics.loc[i, "step"]),
                block_size=f"{metrics.loc[i - 1, 'block_size']} -> {metrics.loc[i, 'block_size']}",
                before=before,
                first=after.iloc[0],
                spike=after.iloc[0] - before,
                recovered_after=float(below[0]) if len(below) else float("nan"),
                noise=float(quiet.std()) if len(quiet) >= 2 else float("nan"),
            )
        )
    return pd.DataFrame(rows)


def seed_mean(runs: list[pd.DataFrame]) -> pd.DataFrame:
    """The step-by-step mean over seeds of runs with the same schedule (numeric columns);
    NaN cells (no evaluation at that step) stay NaN."""
    if not runs:
        raise ValueError("runs must hold at least one metrics table")
    return pd.concat(runs).groupby("step", as_index=False).mean(numeric_only=True)


def flops_per_token(config: RunConfig, block_size: int) -> int:
    """Training FLOPs per token in the blocks, 6 N + 6 L T C (Kaplan et al. 2020, "Scaling Laws
    for Neural Language Models", arXiv:2001.08361, table 1, times 3 for forward + backward):
    N = 12 L C^2 the blocks' weights, 6 L T C the attention scores and their weighted sum
    (counted over the full T x T square). The readout's 6 C V is the same at every T and left
    out."""
    m = config.model
    C, L = m.n_embd, m.n_layer
    blocks = L * (4 * C * C + 8 * C * C)  # q, k, v, o and the 4x MLP
    return 6 * blocks + 6 * L * block_size * C


def phase_costs(metrics: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """Per phase: block size, batch, steps, median tokens/s and the blocks' FLOPs per token."""
    rows = []
    for phase, g in metrics.groupby("phase"):
        T = int(g["block_size"].iloc[0])
        rows.append(
            dict(
                phase=int(phase),
                block_size=T,
                batch_size=int(g["batch_size"].iloc[0]),
                steps=len(g),
                tokens_per_s=float(g["tokens_per_s"].median()),
                flops_per_token=flops_per_token(config, T),
            )
        )
    return pd.DataFrame(rows)


def plot_runs(progressive: pd.DataFrame, fixed: pd.DataFrame):
    """Training loss (both runs) and validation at the longest length (training and EMA
    weights) against tokens, phase switches dotted. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for df, label, color in ((progressive, "progressive", "C0"), (fixed, "T = 128", "C1")):
        axes[0].plot(df["tokens"], df["loss"], color=color, lw=1, label=label)
        ev = df[df["val_loss_max"].notna()]
        axes[1].plot(ev["tokens"], ev["val_loss_max"], "o-", color=color, ms=3, label=label)
        axes[1].plot(
            ev["tokens"], ev["ema_val_loss_max"], "^--", color=color, ms=3, label=f"{label}, EMA"
        )
    for tokens in progressive.loc[progressive["phase"].diff() > 0, "tokens"]:
        for ax in axes:
            ax.axvline(tokens, color="grey", lw=0.6, ls=":")
    axes[0].set(xlabel="tokens", ylabel="loss (nats / token)", title="training loss")
    axes[1].set(xlabel="tokens", title="validation loss at T = 128")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
