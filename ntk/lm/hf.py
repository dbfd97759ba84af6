"""Hugging Face both ways: the ntk.lm GPT as a stock `transformers` model, and pretrained HF
checkpoints under this project's parametrizations.

Export. Which `transformers` architecture computes exactly our GPT (`ntk.lm.model`)?

    ours                        GPT-NeoX                      Llama / Granite      GPT-2
    RoPE on the whole head      rotary, partial factor 1      RoPE                 learned wpe: no
    LayerNorm (gain, bias)      LayerNorm                     RMSNorm: no          LayerNorm
    MLP down(gelu(up x)), 4C    dense_4h_to_h(gelu(...)), 4C  gated SwiGLU: no     GELU (tanh): no
    pre-norm, sequential        use_parallel_residual=False   sequential           sequential

GPT-NeoX (`GPTNeoXForCausalLM`) is the one that matches every line, so that is the target;
Llama and Granite are refused by their norm (RMSNorm has no mean subtraction) and their gated
MLP, GPT-2 by its position table. What maps, exactly:
- muP's multipliers and attention scale are folded into the weights (`ntk.scaling.export`):
  the stock model runs at its own 1/sqrt(d) with no multipliers, and computes our function;
  so Granite's multiplier fields (embedding/residual/attention multipliers, logits_scaling)
  are not needed, and a tied readout's multiplier goes into the final norm's gain and bias;
- RoPE: ours rotates consecutive coordinate pairs (2i, 2i+1) by t theta_i, NeoX rotates
  (i, i + D/2) by the same t theta_i ("rotate_half"). Permuting each head's query and key rows
  (pair i -> coordinates i and i + D/2) turns one into the other, and q.k is unchanged by a
  permutation applied to both (the permutation Hugging Face's Llama conversion script uses);
- our q, k, v become NeoX's fused query_key_value, laid out head by head [q_h; k_h; v_h];
- without biases (GPTConfig.bias False) NeoX's norm and MLP biases are zeros (NeoX always has
  them), attention_bias=False.
Refused by name: depth rules' branch multipliers (not foldable in general, `export`).

Import. `gpt_from_neox` reads such a NeoX checkpoint back into our GPT (the inverse map);
`parametrize_pretrained` loads a local HF GPT-2, Llama or GPT-NeoX checkpoint directory
(`from_pretrained(..., local_files_only=True)`, no download) and applies one of our
parametrizations (muP, SP, ...) without changing its function: the weights are kept
(reinit=False) and the multipliers and attention scale the rules add are divided back out
(`ntk.scaling.export.unfold`), so training continues from the checkpoint with muP's per-layer
learning rates, read against the same architecture at `base_width`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ntk._checks import check_positive, check_positive_int
from ntk.lm import speedrun
from ntk.lm.model import GPT, GPTConfig
from ntk.scaling.config import ParametrizationConfig
from ntk.scaling.export import export_state_dict, unfold
from ntk.scaling.parametrization import Parametrization

__all__ = ["export_neox", "gpt_from_neox", "neox_config", "parametrize_pretrained"]


# ---- our GPT's weights by what they are ----------------------------------------------------
def gpt_tensors(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Our GPT's plain state dict -> one tensor per role, the names every converter reads:
    wte, ln_f.w/b, lm_head, and per block l: {l}.ln1.w/b, {l}.ln2.w/b, {l}.q/k/v/o/up/down.w/b.
    The one place that knows `ntk.lm.model`'s attribute names (update it with the model)."""
    C = config.n_embd
    zeros = torch.zeros(C, dtype=state["wte.weight"].dtype)
    out = {"wte": state["wte.weight"], "lm_head": state["lm_head.weight"]}
    out["ln_f.w"], out["ln_f.b"] = state["ln_f.weight"], state.get("ln_f.bias", zeros)
    for i in range(config.n_layer):
        p = f"blocks.{i}."
        for ln, name in (("ln1", "ln_1"), ("ln2", "ln_2")):
            out[f"{i}.{ln}.w"] = state[f"{p}{name}.weight"]
            out[f"{i}.{ln}.b"] = state.get(f"{p}{name}.bias", zeros)
        for short, name in [(x, f"attn.{x}") for x in "qkvo"] + [
            ("up", "mlp.up"),
            ("down", "mlp.down"),
        ]:
            weight = state[f"{p}{name}.weight"]
            out[f"{i}.{short}.w"] = weight
            out[f"{i}.{short}.b"] = state.get(f"{p}{name}.bias", torch.zeros(weight.shape[0]))
    return out


