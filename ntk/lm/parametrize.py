"""The GPT's layers by abc role, and its parametrization through the project's abc engine.

Yang et al. 2022 ("Tensor Programs V", arXiv:2203.03466) treat a transformer like an MLP:
the token embedding maps a finite-size input (the vocabulary) to the width, it is an
"embedding" layer; every width x width matrix (queries, keys, values, attention output, both
MLP matrices) is "hidden"; the unembedding is the "readout". Norm gains and biases are
vector-like: they stay in the engine's rest group at the base learning rate. The rules
themselves (init std n^-b, multiplier n^-a, learning rate n^-c per role, muP's attention
scale sqrt(d0)/d, tied embeddings, zero-initialized queries and readout) live in one place,
`ntk.Parametrization`; this module only names the layers, builds the base model, and holds
the one GPT recipe (`gpt_recipe`: model, parametrization and optimizer groups) that the YAML
trainer, the learning-rate sweeps and the chapters all build their GPTs with.

SP with one global learning rate. The engine's "sp" with its default lr_rule "abc" (per-layer
SP) trains each role at its largest stable Adam learning rate (Everett et al. 2024,
arXiv:2407.05872: hidden and readout lr ~ 1/n). SP as it is usually run, and as the
muTransfer experiments mean it, is global-lr SP: the standard init with ONE learning rate for
every parameter, the engine's lr_rule "global" (a, b of the rule, c = 0:
`parametrize(..., "sp", lr_rule="global")`).

The speedrun options (`ntk.lm.speedrun`, which derives each rule): value-embedding tables are
"embedding" layers like wte; the scalar gates (value mix, x0 mix, U-Net skips) have no width
dimension and stay in the rest group at the base learning rate, as norm gains do; QK-norm and
the gain-free RMSNorm have no weights; muP's attention scale sqrt(d0)/d stays right under
QK-norm; the logit soft-cap acts on the wrapped readout's output, multiplier included.

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
from typing import NamedTuple

import torch

from ntk._checks import check_nonnegative, check_parametrization, check_positive_int
from ntk.lm import mla, moe, speedrun
from ntk.lm.model import GPT, LAYERS, GPTConfig
from ntk.registry import WIDTH_RULES
from ntk.scaling.abc_rules import ROLES
from ntk.scaling.config import ParametrizationConfig
from ntk.scaling.parametrization import Parametrization


def gpt_layers(model: GPT) -> dict[str, str]:
    """Glob pattern on module names -> abc role, for `ParametrizationConfig.layers`: the plain
    block's map (`ntk.lm.model.LAYERS`) with the rows of each option the model has, each kept
    as data beside its module (`ntk.lm.mla`, `ntk.lm.moe`, `ntk.lm.speedrun`)."""
    if not isinstance(model, GPT):
        raise TypeError(f"model must be an ntk.lm.GPT, got {type(model).__name__}")
    cfg, layers = model.config, dict(LAYERS)
    if cfg.mla_rank:  # latent attention replaces q, k, v
        layers = {k: v for k, v in layers.items() if k[-1] not in "qkv" or ".attn." not in k}
        layers |= mla.LAYERS
    if cfg.moe_experts:  # experts and a router replace the dense MLP
        layers = {k: v for k, v in layers.items() if ".mlp." not in k}
        layers |= moe.LAYERS
    if cfg.value_embeds:
        layers |= speedrun.LAYERS
    layers["lm_head"] = layers.pop("lm_head")  # listed last, as the model's last layer
    return layers


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
    parametrization: str | None = "mup",
    *,
    base_width: int,
    lr: float,
    optimizer: str = "adam",
    lr_rule: str = "abc",
    **options,
) -> Parametrization:
    """Apply `parametrization` ("sp", "ntk", "mup", "mfp", or None with custom exponents
    a, b, c in `options`) to `model` in place.

    `base_width` is the n_embd at which every parametrization is the plain standard one (the
    width of the proxy model whose hyperparameters are tuned); `lr` is the learning rate there.
    `lr_rule="global"` trains every parameter at `lr` at every width (with "sp": SP as usually
    run, module docstring; with "mup": muP's init and multipliers, one lr). muP zero-initializes the query and the readout, as Tensor
    Programs V recommends (Yang et al. 2022; the `mup` package's query_zero_init and
    readout_zero_init), unless `zero_query` / `zero_readout` say
    otherwise (a tied readout is never zeroed: it is the embedding). Further `options` go to
    `ntk.ParametrizationConfig` (e.g. std_prefactor, adam_eps, attention_scale). Build the
    optimizer from the result: `torch.optim.AdamW(optimizer_groups(p, weight_decay))`.
    """
    name = None  # custom exponents: options carry a, b, c (the engine checks them)
    if parametrization is not None:
        name = check_parametrization("parametrization", parametrization, WIDTH_RULES)
    if name == "mup":
        options.setdefault("zero_query", True)
        # muP: the LM head alone (an MoE router, also a readout, must not start at 0)
        options.setdefault("zero_readout", [] if model.config.tie_embeddings else ["lm_head"])
    if model.config.moe_experts and options.get("zero_readout") is True:
        raise ValueError(
            "zero_readout=True would zero the MoE routers too (readouts): all logits equal, "
            "top-k would send every token to the same experts; pass zero_readout=['lm_head']"
        )
    config = ParametrizationConfig(
        parametrization=name,
        optimizer=optimizer,
        lr_rule=lr_rule,
        lr=lr,
        layers=gpt_layers(model),
        base_model=base_model(model, base_width),
        **options,
    )
    return Parametrization(model, config)


def optimizer_groups(param: Parametrization, weight_decay: float = 0.0) -> list[dict]:
    """`param.param_groups` with muP's weight decay: lr_g wd_g = lr weight_decay per matrix.

    For torch's AdamW (decoupled decay p <- p (1 - lr_g wd_g)): every weight-matrix group g
    gets wd_g = weight_decay * lr / lr_g, with lr = `param.config.lr`, so the decay
    per step is the same at every width (module docstring); biases and the rest group (norm
    gains) get 0. A learning-rate schedule that scales every group's lr alike scales the decay
    with it, as in AdamW. At the base width this is plain AdamW(weight_decay) on the matrices.
    """
    if not isinstance(param, Parametrization):
        raise TypeError(f"param must be an ntk.Parametrization, got {type(param).__name__}")
    check_nonnegative("weight_decay", weight_decay)
    lr = param.config.lr
    groups = param.param_groups
    for group in groups:
        matrix = group.get("role") in ROLES
        group["weight_decay"] = weight_decay * lr / group["lr"] if matrix else 0.0
    return groups


class GPTRecipe(NamedTuple):
    """A GPT, its parametrization and the optimizer groups to train it with."""

    model: GPT
    param: Parametrization
    groups: list[dict]


def gpt_recipe(
    config: GPTConfig,
    parametrization: str | None = "mup",
    *,
    weight_decay: float = 0.0,
    seed: int | None = None,
    **options,
) -> GPTRecipe:
    """The one way a GPT is built for training: model, parametrization, optimizer groups.

    Seeds torch's global generator with `seed` (None: uses its current state), builds
    `GPT(config)`, applies `parametrize(model, parametrization, **options)` (base_width and lr
    required; lr_rule, zero_query, depth, ... as there) and `optimizer_groups(param,
    weight_decay)` (muP's weight decay). Build the optimizer from `groups`, e.g.
    `torch.optim.AdamW(recipe.groups, betas=...)`; with weight_decay 0,
    `torch.optim.Adam(recipe.groups)` is the same update. With optimizer="muon" (options
    muon_rule, muon_lr) `ntk.scaling.muon.build_optimizer(recipe.groups)` builds Muon for the
    hidden matrices and AdamW for the rest, as one optimizer.
    """
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be an ntk.lm.GPTConfig, got {type(config).__name__}")
    check_nonnegative("weight_decay", weight_decay)  # before the model draws from the RNG
    if seed is not None:
        torch.manual_seed(seed)
    model = GPT(config)
    param = parametrize(model, parametrization, **options)
    return GPTRecipe(model, param, optimizer_groups(param, weight_decay))
