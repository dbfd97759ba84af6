"""Chapter 15 experiments: muP for a mixture-of-experts GPT and for latent (MLA) attention.

The notebook `notebooks/15_moe_mla.py` runs `NOTEBOOK`, sized for about a minute on two idle
CPU cores; `python -m ntk.chapters.moe_mla` runs `FULL` (or `--scale notebook`) and prints
the same tables. The runs are those of chapter 09 (`ntk.chapters.mup_transformer`: its
`Scale`, coordinate check and transfer sweep) on the GPT with `GPTConfig`'s MoE and MLA
options (`ntk.lm.moe`, `ntk.lm.mla`); this module adds the two architectures' grids, the
routing statistics per width and the claims' readouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from ntk.chapters import _cli, mup_transformer
from ntk.chapters.mup_transformer import (
    Scale,
    coord_claims,
    coord_exponents,
    coordinate_check,
    exponent_table,
    transfer_claims,
    transfer_sweep,
)
from ntk.lm.coord import MLA_GROUPS, MOE_GROUPS
from ntk.lm.data import eval_batches
from ntk.lm.moe import routing_entropy
from ntk.lm.step import train_step
from ntk.lm.transfer import LMSetup, build, corpus

# E = 8 experts, top-2, each of hidden size n_embd: the active MLP is 2 n_embd wide
MOE = (("moe_experts", 8), ("moe_top_k", 2), ("moe_hidden", 1))
MLA = (("mla_rank", 16), ("mla_rope_dim", 8))  # latent rank r = 16, fixed as n_embd grows
ROUTER, EXPERTS = MOE_GROUPS.values()
LATENT = MLA_GROUPS[r"blocks\.\d+\.attn\.(q|kv)_down"]


def _coord_setup(options) -> LMSetup:
    return LMSetup(
        level="char", n_layer=2, n_head=4, block_size=32, base_width=64, model_options=options
    )


def _scale(options, steps: int, checked: tuple[int, ...], transfer: LMSetup, **grid) -> Scale:
    return Scale(
        coord=_coord_setup(options),
        coord_widths=(64, 128, 256, 512),
        coord_log2_lr=-4.0,
        coord_steps=steps,
        coord_checked_steps=checked,
        transfer=transfer,
        **grid,
    )


# chapter 09's notebook transfer (word tokens, 1 block, 2 heads, context 16, 100 steps, base
# width 16) on the MoE GPT
TRANSFER = replace(mup_transformer.NOTEBOOK.transfer, model_options=MOE)
# the MoE GPT's transients (router logits start at ~n^-1/2) need 12 steps, MLA's 8
NOTEBOOK = {
    "moe": _scale(
        MOE,
        12,
        (10, 11, 12),
        TRANSFER,
        widths=(32, 128),
        log2_lrs=(-7.0, -5.0, -3.0),
        seeds=(0, 1),
    ),
    "mla": _scale(MLA, 8, (5, 6, 7, 8), TRANSFER, widths=(16,), log2_lrs=(-4.0,)),
}
FULL = {
    "moe": replace(
        NOTEBOOK["moe"],
        transfer=replace(TRANSFER, n_layer=2, n_head=4, steps=300, warmup=30, base_width=32),
        widths=(32, 64, 128, 256),
        log2_lrs=tuple(float(a) for a in range(-9, -1)),
        seeds=(0, 1, 2),
    ),
    "mla": NOTEBOOK["mla"],
}
SCALES = {"notebook": NOTEBOOK, "full": FULL}
TRANSFER_NOTE = (
    "notebook scale: widths 32 and 128 (4x; the issue asks 32-256), learning rates 2^-7, "
    "2^-5, 2^-3 (every other grid point), 2 seeds (the issue asks 3), 1 block, 100 steps"
)


def coordinate_checks(scale: dict[str, Scale]) -> dict[str, pd.DataFrame]:
    """Chapter 09's coordinate check (SP with one lr, and muP) of the MoE and the MLA GPT."""
    return {name: coordinate_check(s) for name, s in scale.items()}


def claims(coords: pd.DataFrame, scale: Scale) -> tuple[pd.DataFrame, dict[str, float]]:
    """(exponent table at the checked steps, `coord_claims` of chapter 09)."""
    fits = coord_exponents(coords)
    checked = scale.coord_checked_steps
    return exponent_table(fits, checked), coord_claims(fits, checked)


def routing_by_width(
    scale: Scale,
    parametrization: str = "mup",
    steps: int | None = None,
    batch_size: int = 4,
    seeds: Sequence[int] | None = None,
    widths: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Routing entropies (`ntk.lm.moe.routing_entropy`, in units of log E) per width and
    seed, after the coordinate check's `steps` AdamW updates on its fixed batch, measured on
    that batch: "load" (the experts' shares of the assignments) and "token" (a token's router
    distribution). `seeds` and `widths` default to the coordinate check's."""
    setup = scale.coord
    steps = scale.coord_steps if steps is None else steps
    data = corpus(setup)
    ((x, y),) = eval_batches(data.val, batch_size, setup.block_size, 1)
    rows = []
    for width in scale.coord_widths if widths is None else widths:
        for seed in scale.coord_seeds if seeds is None else seeds:
            model, opt = build(parametrization, width, 2.0**scale.coord_log2_lr, seed, setup)
            for step in range(steps):
                train_step(model, opt, (x, y), step=step)
            with torch.no_grad():
                model(x)
            rows.append(dict(width=width, seed=seed, **routing_entropy(model)))
    return pd.DataFrame(rows)


def entropy_slopes(routing: pd.DataFrame) -> dict[str, float]:
    """Least-squares slope of each entropy (seed mean) against log2 width."""
    mean = routing.groupby("width")[["load", "token"]].mean()
    x = np.log2(mean.index.to_numpy(dtype=float))
    return {q: float(np.polyfit(x, mean[q].to_numpy(), 1)[0]) for q in ("load", "token")}


def main(argv: Sequence[str] | None = None) -> dict:
    """Run one scale: coordinate checks, routing entropies, the MoE transfer; print claims."""
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="full", help="experiment size")
    p.add_argument("--workers", type=int, default=2, help="processes for the sweep")
    args = p.parse_args(argv)
    start = _cli.start(args)
    scale = SCALES[args.scale]
    out = {}
    for name, coords in coordinate_checks(scale).items():
        table, c = claims(coords, scale[name])
        print(name, "\n", table.round(2).to_string(), "\n", c, flush=True)
        out[name] = c
    routing = {p: routing_by_width(scale["moe"], p) for p in ("mup", "sp")}
    for p, r in routing.items():
        print(p, r.groupby("width")[["load", "token"]].mean().round(3).to_string())
        print(p, "slopes per doubling", entropy_slopes(r), flush=True)
    results = transfer_sweep(scale["moe"], workers=args.workers)
    t = transfer_claims(results)
    print({k: t[k] for k in ("drift_steps", "near_drift_steps", "opt_slope", "margin_se")})
    _cli.finish(args.out, [], start)
    return out | {"transfer": t, "routing": routing}


if __name__ == "__main__":
    _cli.run(main)