def gpt_state(tensors: dict[str, Tensor], model: GPT) -> dict[str, Tensor]:
    """The inverse of `gpt_tensors`: a state dict for `model` (biases only where it has them)."""
    state = {}
    for key in model.state_dict():
        parts = key.split(".")
        if parts[0] == "blocks":
            i, rest = parts[1], ".".join(parts[2:])
            short = {"ln_1": "ln1", "ln_2": "ln2", "attn.q": "q", "attn.k": "k", "attn.v": "v"}
            short |= {"attn.o": "o", "mlp.up": "up", "mlp.down": "down"}
            module, _, kind = rest.rpartition(".")
            state[key] = tensors[f"{i}.{short[module]}.{kind[0]}"]
        elif key == "wte.weight":
            state[key] = tensors["wte"]
        elif key == "lm_head.weight":
            state[key] = tensors["lm_head"]
        else:  # ln_f.weight / ln_f.bias
            state[key] = tensors[f"ln_f.{parts[1][0]}"]
    return state


# ---- RoPE layouts --------------------------------------------------------------------------
def _half_split(n_head: int, head_dim: int) -> Tensor:
    """Row order taking interleaved pairs (2i, 2i+1) to halves (i, i + D/2), per head."""
    within = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    return torch.cat([h * head_dim + within for h in range(n_head)])


# ---- export --------------------------------------------------------------------------------
def neox_config(config: GPTConfig) -> Any:
    """The `GPTNeoXConfig` of the same architecture (module docstring)."""
    from transformers import GPTNeoXConfig

    if speedrun.active_options(config):
        raise ValueError(
            "GPT-NeoX has no speedrun block: export a GPT without the GPTConfig options "
            f"{speedrun.active_options(config)}"
        )
    n_head, _ = config.heads
    return GPTNeoXConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.n_embd,
        num_hidden_layers=config.n_layer,
        num_attention_heads=n_head,
        intermediate_size=4 * config.n_embd,
        hidden_act="gelu",  # exact (erf) GELU, as F.gelu
        max_position_embeddings=config.block_size,
        layer_norm_eps=config.norm_eps,
        use_parallel_residual=False,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": float(config.rope_base),
            "partial_rotary_factor": 1.0,
        },
        attention_bias=config.bias,
        tie_word_embeddings=config.tie_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        attention_dropout=0.0,
        hidden_dropout=0.0,
    )


