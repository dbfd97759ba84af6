"""Save and load of parametrized models (`ntk.scaling.export`): a parametrized model's state dict
loads into the plain model and back; a parametrized Hugging Face GPT-2 (tied and untied) saved
with `save_parametrized` loads with stock `from_pretrained` and gives the same logits; one call
re-applies the rules and training continues as if never saved. Models nobody here wrote: HF
GPT-2 from small random configs, a CNN and torch's TransformerEncoder."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from ntk.scaling.depth import DepthConfig
from ntk.scaling.export import (
    RULES_FILE,
    export_state_dict,
    import_state_dict,
    load_parametrized,
    save_parametrized,
)
from ntk.scaling.parametrization import Parametrization, ParametrizationConfig

pytestmark = pytest.mark.usefixtures("single_thread")
hf_logging.set_verbosity_error()

VOCAB = 97
GPT2_LAYERS = {
    "transformer.w[tp]e": "embedding",
    "transformer.h.*.attn.c_*": "hidden",
    "transformer.h.*.mlp.c_*": "hidden",
    "lm_head": "readout",
}


def gpt2(tied: bool, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=16,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tied,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg)


def gpt2_param(model: GPT2LMHeadModel) -> Parametrization:
    # base width 16 (4 heads of 4): multipliers 1/4 on the readout, attention scale x 1/2
    cfg = ParametrizationConfig("mup", lr=1e-2, layers=GPT2_LAYERS, base_width=16, base_head_dim=4)
    return Parametrization(model, cfg)


def train(model: nn.Module, groups: list[dict], x: torch.Tensor, steps: int) -> None:
    opt = torch.optim.Adam(groups)
    for _ in range(steps):
        logits = model(x).logits if hasattr(model, "config") else model(x)
        loss = logits.float().pow(2).mean() if not hasattr(model, "config") else None
        if loss is None:
            loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


class CNN(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.mean((2, 3)))


class Encoder(nn.Module):
    """torch's TransformerEncoder between a linear embedding and a linear readout."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = nn.Linear(5, width)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.readout = nn.Linear(width, 3)

    def forward(self, x):
        return self.readout(self.encoder(self.embed(x)))


CNN_LAYERS = {"conv1": "embedding", "conv2": "hidden", "fc": "readout"}
ENCODER_LAYERS = {
    "embed": "embedding",
    "encoder.layers.*.self_attn": "hidden",
    "encoder.layers.*.linear*": "hidden",
    "readout": "readout",
}
SMALL = [
    (CNN, CNN_LAYERS, lambda: torch.randn(4, 3, 6, 6), {}),
    (Encoder, ENCODER_LAYERS, lambda: torch.randn(4, 7, 5), {"attention_scale": "keep"}),
]


