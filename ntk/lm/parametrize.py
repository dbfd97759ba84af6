"""The GPT's layers by abc role, and its parametrization through the project's abc engine.

Yang et al. 2022 ("Tensor Programs V", arXiv:2203.03466) treat a transformer like an MLP:
the token embedding maps a finite-size input (the vocabulary) to the width, it is an
"embedding" layer; every width x width matrix (queries, keys, values, attention output, both
MLP matrices) is "hidden"; the unembedding is the "readout". Norm gains and biases are
vector-like: they stay in the engine's rest group at the base learning rate. The rules
themselves (init std n^-b, multiplier n^-a, learning rate n^-c per role, muP's attention
scale sqrt(d0)/d, tied embeddings, zero-initialized queries and readout) live in one place,
`ntk.Parametrization`; this module only names the layers, builds the base model, and adds
two things an optimizer needs around the engine:

SP with one global learning rate. The engine's "sp" trains each role at its largest stable
Adam learning rate (Everett et al. 2024, arXiv:2407.05872: hidden and readout lr ~ 1/n). SP
as it is usually run, and as the muTransfer experiments mean it, is the standard init with
ONE learning rate for every parameter: custom exponents a = 0, b = sp's, c = 0
(`parametrize(..., "sp", global_lr=True)`).

Weight decay. AdamW's decoupled decay (Loshchilov & Hutter 2019, arXiv:1711.05101) shrinks
each weight by the factor 1 - lr_g wd_g per step. Under muP a hidden matrix's lr_g falls like
1/m (m = n_embd / base_width); with one wd the decay per step, and the timescale
1 / (lr_g wd_g) over which AdamW averages past updates, would change with the width, and at
large width decay would vanish. `optimizer_groups` keeps lr_g wd_g = lr wd in every group, at
every width ("independent" weight decay: Wortsman et al. 2023, arXiv:2309.14322; Wang &
Aitchison 2024, arXiv:2405.13698, who show that the timescale 1 / (lr wd) is what must stay
fixed). Only weight matrices decay; norm gains and biases do not (as in nanoGPT).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ntk import Parametrization, ParametrizationConfig
from ntk._checks import check_bool, check_nonnegative, check_parametrization, check_positive_int
from ntk.lm.model import GPT
from ntk.scaling.abc_rules import AB_EXPONENTS, PARAMETRIZATIONS, ROLES
from ntk.scaling.base_shapes import matching


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


def global_lr_exponents(model: GPT) -> dict[str, list[float]]:
    """Custom exponents of SP with one learning rate: a = 0, b = sp's (embedding 0, others
    1/2), c = 0; one value per weight matrix, in module order (the engine's table rows)."""
    layers = gpt_layers(model)
    roles = []
    for name, _ in model.named_modules():
        hits = matching(layers, name)
        if hits:
            roles.append(layers[hits[0]])
    b = [AB_EXPONENTS["sp"][role][1] for role in roles]
    return dict(a=[0.0] * len(roles), b=b, c=[0.0] * len(roles))


def parametrize(
    model: GPT,
    parametrization: str | None = "mup",
    *,
    base_width: int,
    lr: float,
    optimizer: str = "adam",
    global_lr: bool = False,
    **options,
) -> Parametrization:
    """Apply `parametrization` ("sp", "ntk", "mup", "mfp", or None with custom exponents
    a, b, c in `options`) to `model` in place.

    `base_width` is the n_embd at which every parametrization is the plain standard one (the
    width of the proxy model whose hyperparameters are tuned); `lr` is the learning rate there.
    `global_lr=True` (with "sp" only) trains every parameter at `lr` at every width: SP as
    usually run (module docstring). muP zero-initializes the query and the readout, as Tensor
    Programs V recommends (Yang et al. 2022; the `mup` package's query_zero_init and
    readout_zero_init), unless `zero_query` / `zero_readout` say
    otherwise (a tied readout is never zeroed: it is the embedding). Further `options` go to
    `ntk.ParametrizationConfig` (e.g. std_prefactor, adam_eps, attention_scale). Build the
    optimizer from the result: `torch.optim.AdamW(optimizer_groups(p, weight_decay))`.
    """
    name = None  # custom exponents: options carry a, b, c (the engine checks them)
    if parametrization is not None:
        name = check_parametrization("parametrization", parametrization, PARAMETRIZATIONS)
    if check_bool("global_lr", global_lr):
        if name != "sp":
            raise ValueError(
                f"global_lr=True is SP's single learning rate; it does not apply to {name!r} "
                "(whose per-layer learning rates are what makes it that parametrization)"
            )
        name, options = None, {**global_lr_exponents(model), "attention_scale": "keep", **options}
    elif name == "mup":
        options.setdefault("zero_query", True)
        options.setdefault("zero_readout", not model.config.tie_embeddings)
    config = ParametrizationConfig(
        parametrization=name,
        optimizer=optimizer,
        lr_prefactor=lr,
        layers=gpt_layers(model),
        base_model=base_model(model, base_width),
        **options,
    )
    return Parametrization(model, config)


def optimizer_groups(param: Parametrization, weight_decay: float = 0.0) -> list[dict]:
    """`param.param_groups` with muP's weight decay: lr_g wd_g = lr weight_decay per matrix.

    For torch's AdamW (decoupled decay p <- p (1 - lr_g wd_g)): every weight-matrix group g
    gets wd_g = weight_decay * lr / lr_g, with lr = `param.config.lr_prefactor`, so the decay
    per step is the same at every width (module docstring); biases and the rest group (norm
    gains) get 0. A learning-rate schedule that scales every group's lr alike scales the decay
    with it, as in AdamW. At the base width this is plain AdamW(weight_decay) on the matrices.
    """
    if not isinstance(param, Parametrization):
        raise TypeError(f"param must be an ntk.Parametrization, got {type(param).__name__}")
    check_nonnegative("weight_decay", weight_decay)
    lr = param.config.lr_prefactor
    groups = param.param_groups
    for group in groups:
        matrix = group.get("role") in ROLES
        group["weight_decay"] = weight_decay * lr / group["lr"] if matrix else 0.0
    return groups