def neox_state(tensors: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Our tensors (`gpt_tensors`) as GPTNeoXForCausalLM's state dict."""
    n_head, head_dim = config.heads
    perm = _half_split(n_head, head_dim)
    out = {"gpt_neox.embed_in.weight": tensors["wte"], "lm_head.weight": tensors["lm_head"]}
    out["gpt_neox.final_layer_norm.weight"] = tensors["ln_f.w"]
    out["gpt_neox.final_layer_norm.bias"] = tensors["ln_f.b"]
    for i in range(config.n_layer):
        t, p = (lambda k, i=i: tensors[f"{i}.{k}"]), f"gpt_neox.layers.{i}."
        out[p + "input_layernorm.weight"], out[p + "input_layernorm.bias"] = t("ln1.w"), t("ln1.b")
        out[p + "post_attention_layernorm.weight"] = t("ln2.w")
        out[p + "post_attention_layernorm.bias"] = t("ln2.b")
        for kind in ("w", "b"):
            q, k, v = t(f"q.{kind}")[perm], t(f"k.{kind}")[perm], t(f"v.{kind}")
            # (3C, ...) laid out head by head: [q_h; k_h; v_h]
            blocks = [x.reshape(n_head, head_dim, *x.shape[1:]) for x in (q, k, v)]
            fused = torch.cat(blocks, dim=1).reshape(3 * config.n_embd, *q.shape[1:])
            name = "weight" if kind == "w" else "bias"
            if kind == "w" or config.bias:
                out[p + f"attention.query_key_value.{name}"] = fused
                out[p + f"attention.dense.{name}"] = t(f"o.{kind}")
            out[p + f"mlp.dense_h_to_4h.{name}"] = t(f"up.{kind}")
            out[p + f"mlp.dense_4h_to_h.{name}"] = t(f"down.{kind}")
    return out


def export_neox(model: GPT, param: Parametrization | None, directory: str | os.PathLike) -> Path:
    """Save `model` (parametrized by `param`, or plain with None) as a GPT-NeoX checkpoint that
    stock `transformers` loads (`AutoModelForCausalLM.from_pretrained(directory)`) and that
    computes our logits; returns the directory."""
    from transformers import GPTNeoXForCausalLM

    if not isinstance(model, GPT):
        raise TypeError(f"model must be an ntk.lm.GPT, got {type(model).__name__}")
    config = model.config
    if param is None:
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        if param.model is not model:
            raise ValueError("param must be the Parametrization of this model")
        state = export_state_dict(param, readout_norm="ln_f")
    state = {k: v.float().cpu() for k, v in state.items()}
    hf = GPTNeoXForCausalLM(neox_config(config))
    hf.load_state_dict(neox_state(gpt_tensors(state, config), config), strict=True)
    directory = Path(directory)
    hf.save_pretrained(directory)
    return directory


# ---- import --------------------------------------------------------------------------------
def gpt_from_neox(directory: str | os.PathLike) -> GPT:
    """Our GPT with the weights of a local GPT-NeoX checkpoint of the same architecture (one
    written by `export_neox`, or any NeoX model that fits: sequential residual, full rotary,
    exact GELU, 4x MLP); anything else is refused, naming the config field."""
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.from_pretrained(directory, local_files_only=True)
    _check_neox(hf_config)
    C, H = hf_config.hidden_size, hf_config.num_attention_heads
    config = GPTConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.max_position_embeddings,
        n_layer=hf_config.num_hidden_layers,
        n_embd=C,
        n_head=H,
        tie_embeddings=bool(hf_config.tie_word_embeddings),
        bias=bool(hf_config.attention_bias),
        rope_base=float(hf_config.rope_parameters["rope_theta"]),
        norm_eps=hf_config.layer_norm_eps,
    )
    hf = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    state = {k: v.detach().float() for k, v in hf.state_dict().items()}
    n_head, head_dim = config.heads
    inverse = torch.argsort(_half_split(n_head, head_dim))
    tensors = {"wte": state["gpt_neox.embed_in.weight"], "lm_head": state["lm_head.weight"]}
    tensors["ln_f.w"] = state["gpt_neox.final_layer_norm.weight"]
    tensors["ln_f.b"] = state["gpt_neox.final_layer_norm.bias"]
    for i in range(config.n_layer):
        p = f"gpt_neox.layers.{i}."
        tensors[f"{i}.ln1.w"] = state[p + "input_layernorm.weight"]
        tensors[f"{i}.ln1.b"] = state[p + "input_layernorm.bias"]
        tensors[f"{i}.ln2.w"] = state[p + "post_attention_layernorm.weight"]
        tensors[f"{i}.ln2.b"] = state[p + "post_attention_layernorm.bias"]
        for kind, name in (("w", "weight"), ("b", "bias")):
            fused = state.get(p + f"attention.query_key_value.{name}")
            if fused is None:
                fused = torch.zeros(3 * C)
            blocks = fused.reshape(n_head, 3, head_dim, *fused.shape[1:])
            for j, short in enumerate("qkv"):
                x = blocks[:, j].reshape(C, *fused.shape[1:])
                tensors[f"{i}.{short}.{kind}"] = x[inverse] if short != "v" else x
            tensors[f"{i}.o.{kind}"] = state.get(p + f"attention.dense.{name}", torch.zeros(C))
            tensors[f"{i}.up.{kind}"] = state[p + f"mlp.dense_h_to_4h.{name}"]
            tensors[f"{i}.down.{kind}"] = state[p + f"mlp.dense_4h_to_h.{name}"]
    if not config.bias:
        nonzero = [k for k, v in tensors.items() if k.endswith(".b") and v.abs().max() > 0]
        if nonzero:
            raise ValueError(
                f"the checkpoint has attention_bias=False but nonzero biases {nonzero[:3]}: our "
                "GPT has biases everywhere or nowhere (GPTConfig.bias)"
            )
    model = GPT(config)
    model.load_state_dict(gpt_state(tensors, model))
    return model


