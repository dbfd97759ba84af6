"""What a training run shows and keeps: a progress bar, metrics.csv, TensorBoard, W&B, plots.

Every step appends one row to `<out_dir>/metrics.csv` (always on; floats written with Python's
shortest round-trip repr, so the file holds the exact float32-derived values and two runs can
be compared bit for bit): step, tokens, phase, block_size, batch_size, lr (at the base width),
loss (the step's training loss, nats per token), tokens_per_s, time_s (training time so far),
and, on evaluation steps, val_loss / val_loss_max (validation at the current and at the
longest block size) and the same for the EMA weights. Diagnostics go to `diagnostics.csv` in
long form (step, layer, quantity, value): per-layer activation sizes mean |h| on a fixed
batch (`ntk.scaling.coord_check`) and spectral norms of the weights and of their change since
initialization relative to sqrt(fan_out / fan_in) (`ntk.scaling.spectral.SpectralMonitor`).

TensorBoard (`torch.utils.tensorboard`, log.tensorboard) and Weights & Biases (log.wandb,
honouring WANDB_MODE, e.g. "offline") get the same scalars; both are imported only when
enabled. `plot_run(out_dir)` draws a finished (or running) run from its CSV.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ntk.lm.checkpoint import atomic_write_bytes
from ntk.scaling.coord_check import coord_check
from ntk.scaling.spectral import SpectralMonitor

COLUMNS = (
    "step",
    "tokens",
    "phase",
    "block_size",
    "batch_size",
    "lr",
    "loss",
    "tokens_per_s",
    "time_s",
    "val_loss",
    "val_loss_max",
    "ema_val_loss",
    "ema_val_loss_max",
)
DIAG_COLUMNS = ("step", "layer", "quantity", "value")
METRICS, DIAGNOSTICS = "metrics.csv", "diagnostics.csv"


def _text(value: Any) -> str:
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def truncate_csv(path: Path, step: int) -> None:
    """Keep the header and the rows with step <= `step` (atomically): a resumed run rewrites
    the steps after its checkpoint, which a killed run may have logged already."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(rows[0])
    writer.writerows(r for r in rows[1:] if r and int(r[0]) <= step)
    atomic_write_bytes(path, out.getvalue().encode("utf-8"))


