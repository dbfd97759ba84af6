"""Coordinate check of the GPT: SP vs muP, every module's activation and update against width.

`ntk.scaling.coord_check.coord_check` trains each width a few Adam steps on one fixed batch
and records, per module output h (N x n) and step t, act_size = mean |h_t| and
delta_size = mean |h_t - h_0|. Under muP both are Theta(1) in the width for every module
(Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466, sec. 4: the fitted exponent of
size ~ width^e is near 0); under SP with one global learning rate the hidden modules' updates
grow like the width (e = 1 in the limit; less over a finite range of widths).

The modules recorded, by group (`GROUPS`): the embedding output, each block's q, k, v
projections, its attention logits s q.k (recorded by `coord_check` from the arguments of the
`F.scaled_dot_product_attention` call, `ntk.scaling.attention_logits`: the fused attention
never returns them), the attention output projection, the MLP's up
and down projections, the residual stream after each block, and the readout's logits. With
the GPT's options also: the speedrun's (`ntk.lm.speedrun`) value-embedding tables, value mix
g v + e ve, x0 term mu x0, U-Net skip terms u x_skip and capped logits; an MoE's "expert
outputs" (the experts' outputs per token and choice, before the gates) and "router logits";
MLA's "latent" (both down projections' outputs), "rope query" and "rope key" (q and k are then
the content up projections).
Parametrized layers are recorded through their `ScaledModule` wrapper, whose output is the
effective one (multiplier included).

Zero-initialized modules (muP's query, hence its logits, and its readout) are exactly 0 at
step 0 at every width: there is nothing to fit, and `fit_groups` leaves step 0 out for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ntk._checks import check_positive_int
from ntk.lm.data import eval_batches
from ntk.lm.model import GPT
from ntk.lm.step import lm_loss
from ntk.lm.transfer import LMSetup, build, corpus
from ntk.scaling.coord_check import coord_check, fit_exponents

# module-name pattern -> group; blocks.<i>. prefixes are matched for every block
GROUPS = {
    r"wte": "embedding",
    r"blocks\.\d+\.attn\.q": "query",
    r"blocks\.\d+\.attn\.k": "key",
    r"blocks\.\d+\.attn\.v": "value",
    r"blocks\.\d+\.attn\.attn_logits": "attention logits",
    r"blocks\.\d+\.attn\.o": "attention output",
    r"blocks\.\d+\.mlp\.up": "mlp up",
    r"blocks\.\d+\.mlp\.down": "mlp down",
    r"blocks\.\d+": "residual stream",
    r"lm_head": "readout (logits)",
}
# the speedrun options' modules (ntk.lm.speedrun), recorded when the model has them
SPEEDRUN_GROUPS = {
    r"value_embeds\.\d+": "value embedding",
    r"blocks\.\d+\.attn\.value_mix": "value mix",
    r"blocks\.\d+\.x0_mix\.b": "x0 term",
    r"skips\.\d+": "skip terms",
    r"softcap": "capped logits",
}
GROUPS |= SPEEDRUN_GROUPS
OUTER = ("embedding", "readout (logits)", "value embedding", "capped logits")
HIDDEN = [g for g in GROUPS.values() if g not in OUTER]
# the groups of the GPT's options: an MoE MLP (ntk.lm.moe), latent attention (ntk.lm.mla)
MOE_GROUPS = {
    r"blocks\.\d+\.mlp\.router": "router logits",
    r"blocks\.\d+\.mlp\.expert_out": "expert outputs",  # (N, k, C) per token and choice
}
MLA_GROUPS = {
    r"blocks\.\d+\.attn\.(q|kv)_down": "latent",  # c_q, c_kv
    r"blocks\.\d+\.attn\.q_rope": "rope query",
    r"blocks\.\d+\.attn\.k_rope": "rope key",
}
OPTION_GROUPS = MOE_GROUPS | MLA_GROUPS  # not in HIDDEN: their rules differ (see the chapter)


def group_of(module: str) -> str | None:
    """The group of a module name, or None for modules the check does not record."""
    return next((g for p, g in (GROUPS | OPTION_GROUPS).items() if re.fullmatch(p, module)), None)


def gpt_coord_check(
    parametrization: str,
    widths: Sequence[int],
    *,
    lr: float,
    setup: LMSetup,
    steps: int = 3,
    seeds: Sequence[int] = (0, 1, 2),
    batch_size: int = 16,
    build_fn: Callable[..., tuple[GPT, torch.optim.Optimizer]] = build,
    **options,
) -> pd.DataFrame:
    """`coord_check` of the GPT under "sp" (one global lr) or "mup": a tidy table with a
    `group` column added (see `ntk.scaling.coord_check.coord_check` for the others).

    Every width trains `steps` AdamW updates at the constant learning rate `lr` (no schedule)
    on one fixed batch of `batch_size` validation windows; `setup` gives the shape (depth,
    heads, block size, base width, weight decay, betas, GPT options). `build_fn` (arguments as
    `ntk.lm.transfer.build`'s) makes each width's model and optimizer, e.g. with one muP rule
    switched off; `options` go to it (e.g. optimizer="muon", muon_rule, muon_lr).
    """
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    data = corpus(setup)
    ((x, y),) = eval_batches(data.val, batch_size, setup.block_size, 1)

    def make(width: int):
        seed = torch.initial_seed()  # coord_check seeds torch right before this call
        return build_fn(parametrization, width, lr, seed, setup, **options)

    df = coord_check(
        make,
        widths,
        (x, y),
        loss_fn=lm_loss,
        steps=steps,
        seeds=seeds,
        modules=lambda name: group_of(name) is not None,
        attention_logits=True,
    )
    return df.assign(group=df["module"].map(group_of), parametrization=parametrization)


def fit_groups(df: pd.DataFrame) -> pd.DataFrame:
    """Width exponents per group, step and quantity: the mean and the extremes over the
    group's modules (one per block) of `fit_exponents`' slopes.

    Exactly-zero records (zero-initialized modules at step 0, and every delta at step 0) are
    left out; a group with nothing left at some step has no row there.
    """
    fits = fit_exponents(df, min_size=0.0).dropna(subset=["exponent"])
    fits = fits.assign(group=fits["module"].map(group_of))
    out = fits.groupby(["group", "quantity", "step"], sort=False)["exponent"].agg(
        ["mean", "min", "max"]
    )
    return out.reset_index()


def worst_exponents(fits: pd.DataFrame, groups: Sequence[str], steps: Sequence[int]):
    """(min, max) of the fitted exponents over `groups` x `steps` x both quantities."""
    sel = fits[fits["group"].isin(groups) & fits["step"].isin(steps)]
    if sel.empty:
        raise ValueError(f"no fitted exponents for groups {list(groups)} at steps {list(steps)}")
    return float(np.min(sel["min"])), float(np.max(sel["max"]))
