"""Chapter 07 helpers: coordinate checks next to `mup`'s, the spectral view of the same runs, and
the same check on Hugging Face GPT-2.

The notebook `notebooks/07_coordinate_checks.py` builds the models and runs
`ntk.scaling.coord_check.coord_check`; these functions collect spectral norms during those runs
(`SpectralLog`), run `mup.coord_check.get_coord_data` one width at a time (`mup_coord_data`),
turn the long tables into exponent tables (`exponent_table`, `spectral_exponents`), predict the
spectral exponents of a Gaussian init (`gaussian_rel_w_exponent`), and build
GPT-2 models at any width as shipped (Hugging Face's own init, one learning rate) or in muP through
`Parametrization` (`gpt2_factory`), with a next-token loss (`hf_lm_loss`) and exponents per module
group (`gpt2_groups`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ntk.lm.step import lm_loss
from ntk.scaling.coord_check import (  # exponent_table: in the package, notebook 07 reads it here
    exponent_table,  # noqa: F401
    fit_exponents,
    from_mup,
)
from ntk.scaling.parametrization import Parametrization, ParametrizationConfig
from ntk.scaling.spectral import SpectralMonitor

# GPT-2's layers by role, for `Parametrization` (module names of GPT2LMHeadModel)
GPT2_LAYERS = {
    "transformer.w[tp]e": "embedding",
    "transformer.h.*.attn.c_*": "hidden",
    "transformer.h.*.mlp.c_*": "hidden",
    "lm_head": "readout",
}
# module name patterns -> group, first match wins (exponents are reported per group)
GPT2_GROUPS = {
    r"\.attn_logits$": "attention logits",
    r"^transformer\.h\.\d+$": "block outputs",
    r"\.(?:c_attn|c_proj|c_fc)$": "Conv1D layers",
    r"\.(?:attn\[0\]|mlp|mlp\.act)$": "attention and MLP outputs",
    r"\.ln_\d$": "LayerNorms",
    r"^transformer\.w[tp]e$": "embeddings",
    r"^<output>\.logits$": "logits",
}


class SpectralLog:
    """Rows of `SpectralMonitor` logs, one monitor per (width, seed) of a coordinate check.

    `log.on_step(label)` is an `on_step` callback for `coord_check` that tags its rows with
    `model=label`; `log.frame()` returns every row logged so far.
    """

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_step(self, label: str) -> Callable[[nn.Module, int, int, int], None]:
        monitors: dict[tuple[int, int], SpectralMonitor] = {}

        def on_step(model: nn.Module, width: int, seed: int, step: int) -> None:
            if step == 0:
                monitors[width, seed] = SpectralMonitor(model)
            for row in monitors[width, seed].log(step):
                self.rows.append(dict(row, width=width, seed=seed, model=label))

        return on_step

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def spectral_exponents(last: pd.DataFrame, label: str) -> pd.DataFrame:
    """Width exponents of ||W|| and ||dW|| (over sqrt(fan_out / fan_in)) of one model's layers."""
    d = last[last["model"] == label].rename(columns={"layer": "module"})
    fits = fit_exponents(d, ["rel_w", "rel_dw"])
    return fits.pivot_table(index="module", columns="quantity", values="exponent")


def gaussian_rel_w_exponent(
    widths: Sequence[int], fan_in: Sequence[int], fan_out: Sequence[int]
) -> float:
    """Width exponent of ||W||_* / sqrt(fan_out / fan_in) predicted for a Gaussian init.

    For a fan_out x fan_in matrix with iid N(0, s^2 / fan_in) entries the top singular value
    sits near the edge of the Marchenko-Pastur law, ||W||_* ~ s (sqrt(fan_out) + sqrt(fan_in))
    / sqrt(fan_in) (Bai & Yin 1988), so the ratio is s (1 + sqrt(fan_in / fan_out)). Returns
    its least-squares slope on log-log axes against `widths` (as `fit_exponents` fits): 0 for
    an n x n layer, negative and tending to 0 for an n x (fixed) input layer, tending to 1/2 for
    a (fixed) x n readout (SP's std 1/sqrt(n) where muP's spectral condition asks for 1/n).
    """
    widths, fan_in, fan_out = (np.asarray(v, dtype=float) for v in (widths, fan_in, fan_out))
    if not (widths.shape == fan_in.shape == fan_out.shape) or widths.ndim != 1 or len(widths) < 2:
        raise ValueError("widths, fan_in and fan_out must be 1-D of equal length >= 2")
    if not ((widths > 0) & (fan_in > 0) & (fan_out > 0)).all():
        raise ValueError("widths, fan_in and fan_out must be > 0")
    ratio = 1.0 + np.sqrt(fan_in / fan_out)
    return float(np.polyfit(np.log(widths), np.log(ratio), 1)[0])


