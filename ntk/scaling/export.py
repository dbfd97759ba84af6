"""Save a parametrized model so that the plain model loads it, and re-apply the rules to train on.

`Parametrization` wraps each layer in a `ScaledModule` (output x n^-a) and sets muP's attention
scale sqrt(d0)/d inside the attention modules. Both change what a plain `state_dict` means:
names gain a `.module` segment (`fc.module.weight`), and the stored weights compute the model's
function only together with the multipliers and scales, which the plain architecture (or
Hugging Face's `from_pretrained`) does not have. This module gives the one export/import pair
that every save path goes through:

    export_state_dict(param)       plain names, the function folded into the weights
    import_state_dict(param, sd)   the inverse: a plain (folded) state dict into the wrapped model
    save_parametrized(param, dir)  weights (Hugging Face `save_pretrained`, or `model.pt`) plus
                                   `ntk_parametrization.json`, the rules, beside them
    load_parametrized(model, dir)  one call: re-apply the saved rules to a plain model holding
                                   the saved weights (e.g. from stock `from_pretrained`), unfold

Folding. A wrapped layer computes m (W x + b), the same function as the plain layer with
weight m W and bias m b (Linear, Conv, Embedding, HF Conv1D: the output is linear in W and b).
muP's attention scale: the module computes s' q.k where the stock module computes s q.k
(s = 1/sqrt(d)); scaling the rows that compute q (and their bias) by s'/s gives the stock module
the same logits. A tied matrix (embedding = readout) gets one multiplier per role (muP: 1 for
the embedding, 1/m for the readout, `ntk.scaling.tying`), which one stored matrix cannot carry;
the readout's multiplier is then folded into the norm right before the readout (its gain and
bias: m * (g * z + beta) = (m g) * z + m beta), which feeds only the readout in GPT-2, Llama,
GPT-NeoX and `ntk.lm`'s GPT (`readout_norm`, read from the model type when it is known).
Unfolding divides by the same factors: the round trip changes a weight by at most one rounding
of a multiplication (exact for power-of-two factors).

Why an export/import pair and not parameter names that never change. Replacing the wrapper
modules by `torch.nn.utils.parametrize` or forward hooks would keep the names, but not the
function: the plain model still lacks the multipliers, so a plain load would compute another
model (the HF report: logits off by 1.97), and a state dict that silently means two things is
worse than a renamed one. Folding is what makes stock loading exact; the wrapper mechanism, and
every stored number computed with it, stay as they are.

Not foldable, refused by name: depth rules' branch multipliers (`DepthConfig`) on a generic
branch (a whole sub-network, not one linear map), and a tied readout with a multiplier when no `readout_norm` is known.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ntk._checks import check_module
from ntk.scaling.config import ParametrizationConfig
from ntk.scaling.depth import DepthConfig
from ntk.scaling.parametrization import Parametrization
from ntk.scaling.scaled_module import ScaledModule

__all__ = [
    "RULES_FILE",
    "export_state_dict",
    "import_state_dict",
    "load_parametrized",
    "plain_name",
    "save_parametrized",
    "unfold",
]

RULES_FILE = "ntk_parametrization.json"
FORMAT = "ntk.parametrization/1"
# the norm whose output feeds only the readout, by Hugging Face model_type
READOUT_NORMS = {
    "gpt2": "transformer.ln_f",
    "llama": "model.norm",
    "granite": "model.norm",
    "gpt_neox": "gpt_neox.final_layer_norm",
}

# (parameter, index into it, factor): the folded weight is W[index] * factor
Fold = list[tuple[nn.Parameter, tuple[slice, ...], float]]


def plain_name(model: nn.Module, key: str) -> str:
    """`key` of `model`'s state dict without the `.module` segments of its `ScaledModule`s."""
    parts, out, module = key.split("."), [], model
    for i, part in enumerate(parts):
        if isinstance(module, ScaledModule) and part == "module":
            module = module.module
            continue
        out.append(part)
        module = module._modules.get(part) if module is not None else None
        if module is None:
            out.extend(parts[i + 1 :])
            break
    return ".".join(out)


def _readout_norm(model: nn.Module, readout_norm: str | None) -> str | None:
    if readout_norm is not None:
        return readout_norm
    return READOUT_NORMS.get(getattr(getattr(model, "config", None), "model_type", None))


