"""The GPT's layers by abc role, and its parametrization through the project's abc engine.

Yang et al. 2022 ("Tensor Programs V", arXiv:2203.03466) treat a transformer like an MLP:
the token embedding maps a finite-size input (the vocabulary) to the width, it is an
"embedding" layer; every width x width matrix (queries, keys, values, attention output, both
MLP matrices) is "hidden"; the unembedding is the "readout". Norm gains and biases are
vector-like: they stay in the engine's rest group at the base learning rate. The rules
themselves (init std n^-b, multiplier n^-a, learning rate n^-c per role, muP's attention
scale sqrt(d0)/d, tied embeddings, zero-initialized queries and readout) live in one place,
`ntk.Parametrization`; this module only names the layers and builds the base model.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ntk import Parametrization, ParametrizationConfig
from ntk._checks import check_positive_int
from ntk.lm.model import GPT


def gpt_layers(model: GPT) -> dict[str, str]:
    """Glob pattern on module names -> abc role, for `ParametrizationConfig.layers`."""
    if not isinstance(model, GPT):
        raise TypeError(f"model must be an ntk.lm.GPT, got {type(model).__name__}")
    return {
        "wte": "embedding",  # muP: vocab -> width
        "blocks.*.attn.q": "hidden",
        "blocks.*.attn.k": "hidden",
        "blocks.*.attn.v": "hidden",
        "blocks.*.attn.o": "hidden",
        "blocks.*.mlp.up": "hidden",
        "blocks.*.mlp.down": "hidden",  # muP: fan-in 4 n_embd, width ratio that of n_embd
        "lm_head": "readout",  # muP: width -> vocab
    }


def base_model(model: GPT, base_width: int) -> GPT:
    """The same GPT at n_embd = base_width, on the meta device (shapes only, no memory).

    It grows the way `model` does: the same head count (fixed n_head) or the same head size
    (fixed head_dim), so the engine reads every weight's width ratio and the head size d0 of
    muP's attention scale from it.
    """
    check_positive_int("base_width", base_width)
    try:
        config = replace(model.config, n_embd=base_width)
    except ValueError as err:
        raise ValueError(f"base_width={base_width} does not fit this GPT: {err}") from None
    with torch.device("meta"):
        return GPT(config)


def parametrize(
    model: GPT,
    parametrization: str = "mup",
    *,
    base_width: int,
    lr: float,
    optimizer: str = "adam",
    **options,
) -> Parametrization:
    """Apply `parametrization` ("sp", "ntk", "mup", "mfp") to `model` in place.

    `base_width` is the n_embd at which every parametrization is the plain standard one (the
    width of the proxy model whose hyperparameters are tuned); `lr` is the learning rate there.
    Further `options` go to `ntk.ParametrizationConfig` (e.g. zero_query, zero_readout,
    std_prefactor, adam_eps). Build the optimizer from the result:
    `torch.optim.AdamW(p.param_groups)`.
    """
    config = ParametrizationConfig(
        parametrization=parametrization,
        optimizer=optimizer,
        lr_prefactor=lr,
        layers=gpt_layers(model),
        base_model=base_model(model, base_width),
        **options,
    )
    return Parametrization(model, config)
