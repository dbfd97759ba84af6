"""Chapter 13 experiments: the modded-nanogpt speedrun block under muP.

The notebook `notebooks/13_speedrun_gpt.py` runs `NOTEBOOK`, sized to about a minute on two
CPU cores; `python -m ntk.chapters.speedrun_gpt` runs `FULL` (the issue's grids: widths
64-512 for the coordinate check, 32-256 and 8 learning rates for the transfer, 3 seeds,
200-step precision runs) and prints the same readouts.

The runs are the project's: `ntk.lm.coord.gpt_coord_check` (coordinate checks, here with one
muP rule of a new component switched off at a time through `broken_build`),
`ntk.lm.transfer.train_run` (learning-rate transfer, run and read by chapter 09's
`transfer_sweep` and `transfer_claims`; bf16 autocast) and `curve_run` (validation loss
against tokens and seconds, nanoGPT block against speedrun block). The GPT options are
`SPEEDRUN` (`ntk.lm.speedrun`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pandas as pd
import torch

from ntk.chapters import _cli
from ntk.chapters.mup_transformer import transfer_claims, transfer_sweep
from ntk.lm.coord import fit_groups, gpt_coord_check
from ntk.lm.data import eval_batches, sample_batch
from ntk.lm.speedrun import Scalar
from ntk.lm.step import evaluate, train_step
from ntk.lm.transfer import BITS, LMSetup, build, corpus, schedule, train_run
from ntk.scaling.sweep import lr_sweep, optima

# every speedrun option on; the window is half the block (sliding, not plain causal)
SPEEDRUN = dict(
    mlp="relu2",
    norm="rms",
    qk_norm=True,
    rope_truncate=0.5,
    value_embeds=1,
    unet_skips=True,
    x0_mix=True,
    logit_softcap=15.0,
)


@dataclass(frozen=True)
class Scale:
    """The grids of the chapter's four experiments (coordinate check, transfer, precision,
    block comparison)."""

    coord: LMSetup
    coord_widths: tuple[int, ...]
    coord_log2_lr: float
    coord_steps: int
    coord_checked_steps: tuple[int, ...]
    coord_seeds: tuple[int, ...]
    coord_batch_size: int
    transfer: LMSetup
    widths: tuple[int, ...]
    log2_lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    precision: LMSetup
    precision_width: int
    compare: LMSetup
    compare_width: int
    compare_every: int
    note: str = field(default="", compare=False)


def speedrun_setup(window: int, **kw) -> LMSetup:
    """An `LMSetup` of the speedrun GPT with sliding window `window`."""
    return LMSetup(model_options=tuple({**SPEEDRUN, "attn_window": window}.items()), **kw)


NOTEBOOK = Scale(
    coord=speedrun_setup(8, level="char", n_layer=2, n_head=4, block_size=16, base_width=64),
    coord_widths=(64, 128, 256, 512),
    coord_log2_lr=-5.0,
    coord_steps=6,
    coord_checked_steps=(5, 6),
    coord_seeds=(0, 1, 2),
    coord_batch_size=4,
    transfer=speedrun_setup(
        8, level="word", n_layer=2, n_head=2, block_size=16, steps=40, warmup=4, base_width=16
    ),
    widths=(16, 64),
    log2_lrs=(-5.0, -4.0, -3.0, -2.0, -1.0),
    seeds=(0, 1),
    precision=speedrun_setup(8, level="word", n_layer=2, n_head=2, block_size=16, steps=40),
    precision_width=32,
    compare=speedrun_setup(8, level="word", n_layer=2, n_head=2, block_size=16, steps=40),
    compare_width=64,
    compare_every=10,
    note="notebook scale",
)
FULL = Scale(
    coord=speedrun_setup(16, level="char", n_layer=2, n_head=4, block_size=32, base_width=64),
    coord_widths=(64, 128, 256, 512),
    coord_log2_lr=-5.0,
    coord_steps=8,
    coord_checked_steps=(5, 6, 7, 8),
    coord_seeds=(0, 1, 2),
    coord_batch_size=4,
    transfer=speedrun_setup(
        16, level="word", n_layer=2, n_head=4, block_size=32, steps=200, warmup=20, base_width=32
    ),
    widths=(32, 64, 128, 256),
    log2_lrs=tuple(float(a) for a in range(-10, -2)),
    seeds=(0, 1, 2),
    precision=speedrun_setup(16, level="word", n_layer=2, n_head=4, block_size=32, steps=200),
    precision_width=64,
    compare=speedrun_setup(16, level="word", n_layer=2, n_head=4, block_size=32, steps=300),
    compare_width=128,
    compare_every=25,
    note="full scale",
)
SCALES = {"notebook": NOTEBOOK, "full": FULL}


# ---- coordinate check, with one muP rule switched off at a time ------------------------------
# broken rule -> the group it should move (its own component's)
BROKEN = {
    "value-embedding lr ~ 1/m": "value embedding",
    "scalar-gate lr ~ 1/m": "x0 term",
    "attention scale 1/sqrt(d)": "attention logits",
}


def broken_build(rule: str) -> Callable[..., tuple]:
    """`ntk.lm.transfer.build` with one muP rule of a new component switched off:

    - "value-embedding lr ~ 1/m": the value-embedding tables get a hidden matrix's learning
      rate (times m^-1, m = width / base width) instead of an embedding's;
    - "scalar-gate lr ~ 1/m": the scalar gates (value mix, x0 mix, U-Net skips) too, instead of
      the base learning rate of the rest group;
    - "attention scale 1/sqrt(d)": the engine keeps SP's logit scale (attention_scale="keep")
      under QK-norm instead of muP's sqrt(d0)/d.
    """
    if rule not in BROKEN:
        raise ValueError(f"rule must be one of {tuple(BROKEN)}, got {rule!r}")

    def make(parametrization, width, lr, seed, setup):
        if rule == "attention scale 1/sqrt(d)":
            return build(parametrization, width, lr, seed, setup, attention_scale="keep")
        model, optimizer = build(parametrization, width, lr, seed, setup)
        scalars = {id(m.weight) for m in model.modules() if isinstance(m, Scalar)}
        for group in optimizer.param_groups:
            if rule.startswith("value") and group["name"].startswith("value_embeds"):
                group["lr"] *= setup.base_width / width
            elif rule.startswith("scalar") and group["name"] == "rest":
                if {id(p) for p in group["params"]} != scalars:  # rms norms have no gain
                    raise ValueError("the rest group must hold the scalar gates alone")
                group["lr"] *= setup.base_width / width
        return model, optimizer

    return make


def coordinate_check(scale: Scale) -> pd.DataFrame:
    """SP (one lr), muP and each `BROKEN` muP variant: one table, column `variant`."""
    run = dict(
        lr=2.0**scale.coord_log2_lr,
        setup=scale.coord,
        steps=scale.coord_steps,
        seeds=scale.coord_seeds,
        batch_size=scale.coord_batch_size,
    )
    tables = [
        gpt_coord_check(p, scale.coord_widths, **run).assign(variant=p) for p in ("sp", "mup")
    ]
    for rule in BROKEN:
        df = gpt_coord_check("mup", scale.coord_widths, build_fn=broken_build(rule), **run)
        tables.append(df.assign(variant=f"muP, {rule}"))
    return pd.concat(tables, ignore_index=True)


def coord_exponents(df: pd.DataFrame) -> pd.DataFrame:
    """`fit_groups` per variant: variant, group, quantity, step, mean, min, max."""
    fits = [fit_groups(d).assign(variant=v) for v, d in df.groupby("variant", sort=False)]
    return pd.concat(fits, ignore_index=True)


def exponent_table(fits: pd.DataFrame, steps: Sequence[int], quantity: str) -> pd.DataFrame:
    """Group x variant: the group exponent of `quantity`, averaged over `steps`."""
    sel = fits[fits["step"].isin(steps) & (fits["quantity"] == quantity)]
    return sel.pivot_table(index="group", columns="variant", values="mean", sort=False)


def coord_claims(fits: pd.DataFrame, steps: Sequence[int]) -> dict:
    """mup_max_abs: muP's largest |group exponent| (any group, step of `steps`, quantity);
    sp_min: SP's smallest delta exponent of the residual stream and the logits;
    broken: per broken rule, the smallest |delta exponent| of its own group."""
    sel = fits[fits["step"].isin(steps)]
    mup = sel[sel["variant"] == "mup"]
    sp = sel[(sel["variant"] == "sp") & (sel["quantity"] == "delta_size")]
    sp = sp[sp["group"].isin(["residual stream", "readout (logits)", "capped logits"])]
    broken = {}
    for rule, group in BROKEN.items():
        own = sel[(sel["variant"] == f"muP, {rule}") & (sel["group"] == group)]
        own = own[own["quantity"] == "delta_size"]
        broken[rule] = float(own["mean"].abs().min())
    return dict(
        mup_max_abs=float(mup["mean"].abs().max()),
        mup_groups=int(mup["group"].nunique()),
        sp_min=float(sp["mean"].min()),
        broken=broken,
    )


# ---- learning-rate transfer -----------------------------------------------------------------
def base_sweep(scale: Scale, *, workers: int = 2) -> pd.DataFrame:
    """muP `lr_sweep` of the nanoGPT block (no speedrun option) at the narrowest width only:
    its transferred learning rate for `compare_blocks`."""
    return lr_sweep(
        functools.partial(train_run, setup=replace(scale.transfer, model_options=())),
        log2_lrs=scale.log2_lrs,
        widths=scale.widths[:1],
        seeds=scale.seeds,
        parametrizations=("mup",),
        workers=workers,
        progress=False,
    )


# ---- mixed precision and the block comparison -----------------------------------------------
def precision_runs(scale: Scale, log2_lr: float) -> pd.DataFrame:
    """Final validation loss (bits per token) of fp32 and bf16-autocast runs, per seed."""
    rows = []
    for autocast in ("none", "bf16"):
        setup = replace(scale.precision, autocast=autocast)
        for seed in scale.seeds:
            loss = train_run("mup", scale.precision_width, 2.0**log2_lr, seed, setup)
            rows.append(dict(autocast=autocast, seed=seed, loss=loss))
    return pd.DataFrame(rows)


def precision_claims(df: pd.DataFrame) -> dict:
    """The bf16 - fp32 difference of the seed means, and the fp32 seed-to-seed spread (std)."""
    by = df.groupby("autocast")["loss"]
    return dict(
        diff=float(by.mean()["bf16"] - by.mean()["none"]),
        fp32_std=float(by.std()["none"]),
        bf16_std=float(by.std()["bf16"]),
    )


def curve_run(block: str, width: int, lr: float, seed: int, setup: LMSetup, every: int):
    """Validation loss (bits per token) every `every` steps of a muP run of the "nanogpt" or
    "speedrun" block: rows of step, tokens, seconds (training time only), loss."""
    if block not in ("nanogpt", "speedrun"):
        raise ValueError(f"block must be 'nanogpt' or 'speedrun', got {block!r}")
    setup = setup if block == "speedrun" else replace(setup, model_options=())
    data = corpus(setup)
    model, optimizer = build("mup", width, lr, seed, setup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s, setup))
    generator = torch.Generator().manual_seed(seed)
    val = eval_batches(data.val, setup.val_batch_size, setup.block_size, setup.val_batches)
    rows, seconds = [], 0.0
    for step in range(1, setup.steps + 1):
        batch = sample_batch(data.train, setup.batch_size, setup.block_size, generator)
        start = time.perf_counter()
        train_step(model, optimizer, batch, step=step)
        scheduler.step()
        seconds += time.perf_counter() - start
        if step % every == 0 or step == setup.steps:
            loss = evaluate(model, val) * BITS
            tokens = step * setup.batch_size * setup.block_size
            rows.append(dict(block=block, seed=seed, step=step, tokens=tokens, seconds=seconds))
            rows[-1]["loss"] = loss
    return rows


def compare_blocks(scale: Scale, lrs: dict[str, float]) -> pd.DataFrame:
    """`curve_run` of both blocks, each at its learning rate `lrs[block]`, every seed."""
    rows = []
    for block in ("nanogpt", "speedrun"):
        for seed in scale.seeds:
            rows += curve_run(
                block, scale.compare_width, lrs[block], seed, scale.compare, scale.compare_every
            )
    return pd.DataFrame(rows)


def tokens_to_target(curves: pd.DataFrame) -> dict:
    """The nanoGPT block's final seed-mean loss, and the first recorded token count at which
    the speedrun block's seed mean reaches it (None if it never does)."""
    mean = curves.groupby(["block", "tokens"])["loss"].mean()
    target = float(mean["nanogpt"].iloc[-1])
    reached = mean["speedrun"][mean["speedrun"] <= target]
    return dict(
        target=target,
        tokens=None if reached.empty else int(reached.index[0]),
        total=int(mean["nanogpt"].index[-1]),
        speedrun_final=float(mean["speedrun"].iloc[-1]),
    )