def _folds(param: Parametrization, readout_norm: str | None) -> Fold:
    """Every factor that takes the wrapped model's weights to the plain model's (module doc)."""
    if param.depth is not None:
        raise ValueError(
            "the parametrization has depth rules (config.depth): a branch multiplier sits on a "
            "whole sub-network and cannot be folded into its weights in general; save with "
            "torch.save(model.state_dict()) and re-apply the same config"
        )
    model, folds = param.model, []
    per_param: dict[int, list[tuple[str, str, float]]] = {}
    for spec in param.layers:
        wrapper = model.get_submodule(spec.module_name)
        if not (isinstance(wrapper, ScaledModule) and wrapper.module is spec.module):
            continue  # a = 0 representative: nothing to fold
        per_param.setdefault(id(spec.weight), []).append((spec.name, spec.role, spec.multiplier))
        bias = spec.bias
        if bias is not None and spec.multiplier != 1.0:
            folds.append((bias, (slice(None),), spec.multiplier))
    weights = {id(s.weight): s.weight for s in param.layers}
    norm_factor = 1.0
    for pid, uses in per_param.items():
        # a tied matrix used unwrapped in some role has multiplier 1 there
        n_uses = sum(1 for s in param.layers if id(s.weight) == pid)
        factors = {m for _, _, m in uses} | ({1.0} if n_uses > len(uses) else set())
        if len(factors) == 1:
            if (m := factors.pop()) != 1.0:
                folds.append((weights[pid], (slice(None),), m))
            continue
        readouts = [(n, m) for n, r, m in uses if r == "readout"]
        rest = {m for _, r, m in uses if r != "readout"} | ({1.0} if n_uses > len(uses) else set())
        norm = _readout_norm(model, readout_norm)
        if len(readouts) != 1 or len(rest) != 1 or norm is None:
            listing = ", ".join(f"{n} ({r}) x{m:g}" for n, r, m in uses)
            raise ValueError(
                f"one shared matrix is used with different multipliers ({listing}) and no norm "
                "right before the readout is known to fold the readout's into: pass "
                "readout_norm='<name of that norm module>' or untie the layers"
            )
        (m_rest,) = rest
        if m_rest != 1.0:
            folds.append((weights[pid], (slice(None),), m_rest))
        norm_factor *= readouts[0][1] / m_rest
    if norm_factor != 1.0:
        module = model.get_submodule(_readout_norm(model, readout_norm))
        for p in module.parameters(recurse=False):
            folds.append((p, (slice(None),), norm_factor))
    for record, site in zip(param.attention, _sites(param), strict=True):
        factor = record["scale_after"] / record["scale_before"]
        if factor != 1.0:
            folds.extend((p, index, factor) for p, index in site.adapter.query(site.module))
    return folds


def _sites(param: Parametrization) -> list:
    from ntk.scaling.attention import attention_sites

    sites = {s.name: s for s in attention_sites(param.model)[0]}
    return [sites[r["name"]] for r in param.attention]


def _keys_by_param(model: nn.Module) -> dict[int, list[str]]:
    keys: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        keys.setdefault(id(p), []).append(plain_name(model, name))
    return keys


def export_state_dict(param: Parametrization, readout_norm: str | None = None) -> dict[str, Tensor]:
    """The parametrized model's state dict as the plain model's: plain names, multipliers and
    muP's attention scale folded into the weights (module docstring). Loads with
    `plain_model.load_state_dict(...)` (strict) and computes the same function."""
    _check_param(param)
    model = param.model
    state = {plain_name(model, k): v.detach().clone() for k, v in model.state_dict().items()}
    keys = _keys_by_param(model)
    for p, index, factor in _folds(param, readout_norm):
        for key in keys[id(p)]:
            state[key][index] *= factor
    return state


@torch.no_grad()
def unfold(param: Parametrization, readout_norm: str | None = None) -> None:
    """Divide the folded factors out of the parametrized model's weights, in place: a model
    that held plain weights (a pretrained checkpoint) computes again what it computed before
    it was parametrized, and trains on under the rules (`ntk.lm.hf.parametrize_pretrained`)."""
    _check_param(param)
    for p, index, factor in _folds(param, readout_norm):
        p[index] /= factor


def import_state_dict(
    param: Parametrization, state_dict: dict[str, Tensor], readout_norm: str | None = None
) -> None:
    """Load a plain model's state dict (e.g. from `export_state_dict`, or a plain model's own)
    into the parametrized model, dividing the folded factors back out: the wrapped model then
    computes what the plain model with `state_dict` computes."""
    _check_param(param)
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    model = param.model
    wrapped = {plain_name(model, k): k for k in model.state_dict()}
    unknown = sorted(set(state_dict) - set(wrapped))
    missing = sorted(set(wrapped) - set(state_dict))
    if unknown or missing:
        raise ValueError(
            f"state_dict does not match the model: unexpected keys {unknown[:5]}, missing keys "
            f"{missing[:5]}"
        )
    model.load_state_dict({wrapped[k]: v for k, v in state_dict.items()})
    unfold(param, readout_norm)


# ---- files --------------------------------------------------------------------------------


def _config_record(config: ParametrizationConfig) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "base_model":
            value = value is not None  # a module: the caller passes it again
        elif isinstance(value, DepthConfig):
            value = dataclasses.asdict(value)
        try:
            json.dumps(value)
        except TypeError as err:
            raise TypeError(
                f"ParametrizationConfig.{f.name} ({type(value).__name__}) cannot be saved as JSON"
            ) from err
        out[f.name] = value
    return out