@pytest.mark.parametrize(("cls", "layers", "data", "extra"), SMALL, ids=["cnn", "encoder"])
def test_state_dict_loads_into_the_plain_model_and_back(cls, layers, data, extra, tmp_path):
    torch.manual_seed(0)
    x = data()
    model = cls(64)
    param = Parametrization(
        model,
        ParametrizationConfig("mup", layers=layers, base_width=16, lr=1e-2, **extra),
    )
    train(model, param.param_groups, x, 3)
    assert any(".module." in k for k in model.state_dict())  # the wrappers rename...
    state = export_state_dict(param)
    assert not any(".module." in k for k in state)  # ...the export does not
    plain = cls(64)
    plain.load_state_dict(state)  # strict
    with torch.no_grad():
        y = model(x)
        torch.testing.assert_close(plain(x), y, rtol=1e-5, atol=1e-6)
        # the rival: the same weights without the multipliers folded in are another function
        raw = {k.replace(".module", ""): v for k, v in model.state_dict().items()}
        unfolded = cls(64)
        unfolded.load_state_dict(raw)
        assert (unfolded(x) - y).abs().max() > 1e-2 * y.abs().max()
    # and back: a fresh parametrized model takes the plain state dict
    torch.manual_seed(1)
    other = cls(64)
    param2 = Parametrization(
        other,
        ParametrizationConfig("mup", layers=layers, base_width=16, lr=1e-2, **extra),
    )
    import_state_dict(param2, plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other(x), y, rtol=1e-5, atol=1e-6)
    # files: model.pt + the rules, re-applied by one call, and training goes on identically
    save_parametrized(param, tmp_path)
    loaded = cls(64)
    loaded.load_state_dict(torch.load(tmp_path / "model.pt"))
    param3 = load_parametrized(loaded, tmp_path)
    assert [g["lr"] for g in param3.param_groups] == [g["lr"] for g in param.param_groups]
    train(model, param.param_groups, x, 2)
    train(loaded, param3.param_groups, x, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_hf_gpt2_saved_loads_with_stock_from_pretrained(tied, tmp_path):
    x = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    model = gpt2(tied)
    param = gpt2_param(model)
    assert (
        param.attention and param.attention[0]["scale_after"] != param.attention[0]["scale_before"]
    )
    train(model, param.param_groups, x, 3)
    with torch.no_grad():
        want = model(x).logits
    save_parametrized(param, tmp_path)
    assert (tmp_path / RULES_FILE).is_file()
    stock = AutoModelForCausalLM.from_pretrained(tmp_path)  # stock transformers, no ntk code
    assert type(stock) is GPT2LMHeadModel
    assert (stock.lm_head.weight is stock.transformer.wte.weight) == tied
    with torch.no_grad():
        got = stock(x).logits
    assert (got - want).abs().max() < 1e-5
    # continue training: one call re-applies the rules, the function and the lrs unchanged
    param2 = load_parametrized(stock, tmp_path)
    with torch.no_grad():
        assert (stock(x).logits - want).abs().max() < 1e-5
    lrs = {g["name"]: g["lr"] for g in param.param_groups}
    assert {g["name"]: g["lr"] for g in param2.param_groups} == lrs
    assert len(set(lrs.values())) > 2  # per-layer rates, not one global lr
    train(model, param.param_groups, x, 2)
    train(stock, param2.param_groups, x, 2)
    with torch.no_grad():
        assert (stock(x).logits - model(x).logits).abs().max() < 1e-4


def test_rules_file_is_small_and_names_the_config(tmp_path):
    param = gpt2_param(gpt2(tied=True))
    save_parametrized(param, tmp_path)
    record = json.loads((tmp_path / RULES_FILE).read_text())
    assert record["config"]["parametrization"] == "mup"
    assert record["readout_norm"] == "transformer.ln_f"
    assert (tmp_path / RULES_FILE).stat().st_size < 20_000


def test_base_model_must_be_passed_again(tmp_path):
    base = CNN(16)
    model = CNN(64)
    param = Parametrization(model, ParametrizationConfig("mup", layers=CNN_LAYERS, base_model=base))
    save_parametrized(param, tmp_path)
    plain = CNN(64)
    plain.load_state_dict(torch.load(tmp_path / "model.pt"))
    with pytest.raises(ValueError, match="base_model="):
        load_parametrized(plain, tmp_path)
    load_parametrized(plain, tmp_path, base_model=base)
    with pytest.raises(ValueError, match="re-applied rules differ"):
        load_parametrized(CNN(64), tmp_path, base_model=CNN(32))


class TiedMLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, width)
        self.hidden = nn.Linear(width, width)
        self.readout = nn.Linear(width, 11, bias=False)
        self.readout.weight = self.embed.weight

    def forward(self, x):
        return self.readout(torch.relu(self.hidden(self.embed(x))))


def test_refused_by_name():
    layers = {"embed": "embedding", "hidden": "hidden", "readout": "readout"}
    param = Parametrization(TiedMLP(32), ParametrizationConfig("mup", layers=layers, base_width=8))
    with pytest.raises(ValueError, match="readout_norm="):
        export_state_dict(param)  # no norm before the tied readout to fold its 1/4 into
    depth = ParametrizationConfig(
        "mup", layers=CNN_LAYERS, base_width=16, depth=DepthConfig("depth-mup", ["conv2"], 2, 1)
    )
    with pytest.raises(ValueError, match="depth rules"):
        export_state_dict(Parametrization(CNN(64), depth))
    with pytest.raises(TypeError, match="param must be"):
        export_state_dict(CNN(8))
    param = Parametrization(CNN(64), ParametrizationConfig("mup", layers=CNN_LAYERS, base_width=16))
    with pytest.raises(ValueError, match="missing keys"):
        import_state_dict(param, {"conv1.weight": torch.zeros(64, 3, 3, 3)})
