"""Chapter 14 experiments: SGD, Adam and Muon under muP; Muon's coordinate checks and transfer.

The notebook `notebooks/14_optimizers.py` runs `NOTEBOOK` (about a minute on two idle CPU
cores); `python -m ntk.chapters.optimizers` runs it too (or `--scale full`, the issue's grid)
and prints the claims. The variants, named exactly (`VARIANTS`):

    adamw-mup        muP, AdamW on every weight (the engine's Adam exponents)
    muon-spectral    muP, hidden matrices on Muon with s = sqrt(fan_out/fan_in), c = 0
    muon-keller      muP, Muon with s = sqrt(max(1, fan_out/fan_in)), c = 0
    muon-moonshot    muP, Muon with s = 0.2 sqrt(max(fan_in, fan_out)), c = 1/2 (the engine's
                     correction of the rule's n^(1/2))
    muon-sp-global   SP with ONE learning rate (lr_rule "global"): Muon as its authors run it
                     (keller's s), embedding and readout on Adam at the same lr, no readout
                     multiplier
    muon-moonshot-global  muP's Adam roles, Muon with moonshot's s and c = 0 (uncorrected)
    adamw-sp-global  SP with ONE learning rate, AdamW on every weight (chapter 09's SP)

Muon's learning rate is `MUON_LR_RATIO` times AdamW's in every variant (one swept lr).
The runs are `ntk.scaling.coord_check.coord_check` (MLP), `ntk.lm.coord.gpt_coord_check` (GPT)
and `ntk.lm.transfer.train_run` through `ntk.scaling.sweep.lr_sweep`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ntk.chapters import _cli
from ntk.lm.coord import fit_groups, gpt_coord_check
from ntk.lm.transfer import LMSetup, train_run
from ntk.models import WideMLP
from ntk.scaling import Parametrization, ParametrizationConfig
from ntk.scaling.coord_check import coord_check, fit_exponents
from ntk.scaling.muon import build_optimizer, rule_exponent
from ntk.scaling.sweep import lr_drift, lr_sweep, optima, summarize

MUON_LR_RATIO = 8.0
# label -> (parametrization, lr_rule, Muon rule or None for AdamW)
VARIANTS = {
    "adamw-mup": ("mup", "abc", None),
    "muon-spectral": ("mup", "abc", "spectral"),
    "muon-keller": ("mup", "abc", "keller"),
    "muon-moonshot": ("mup", "abc", "moonshot"),
    "muon-sp-global": ("sp", "global", "keller"),
    "muon-moonshot-global": ("mup", "moonshot-global", "moonshot"),
    "adamw-sp-global": ("sp", "global", None),
}
# the coordinate checks' variants (MLP), and the transfer sweep's: the three rules under muP,
# AdamW-muP, and the two rivals whose optimum is predicted to move
COORD_VARIANTS = tuple(v for v in VARIANTS if v != "adamw-sp-global")
TRANSFER_VARIANTS = tuple(v for v in VARIANTS if v != "muon-sp-global")


@dataclass(frozen=True)
class Scale:
    """The grids of the three experiments."""

    mlp_widths: tuple[int, ...]
    mlp_steps: int
    gpt: LMSetup
    gpt_widths: tuple[int, ...]
    gpt_steps: int
    transfer: LMSetup
    widths: tuple[int, ...]
    log2_lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    coord_seeds: tuple[int, ...] = (0, 1, 2)


NOTEBOOK = Scale(
    mlp_widths=(64, 128, 256, 512),
    mlp_steps=3,
    gpt=LMSetup(level="char", n_layer=1, n_head=2, block_size=16, base_width=32),
    gpt_widths=(32, 64, 128),
    gpt_steps=3,
    transfer=LMSetup(
        level="char",
        n_layer=1,
        n_head=2,
        block_size=32,
        batch_size=16,
        steps=40,
        warmup=4,
        base_width=32,
    ),
    widths=(32, 64, 128),
    log2_lrs=(-8.0, -7.0, -6.0, -5.0, -4.0),
    seeds=(0,),
)
FULL = Scale(  # the grid: hours on a CPU
    mlp_widths=(128, 256, 512, 1024, 2048, 4096),
    mlp_steps=3,
    gpt=LMSetup(level="char", n_layer=2, n_head=4, block_size=32, base_width=64),
    gpt_widths=(64, 128, 256, 512),
    gpt_steps=3,
    transfer=LMSetup(level="char", n_layer=2, n_head=4, block_size=32, base_width=32),
    widths=(32, 64, 128, 256),
    log2_lrs=tuple(float(x) for x in range(-10, -2)),
    seeds=(0, 1, 2),
)
SCALES = {"notebook": NOTEBOOK, "full": FULL}


def options(variant: str, lr: float, ratio: float = 1.0) -> tuple[str, dict]:
    """(parametrization, gpt_recipe options) of a variant at AdamW learning rate `lr`, for a
    model at width ratio n / n0 = `ratio` (it matters only to the uncorrected moonshot)."""
    parametrization, rule, muon = VARIANTS[variant]
    opts: dict = dict(lr_rule=rule) if rule == "global" else {}
    if muon is not None:
        muon_lr = MUON_LR_RATIO * lr
        if rule == "moonshot-global":  # undo the engine's n^-(1/2): as Moonshot runs it
            muon_lr *= ratio ** rule_exponent(muon)
        opts.update(optimizer="muon", muon_rule=muon, muon_lr=muon_lr)
    return parametrization, opts


# ---- MLP coordinate check ------------------------------------------------------------------
def mlp_model(variant: str, width: int, lr: float = 2**-6, base_width: int = 64):
    """A 3-layer MLP (embedding, one hidden matrix, readout) parametrized as `variant`."""
    parametrization, opts = options(variant, lr, width / base_width)
    model = WideMLP(16, width=width, out_features=8, depth=2)
    cfg = ParametrizationConfig(parametrization, lr=lr, base_width=base_width, **opts)
    param = Parametrization(model, cfg)
    return model, build_optimizer(param.param_groups)


def mlp_coordinate_check(scale: Scale, variants: Sequence[str]) -> pd.DataFrame:
    """`coord_check` of the MLP under each variant: one tidy table with a `variant` column."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=gen)
    y = torch.randint(0, 8, (64,), generator=gen)
    out = []
    for v in variants:
        df = coord_check(
            functools.partial(mlp_model, v),
            scale.mlp_widths,
            (x, y),
            loss_fn=F.cross_entropy,
            steps=scale.mlp_steps,
            seeds=scale.coord_seeds,
        )
        out.append(df.assign(variant=v))
    return pd.concat(out, ignore_index=True)