def _write_json(path: Path, record: dict) -> None:
    """Atomically: a temporary file in the same folder, then os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)


def rules_record(param: Parametrization, readout_norm: str | None = None) -> dict[str, Any]:
    """What `load_parametrized` needs to re-apply `param`: the config and, to check the result,
    each layer's multiplier and lr and each attention module's scale."""
    return dict(
        format=FORMAT,
        config=_config_record(param.config),
        readout_norm=_readout_norm(param.model, readout_norm),
        layers=[dict(name=s.name, multiplier=s.multiplier, lr=s.lr) for s in param.layers],
        attention=[dict(name=r["name"], scale=r["scale_after"]) for r in param.attention],
    )


def save_parametrized(
    param: Parametrization, directory: str | os.PathLike, readout_norm: str | None = None
) -> Path:
    """Write the folded weights and the rules file into `directory`; returns the directory.

    A Hugging Face model (one with `save_pretrained`) is saved by its own `save_pretrained`,
    loadable with stock `from_pretrained`; any other model as `model.pt` (a plain state dict,
    written atomically), loadable with `model.load_state_dict(torch.load(...))`. Beside them,
    `ntk_parametrization.json` holds the rules for `load_parametrized`.
    """
    _check_param(param)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = rules_record(param, readout_norm)  # checks the config is savable before writing
    state = export_state_dict(param, readout_norm)
    if hasattr(param.model, "save_pretrained"):
        param.model.save_pretrained(directory, state_dict=state)
    else:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="model.pt", suffix=".tmp")
        os.close(fd)
        torch.save(state, tmp)
        os.replace(tmp, directory / "model.pt")
    _write_json(directory / RULES_FILE, record)
    return directory


def read_rules(path: str | os.PathLike) -> dict[str, Any]:
    """The rules file: `path` itself or `path/ntk_parametrization.json`."""
    path = Path(path)
    file = path / RULES_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no {RULES_FILE} at {path}: save with ntk.scaling.export.save_parametrized"
        )
    record = json.loads(file.read_text())
    if record.get("format") != FORMAT:
        raise ValueError(f"{file} is not an ntk rules file of format {FORMAT!r}")
    return record


def config_from_record(
    record: dict[str, Any], base_model: nn.Module | None = None
) -> ParametrizationConfig:
    """The saved `ParametrizationConfig`, ready to be re-applied to trained weights: no re-init,
    no zeroed queries (the weights are the trained ones)."""
    fields = dict(record["config"])
    if fields.pop("base_model"):
        if base_model is None:
            raise ValueError(
                "the parametrization was made with config.base_model: pass base_model= (the "
                "same architecture at the base width, e.g. built on the meta device)"
            )
        fields["base_model"] = check_module("base_model", base_model)
    elif base_model is not None:
        raise ValueError("base_model was given, but the saved parametrization used none")
    if fields.get("depth") is not None:
        fields["depth"] = DepthConfig(**fields["depth"])
    known = {f.name for f in dataclasses.fields(ParametrizationConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"the rules file has config keys this ntk does not know: {unknown}")
    return ParametrizationConfig(**{**fields, "reinit": False, "zero_query": False})


def load_parametrized(
    model: nn.Module, path: str | os.PathLike, base_model: nn.Module | None = None
) -> Parametrization:
    """Re-apply the rules saved beside the weights to `model`, which holds those (folded)
    weights, e.g. `GPT2LMHeadModel.from_pretrained(path)`; returns the `Parametrization` whose
    `param_groups` continue training (per-layer learning rates, multipliers, attention scale).

    The model's function is unchanged by the call (the folded factors are divided back out);
    the re-applied multipliers, learning rates and scales are checked against the saved ones.
    """
    check_module("model", model)
    record = read_rules(path)
    param = Parametrization(model, config_from_record(record, base_model))
    _check_same(param, record)
    unfold(param, record["readout_norm"])
    return param


def _check_same(param: Parametrization, record: dict[str, Any]) -> None:
    now = [(s.name, s.multiplier, s.lr) for s in param.layers]
    saved = [(r["name"], r["multiplier"], r["lr"]) for r in record["layers"]]
    scales = [r["scale_after"] for r in param.attention]
    saved_scales = [r["scale"] for r in record["attention"]]
    for (n, m, lr), (n0, m0, lr0) in zip(now, saved, strict=False):
        if n != n0 or abs(m - m0) > 1e-9 * abs(m0) or abs(lr - lr0) > 1e-9 * abs(lr0):
            raise ValueError(
                f"the re-applied rules differ from the saved ones at layer {n!r} (saved {n0!r}: "
                f"multiplier {m0:g}, lr {lr0:g}; now multiplier {m:g}, lr {lr:g}): is it the "
                "same architecture and base model?"
            )
    if len(now) != len(saved) or len(scales) != len(saved_scales):
        raise ValueError(
            f"the re-applied rules have {len(now)} layers and {len(scales)} attention modules, "
            f"the saved ones {len(saved)} and {len(saved_scales)}: not the same architecture"
        )
    for s, s0 in zip(scales, saved_scales, strict=True):
        if abs(s - s0) > 1e-9 * abs(s0):
            raise ValueError(f"re-applied attention scale {s:g} differs from the saved {s0:g}")


def _check_param(param: object) -> None:
    if not isinstance(param, Parametrization):
        raise TypeError(f"param must be an ntk.Parametrization, got {type(param).__name__}")