def mup_coord_data(
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    batch: tuple[torch.Tensor, torch.Tensor],
    *,
    lr: float,
    steps: int,
    seeds: Sequence[int],
) -> pd.DataFrame:
    """`mup.coord_check.get_coord_data` with MuAdam, in `coord_check`'s columns.

    It seeds once per seed and then builds its widths in order, so we call it one width at a
    time: each model's init then depends only on (seed, width), as in `coord_check`. Its
    forward pass t is our step t - 1 and its `l1` our `act_size`.
    """
    from mup.coord_check import get_coord_data

    frames = []
    for width in widths:
        d = get_coord_data(
            {width: lambda w=width: make_model(w)},
            [batch],
            optimizer="adam",
            lr=lr,
            mup=True,
            nsteps=steps + 1,
            nseeds=len(seeds),
            cuda=False,
            show_progress=False,
        )
        d = from_mup(d)
        d["seed"] = np.repeat(list(seeds), len(d) // len(seeds))  # mup loops over seeds outermost
        frames.append(d)
    return pd.concat(frames, ignore_index=True)


def gpt2_factory(
    parametrization: str,
    *,
    lr: float,
    base_width: int,
    head_dim: int,
    vocab: int,
    seq: int,
    n_layer: int = 2,
) -> Callable[[int], tuple[nn.Module, torch.optim.Optimizer]]:
    """`make(width)` -> (untied GPT2LMHeadModel, Adam) for `coord_check`.

    Width grows as in the GPT-2 family: heads of fixed size `head_dim`, width / head_dim of
    them. "sp": Hugging Face's own init (std 0.02) and one Adam learning rate `lr`. "mup":
    `Parametrization` with base width `base_width` (where it is plain SP), GPT-2's embedding
    std 0.02 at the base width, a zero readout (as mup's `readout_zero_init`), and its
    per-layer Adam learning rates (`lr` at the base width). Dropout is off.
    """
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # a small vocabulary: GPT-2's default token ids fall outside

    def make(width: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        config = GPT2Config(
            n_layer=n_layer,
            n_embd=width,
            n_head=width // head_dim,
            vocab_size=vocab,
            n_positions=seq,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=False,
            use_cache=False,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = GPT2LMHeadModel(config)
        if parametrization == "sp":
            return model, torch.optim.Adam(model.parameters(), lr=lr)
        param = Parametrization(
            model,
            ParametrizationConfig(
                parametrization,
                layers=GPT2_LAYERS,
                base_width=base_width,
                base_head_dim=head_dim,  # heads are added as the model widens
                lr=lr,
                base_std={"transformer.w[tp]e": 0.02},
                zero_readout=True,
            ),
        )
        return model, torch.optim.Adam(param.param_groups)

    return make


def hf_lm_loss(out, y: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of a Hugging Face causal LM output against (N, T) token ids:
    `ntk.lm.step.lm_loss` on its logits."""
    return lm_loss(out.logits, y)


def gpt2_groups(df: pd.DataFrame) -> pd.DataFrame:
    """Fitted width exponents of a GPT-2 coordinate check, steps >= 1, per module group
    (`GPT2_GROUPS`) and quantity: the smallest and largest exponent over the group's modules
    and steps."""
    fits = fit_exponents(df).query("step > 0").dropna(subset=["exponent"])
    groups = pd.Series(np.nan, index=fits.index, dtype=object)
    for pattern, group in reversed(GPT2_GROUPS.items()):  # first match wins: apply it last
        groups[fits["module"].str.contains(pattern, regex=True)] = group
    fits = fits.assign(group=groups).dropna(subset=["group"])
    table = fits.groupby(["group", "quantity"])["exponent"].agg(["min", "max"])
    return table.reindex(list(dict.fromkeys(GPT2_GROUPS.values())), level="group")