# ---- script ---------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict:
    """Run one scale of the four experiments and print their readouts."""
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="full", help="experiment size")
    p.add_argument("--workers", type=int, default=2, help="processes for the sweep")
    args = p.parse_args(argv)
    start = _cli.start(args)
    scale = SCALES[args.scale]
    fits = coord_exponents(coordinate_check(scale))
    steps = scale.coord_checked_steps
    print(exponent_table(fits, steps, "delta_size").round(2).to_string(), flush=True)
    print(coord_claims(fits, steps), flush=True)
    results = transfer_sweep(scale, workers=args.workers, progress=True)
    claims = transfer_claims(results)
    print(claims["optima"].round(4).to_string(index=False), claims["drift_steps"], flush=True)
    print(claims["at_transfer"].round(4).to_string(), claims["margin_se"], flush=True)
    print(precision_claims(precision_runs(scale, claims["transferred"])), flush=True)
    base = optima(base_sweep(scale, workers=args.workers), n_boot=0)["log2_lr_opt"].iloc[0]
    curves = compare_blocks(scale, {"nanogpt": 2.0**base, "speedrun": 2.0 ** claims["transferred"]})
    print(tokens_to_target(curves), flush=True)
    _cli.finish(args.out, [], start)
    return dict(fits=fits, results=results, claims=claims, curves=curves)


if __name__ == "__main__":
    _cli.run(main)