class RunLogger:
    """Writes a run's rows to CSV, TensorBoard and W&B and drives the progress bar.

    Only one process writes (the others get `enabled=False` and do nothing). `start_step` > 0
    (a resumed run) first truncates the CSV files to that step.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        total_steps: int,
        start_step: int = 0,
        progress: bool = True,
        tensorboard: bool = False,
        wandb: bool = False,
        wandb_project: str = "ntk-lm",
        config: dict | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.bar = self.tb = self.wandb = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.files = {}
        for name, columns in ((METRICS, COLUMNS), (DIAGNOSTICS, DIAG_COLUMNS)):
            path = self.out_dir / name
            truncate_csv(path, start_step)
            fresh = not path.is_file() or path.stat().st_size == 0
            f = open(path, "a", newline="", encoding="utf-8")
            if fresh:
                csv.writer(f).writerow(columns)
            self.files[name] = f
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", mininterval=1.0)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=start_step + 1)
        if wandb:
            self.wandb = _start_wandb(wandb_project, self.out_dir, config, start_step)

    def log(self, row: dict[str, Any]) -> None:
        """One step's row (keys from COLUMNS; missing ones left empty)."""
        if not self.enabled:
            return
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"row has keys {sorted(unknown)} that are not metrics.csv columns")
        f = self.files[METRICS]
        csv.writer(f).writerow([_text(row.get(c)) for c in COLUMNS])
        f.flush()
        scalars = {k: v for k, v in row.items() if isinstance(v, float) and k != "step"}
        self._external(scalars, row["step"])
        if self.bar is not None:
            self.bar.update(row["step"] - self.bar.n)
            self.bar.set_postfix(
                loss=f"{row['loss']:.4f}",
                tok_s=f"{row['tokens_per_s']:.0f}",
                T=row["block_size"],
                refresh=False,
            )

    def log_diagnostics(self, step: int, records: list[dict[str, Any]]) -> None:
        """Rows {layer, quantity, value} measured at `step`."""
        if not self.enabled or not records:
            return
        f = self.files[DIAGNOSTICS]
        writer = csv.writer(f)
        for r in records:
            writer.writerow([step, r["layer"], r["quantity"], _text(float(r["value"]))])
        f.flush()
        scalars = {f"{r['quantity']}/{r['layer']}": float(r["value"]) for r in records}
        self._external(scalars, step)

    def message(self, text: str) -> None:
        """A line above the progress bar (or printed)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def _external(self, scalars: dict[str, float], step: int) -> None:
        if self.tb is not None:
            for key, value in scalars.items():
                if math.isfinite(value):
                    self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        for f in self.files.values():
            f.close()
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _start_wandb(project: str, out_dir: Path, config: dict | None, start_step: int):
    try:
        import wandb
    except ImportError:
        raise ImportError(
            "log.wandb is true but the wandb package is not installed (pip install wandb), "
            "or set log.wandb=false"
        ) from None
    return wandb.init(
        project=project,
        dir=str(out_dir),
        name=out_dir.name,
        config=config,
        resume="allow" if start_step else None,
    )


def wandb_available() -> bool:
    """Whether W&B can be enabled here (the package is importable)."""
    import importlib.util

    return importlib.util.find_spec("wandb") is not None


# ---- diagnostics --------------------------------------------------------------------------------
def _not_inner(name: str) -> bool:
    # a parametrized layer appears twice: the ScaledModule (its real output) and its inner module
    return not name.endswith(".module")


@torch.no_grad()
def diagnostics(model: nn.Module, x: Tensor, monitor: SpectralMonitor, step: int) -> list[dict]:
    """Per-layer activation sizes on the batch `x` and spectral norms, as long-form records.

    The activation sizes come from `coord_check` run for 0 steps (one forward pass, forward
    hooks on every layer and the output, and the attention logits s q k^T of each block as
    `<block>.attn.attn_logits`); the global RNG is left as it was, so logging does not change
    training.
    """
    with torch.random.fork_rng(devices=[]):  # width 1: a single model, no fit across widths
        sizes = coord_check(lambda _: (model, None), [1], (x, x), steps=0, modules=_not_inner)
    records = [
        dict(layer=r.module, quantity="act_size", value=r.act_size)
        for r in sizes.itertuples(index=False)
    ]
    for r in monitor.log(step):
        layer = r["layer"].replace(".module.", ".").removesuffix(".module")  # wrapper's name
        records.append(dict(layer=layer, quantity="spectral_rel_w", value=r["rel_w"]))
        records.append(dict(layer=layer, quantity="spectral_rel_dw", value=r["rel_dw"]))
    return records


# ---- reading and plotting a run -----------------------------------------------------------------
def read_metrics(out_dir: str | Path):
    """metrics.csv of a run as a pandas DataFrame."""
    import pandas as pd

    path = Path(out_dir) / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist: not a run directory")
    return pd.read_csv(path)


def read_diagnostics(out_dir: str | Path):
    """diagnostics.csv of a run as a pandas DataFrame (empty without log.diag_every)."""
    import pandas as pd

    return pd.read_csv(Path(out_dir) / DIAGNOSTICS)


def plot_run(out_dir: str | Path, *, smooth: int = 20):
    """Four panels from a run's CSV: training loss (running mean over `smooth` steps) and
    validation losses against tokens, tokens/s per phase, learning rate, and, with
    diagnostics, activation sizes against step. Returns the figure."""
    import matplotlib.pyplot as plt

    df = read_metrics(out_dir)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    ax = axes[0]
    ax.plot(df["tokens"], df["loss"].rolling(smooth, min_periods=1).mean(), lw=1, label="train")
    for column, style in (
        ("val_loss", "o-"),
        ("val_loss_max", "s--"),
        ("ema_val_loss", "^-"),
        ("ema_val_loss_max", "v--"),
    ):
        rows = df[df[column].notna()] if column in df else df.iloc[:0]
        if len(rows):
            ax.plot(rows["tokens"], rows[column], style, ms=3, lw=1, label=column)
    for step in df.loc[df["phase"].diff() > 0, "tokens"]:
        ax.axvline(step, color="grey", lw=0.5, ls=":")
    ax.set(xlabel="tokens", ylabel="loss (nats/token)", title="loss")
    ax.legend(fontsize=7)
    for _, rows in df.groupby("phase"):
        axes[1].plot(
            rows["step"], rows["tokens_per_s"], ".", ms=2, label=f"T={rows['block_size'].iloc[0]}"
        )
    axes[1].set(xlabel="step", ylabel="tokens / s", title="throughput by phase")
    axes[1].legend(fontsize=7)
    axes[2].plot(df["step"], df["lr"])
    axes[2].set(xlabel="step", ylabel="lr (base width)", title="learning rate")
    diag_path = Path(out_dir) / DIAGNOSTICS
    diag = read_diagnostics(out_dir) if diag_path.is_file() else None
    if diag is not None and len(diag):
        sizes = diag[diag["quantity"] == "act_size"]
        for layer, rows in sizes.groupby("layer", sort=False):
            axes[3].plot(rows["step"], rows["value"], lw=1, label=layer)
        axes[3].set_yscale("log")
        axes[3].set(xlabel="step", ylabel="mean |h|", title="activation sizes")
    else:
        axes[3].set_axis_off()
    fig.tight_layout()
    return fig


class Throughput:
    """Wall-clock time of the training steps only (evaluation, logging, checkpoints excluded)."""

    def __init__(self, elapsed: float = 0.0) -> None:
        self.elapsed = elapsed
        self._start: float | None = None

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self, tokens: int) -> float:
        """End the step that started at `start()`; returns its tokens per second."""
        seconds = time.perf_counter() - self._start
        self.elapsed += seconds
        return tokens / seconds if seconds > 0 else math.inf