def mlp_exponents(df: pd.DataFrame) -> pd.DataFrame:
    """Fitted width exponents of delta_size per variant, layer and step >= 1."""
    rows = []
    for v, d in df.groupby("variant", sort=False):
        fits = fit_exponents(d, ["delta_size"]).query("step > 0")
        rows.append(fits.assign(variant=v))
    fits = pd.concat(rows, ignore_index=True)
    return fits.pivot_table(index=["variant", "module"], columns="step", values="exponent")


# ---- GPT coordinate check ------------------------------------------------------------------
def gpt_coordinate_check(
    scale: Scale, variants: Sequence[str], log2_lr: float = -6.0
) -> pd.DataFrame:
    """`gpt_coord_check` under each variant (AdamW lr 2^log2_lr, Muon's x MUON_LR_RATIO)."""
    out = []
    for v in variants:
        parametrization, opts = options(v, 2.0**log2_lr)
        opts.pop("lr_rule", None)  # transfer.build sets it from the parametrization
        df = gpt_coord_check(
            parametrization,
            scale.gpt_widths,
            lr=2.0**log2_lr,
            setup=scale.gpt,
            steps=scale.gpt_steps,
            seeds=scale.coord_seeds,
            batch_size=4,
            **opts,
        )
        out.append(df.assign(variant=v))
    return pd.concat(out, ignore_index=True)


def gpt_exponents(df: pd.DataFrame) -> pd.DataFrame:
    """Mean fitted exponent of delta_size per variant and module group, over steps >= 1."""
    rows = []
    for v, d in df.groupby("variant", sort=False):
        fits = fit_groups(d).query("quantity == 'delta_size' and step > 0")
        rows.append(fits.assign(variant=v))
    fits = pd.concat(rows, ignore_index=True)
    return fits.pivot_table(index="group", columns="variant", values="mean", sort=False)


# ---- learning-rate transfer ----------------------------------------------------------------
def run_variant(parametrization: str, width: int, lr: float, seed: int, setup: LMSetup) -> float:
    """`train_run` of the variant named `parametrization` (lr_sweep passes the label)."""
    name, opts = options(parametrization, lr, width / setup.base_width)
    opts.pop("lr_rule", None)  # transfer.build sets it from the parametrization
    return train_run(name, width, lr, seed, setup, **opts)


def transfer_sweep(
    scale: Scale, variants: Sequence[str], *, workers: int = 2, cache=None
) -> pd.DataFrame:
    """`lr_sweep` of `run_variant` over the scale's grid, one "parametrization" per variant."""
    return lr_sweep(
        functools.partial(run_variant, setup=scale.transfer),
        log2_lrs=scale.log2_lrs,
        widths=scale.widths,
        seeds=scale.seeds,
        parametrizations=tuple(variants),
        cache=cache,
        workers=workers,
        progress=False,
    )


def transfer_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per variant: drift of the optimal log2 lr over the widths (grid steps), the lr tuned
    at the narrowest width, and the loss there at every width."""
    opt = optima(results, n_boot=100, seed=0)
    step = float(np.diff(sorted(results["log2_lr"].unique())).max())
    drift = lr_drift(opt) / step
    summary = summarize(results)
    rows = []
    for v, o in opt.groupby("parametrization", sort=False):
        o = o.set_index("width")["log2_lr_opt"]
        tuned = float(o.loc[o.index.min()])
        at = summary[(summary["parametrization"] == v) & (summary["log2_lr"] == tuned)]
        row = dict(variant=v, drift_steps=float(drift[v]), tuned_log2_lr=tuned)
        row.update({f"opt@{w}": float(o.loc[w]) for w in o.index})
        row.update({f"loss@{w}": float(m) for w, m in zip(at["width"], at["mean"], strict=True)})
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def main(argv: Sequence[str] | None = None) -> dict:
    """Run one scale of the three experiments and print their tables (no figures)."""
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="notebook", help="experiment size")
    p.add_argument("--workers", type=int, default=2, help="processes for the sweep")
    p.add_argument("--cache", default=None, help="SQLite cache of the sweep (resumable)")
    args = p.parse_args(argv)
    scale = SCALES[args.scale]
    mlp = mlp_exponents(mlp_coordinate_check(scale, COORD_VARIANTS))
    gpt = gpt_exponents(gpt_coordinate_check(scale, ["muon-spectral", "muon-sp-global"]))
    results = transfer_sweep(scale, TRANSFER_VARIANTS, workers=args.workers, cache=args.cache)
    transfer = transfer_table(results)
    for table in (mlp, gpt, transfer):
        print(table.round(3).to_string(), flush=True)
    return dict(mlp=mlp, gpt=gpt, transfer=transfer, results=results)


if __name__ == "__main__":
    _cli.run(main)