def _check_neox(hf_config: Any) -> None:
    kind = getattr(hf_config, "model_type", None)
    if kind != "gpt_neox":
        raise ValueError(
            f"checkpoint model_type is {kind!r}; our GPT reads GPT-NeoX (same norm, MLP and "
            "rotary positions). For GPT-2 / Llama checkpoints use parametrize_pretrained"
        )
    checks = {
        "use_parallel_residual": (hf_config.use_parallel_residual, False),
        "hidden_act": (hf_config.hidden_act, "gelu"),
        "intermediate_size": (hf_config.intermediate_size, 4 * hf_config.hidden_size),
        "rope_parameters.partial_rotary_factor": (
            hf_config.rope_parameters.get("partial_rotary_factor", 1.0),
            1.0,
        ),
        "rope_parameters.rope_type": (hf_config.rope_parameters.get("rope_type"), "default"),
    }
    for name, (got, want) in checks.items():
        if got != want:
            raise ValueError(f"GPT-NeoX config {name}={got!r}: our GPT needs {want!r}")


# ---- pretrained HF checkpoints under our parametrizations ----------------------------------
# per model_type: layers by role, the width fields a base model changes, the readout's norm
HF_LAYERS = {
    "gpt2": {
        "transformer.w[tp]e": "embedding",
        "transformer.h.*.attn.c_*": "hidden",
        "transformer.h.*.mlp.c_*": "hidden",
        "lm_head": "readout",
    },
    "llama": {
        "model.embed_tokens": "embedding",
        "model.layers.*.self_attn.[qkvo]_proj": "hidden",
        "model.layers.*.mlp.*_proj": "hidden",
        "lm_head": "readout",
    },
    "gpt_neox": {
        "gpt_neox.embed_in": "embedding",
        "gpt_neox.layers.*.attention.query_key_value": "hidden",
        "gpt_neox.layers.*.attention.dense": "hidden",
        "gpt_neox.layers.*.mlp.dense_*": "hidden",
        "lm_head": "readout",
    },
}


def _base_config(config: Any, base_width: int) -> Any:
    """The HF config at width base_width: heads keep their number and narrow (d0 = base /
    heads), the MLP keeps its ratio to the width."""
    kind, d = config.model_type, config.to_dict()
    if kind == "gpt2":
        inner = config.n_inner
        d.update(n_embd=base_width)
        if inner is not None:
            d.update(n_inner=inner * base_width // config.n_embd)
        width, heads = config.n_embd, config.n_head
    else:
        width, heads = config.hidden_size, config.num_attention_heads
        d.update(
            hidden_size=base_width,
            intermediate_size=config.intermediate_size * base_width // width,
        )
        if kind == "llama":
            d.update(head_dim=base_width // heads)
    if base_width % heads:
        raise ValueError(f"base_width={base_width} is not divisible by the {heads} heads")
    return type(config).from_dict(d)


def parametrize_pretrained(
    directory: str | os.PathLike,
    parametrization: str = "mup",
    *,
    base_width: int,
    lr: float,
    **options: Any,
) -> tuple[nn.Module, Parametrization]:
    """(model, param): the local Hugging Face checkpoint at `directory` (GPT-2, Llama or
    GPT-NeoX; no download) under `parametrization`, computing the checkpoint's function
    (module docstring). `base_width` is the width at which the rule is plain SP, `lr` the
    learning rate there; further `options` go to `ParametrizationConfig`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    check_positive_int("base_width", base_width)
    check_positive("lr", lr)
    hf_config = AutoConfig.from_pretrained(directory, local_files_only=True)
    kind = getattr(hf_config, "model_type", None)
    if kind not in HF_LAYERS:
        raise ValueError(
            f"checkpoint model_type {kind!r} has no layer map; known: {sorted(HF_LAYERS)} "
            "(for another model use ntk.Parametrization with your own config.layers and "
            "ntk.scaling.export.unfold)"
        )
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(_base_config(hf_config, base_width))
    fields = {f.name for f in dataclasses.fields(ParametrizationConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TypeError(f"unknown ParametrizationConfig options {unknown}")
    config = ParametrizationConfig(
        parametrization,
        lr=lr,
        layers=HF_LAYERS[kind],
        base_model=base,
        **{**options, "reinit": False, "zero_query": False},
    )
    param = Parametrization(model, config)
    unfold(param)
    return model, param
