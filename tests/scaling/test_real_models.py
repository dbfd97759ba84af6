"""`Parametrization` and `SpectralMonitor` on models nobody here wrote: Hugging Face GPT-2 (tied
and untied), BERT and ViT built from small configs (random init, no download), torch's LSTM and
TransformerEncoder. Each test re-runs a failure once measured on these models (silently
skipped Conv1D layers, a tied matrix re-initialized by its readout role, 4n -> n learning rates,
Conv1D read transposed by the monitor, unmonitored in_proj/LSTM weights) and checks the numbers
the rules predict."""

from __future__ import annotations

import math

import mup
import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    ViTConfig,
    ViTForImageClassification,
)
from transformers.utils import logging as hf_logging

from ntk.scaling.parametrization import Parametrization, ParametrizationConfig
from ntk.scaling.spectral import SpectralMonitor

pytestmark = pytest.mark.usefixtures("single_thread")
hf_logging.set_verbosity_error()  # tiny vocabularies: GPT-2's default token ids fall outside

BASE, VOCAB, LR = 64, 101, 0.01
GPT2_LAYERS = {
    "transformer.w[tp]e": "embedding",
    "transformer.h.*.attn.c_*": "hidden",
    "transformer.h.*.mlp.c_*": "hidden",
    "lm_head": "readout",
}


def gpt2(width: int, tied: bool = True) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=2, n_embd=width, n_head=4, vocab_size=VOCAB, n_positions=16,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tied,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg)


def mup_config(**kw) -> ParametrizationConfig:
    # n_head = 4 at every width: heads widen, d0 = BASE / 4
    return ParametrizationConfig("mup", lr=LR, base_width=BASE, base_head_dim=BASE // 4, **kw)


def groups_by_name(param: Parametrization) -> dict[str, dict]:
    return {g["name"]: g for g in param.param_groups}


def std_close(p: torch.Tensor, std: float) -> bool:
    return abs(p.std().item() / std - 1) < 5 * (2 * p.numel()) ** -0.5


def test_gpt2_untied_conv1d_reinitialized_with_own_bias_groups():
    tokens = torch.randint(0, VOCAB, (2, 8))
    for width in (64, 128, 256):
        model = gpt2(width, tied=False)
        param = Parametrization(model, mup_config(layers=GPT2_LAYERS))
        table = param.table()
        assert not table.drop(columns="bias_lr").isna().any().any()
        groups = groups_by_name(param)
        r = width / BASE
        for spec in param.layers:
            if spec.kind != "Conv1D":
                continue
            fan_in = 4 * width if spec.name.endswith("mlp.c_proj") else width
            assert (spec.n, spec.n0) == (fan_in, fan_in / r), spec.name
            assert spec.init_std == pytest.approx(fan_in**-0.5)  # muP hidden: SP std, b = 1/2
            assert std_close(spec.weight, spec.init_std), spec.name  # not GPT-2's 0.02
            assert groups[spec.name]["lr"] == pytest.approx(LR / r)  # 4n -> n included
            bias = groups[f"{spec.name}.bias"]  # the bias in its own group (a = 0: lr)
            assert bias["params"] == [spec.bias] and bias["lr"] == LR
            assert torch.all(spec.bias == 0)
        # muP's attention scale sqrt(d0) / d, read by GPT-2's SDPA forward
        head_dim = width // 4
        assert model.transformer.h[0].attn.scaling == pytest.approx(math.sqrt(BASE // 4) / head_dim)
        logits = model(tokens).logits
        if width > BASE:  # the scale is used: resetting it to 1/sqrt(d) changes the output
            for block in model.transformer.h:
                block.attn.scaling = head_dim**-0.5
            assert not torch.allclose(model(tokens).logits, logits)


def test_gpt2_tied_one_matrix_embedding_init_and_lr_readout_multiplier():
    for width in (64, 256):
        model = gpt2(width, tied=True)
        cfg = mup_config(layers=GPT2_LAYERS, base_std={"transformer.w[tp]e": 0.02})
        param = Parametrization(model, cfg)
        wte = model.transformer.wte.weight
        assert model.lm_head.weight is wte  # still one tensor
        spec = {s.name: s for s in param.layers}
        # one matrix: b = 0 and c = 0 (the embedding's), the readout's multiplier n0 / n
        assert spec["transformer.wte"].init_std == spec["lm_head"].init_std == 0.02
        assert std_close(wte, 0.02)
        assert spec["lm_head"].multiplier == pytest.approx(BASE / width)
        assert spec["transformer.wte"].multiplier == 1.0
        (group,) = [g for g in param.param_groups if any(p is wte for p in g["params"])]
        assert group["lr"] == LR and group["tied"] == ["lm_head"]
        # the untied position table follows the embedding rule (Everett form)
        assert spec["transformer.wpe"].init_std == pytest.approx(0.02 * (width / BASE) ** -0.5)
        assert model(torch.randint(0, VOCAB, (2, 8))).logits.shape == (2, 8, VOCAB)
    # the measured failure: the readout alone listed would re-initialize the shared matrix
    with pytest.raises(ValueError, match=r"'lm_head'.*shared with transformer.wte.weight"):
        Parametrization(gpt2(64), mup_config(layers={"lm_head": "readout"}))
    with pytest.raises(ValueError, match=r"share one weight.*Untie"):
        Parametrization(gpt2(64), ParametrizationConfig("sp", layers=GPT2_LAYERS, base_width=64))


def test_gpt2_base_model_on_the_meta_device_gives_the_base_width_rules():
    with torch.device("meta"):
        base = gpt2(BASE)  # shapes only
    tables = []
    for cfg in (
        mup_config(layers=GPT2_LAYERS),
        ParametrizationConfig("mup", lr=LR, layers=GPT2_LAYERS, base_model=base),
    ):
        param = Parametrization(gpt2(256), cfg)
        tables.append((param.table(), [r["scale_after"] for r in param.attention]))
    assert tables[0][0].equals(tables[1][0]) and tables[0][1] == tables[1][1]


def test_gpt2_zero_query_zeroes_the_query_columns_of_c_attn():
    model = gpt2(128, tied=False)
    param = Parametrization(model, mup_config(layers=GPT2_LAYERS, zero_query=True))
    attn = model.transformer.h[1].attn.c_attn  # Conv1D stored (in, 3E): columns q | k | v
    assert torch.all(attn.weight[:, :128] == 0) and torch.all(attn.bias[:128] == 0)
    assert attn.weight[:, 128:].abs().min() > 0
    note = param.table().set_index("name").loc["transformer.h.1.attn.c_attn", "note"]
    assert note == "query block zero-initialized"


def test_gpt2_sp_and_mup_coincide_at_the_base_width():
    tokens = torch.randint(0, VOCAB, (2, 8))
    runs = {}
    for name in ("sp", "mup"):
        model = gpt2(BASE, tied=False)
        cfg = ParametrizationConfig(name, layers=GPT2_LAYERS, base_width=BASE, lr=LR)
        param = Parametrization(model, cfg)
        assert {g["lr"] for g in param.param_groups} == {LR}
        runs[name] = (model.state_dict(), model(tokens).logits)
    for key, value in runs["sp"][0].items():
        assert torch.equal(value, runs["mup"][0][key]), key
    assert torch.equal(runs["sp"][1], runs["mup"][1])


BERT_LAYERS = {
    "bert.embeddings.*_embeddings": "embedding",
    "bert.encoder.layer.*.attention.self.[qkv]*": "hidden",
    "bert.encoder.layer.*.dense": "hidden",
    "cls.predictions.transform.dense": "hidden",
    "cls.predictions.decoder": "readout",
}


def test_bert_masked_lm_tied_decoder_and_attention_scale():
    width = 128
    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(
            num_hidden_layers=2, hidden_size=width, num_attention_heads=4,
            intermediate_size=4 * width, vocab_size=VOCAB, max_position_embeddings=16,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
    )  # fmt: skip
    param = Parametrization(model, mup_config(layers=BERT_LAYERS))
    spec = {s.name: s for s in param.layers}
    words = "bert.embeddings.word_embeddings"
    assert spec["cls.predictions.decoder"].tied == (words,)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert spec["bert.encoder.layer.0.output.dense"].n == 4 * width  # 4n -> n
    assert spec["bert.encoder.layer.0.output.dense"].lr == pytest.approx(LR * BASE / width)
    groups = groups_by_name(param)
    # the decoder's bias (BERT's cls.predictions.bias) is scaled by the readout multiplier n0/n,
    # so its lr grows as n / n0 (Adam, c = -a): the same effective update at every width
    assert groups["cls.predictions.decoder.bias"]["lr"] == pytest.approx(LR * width / BASE)
    ids = [id(p) for g in param.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    attn = model.bert.encoder.layer[1].attention.self
    assert attn.scaling == pytest.approx(math.sqrt(BASE // 4) / (width // 4))
    assert model(torch.randint(0, VOCAB, (2, 8))).logits.shape == (2, 8, VOCAB)


def test_vit_patch_embedding_and_classifier():
    width, patch = 128, 4
    torch.manual_seed(0)
    model = ViTForImageClassification(
        ViTConfig(
            num_hidden_layers=2, hidden_size=width, num_attention_heads=4,
            intermediate_size=4 * width, image_size=16, patch_size=patch, num_labels=10,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
    )  # fmt: skip
    layers = {
        "vit.embeddings.patch_embeddings.projection": "embedding",
        "vit.layers.*.attention.*_proj": "hidden",
        "vit.layers.*.mlp.fc*": "hidden",
        "classifier": "readout",
    }
    param = Parametrization(model, mup_config(layers=layers))
    spec = {s.name: s for s in param.layers}
    r = width / BASE
    stem = spec["vit.embeddings.patch_embeddings.projection"]
    assert stem.init_std == pytest.approx((3 * patch * patch) ** -0.5 * r**-0.5)
    assert stem.multiplier == pytest.approx(r**0.5)
    assert std_close(stem.weight, stem.init_std)
    assert spec["vit.layers.0.mlp.fc2"].lr == pytest.approx(LR / r)  # 4n -> n
    assert spec["classifier"].multiplier == pytest.approx(r**-0.5)
    assert model.vit.layers[0].attention.scaling == pytest.approx(4 / (width // 4))
    assert model(torch.randn(2, 3, 16, 16)).logits.shape == (2, 10)


class Recurrent(nn.Module):
    def __init__(self, width: int, readout=nn.Linear) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, width, num_layers=2, batch_first=True)
        self.out = readout(width, 3)

    def forward(self, x):
        return self.out(self.lstm(x)[0][:, -1])


LSTM_LAYERS = {"lstm": "embedding", "out": "readout"}


def test_lstm_every_weight_reinitialized_with_mups_learning_rates():
    """The LSTM's input weights are an embedding (finite fan-in 5), its recurrent and second-
    layer weights hidden; the multipliers cannot reach inside, so the a = 0 representatives
    apply. Learning rates agree with mup's set_base_shapes + MuAdam per parameter."""
    width = 256
    torch.manual_seed(0)
    model = Recurrent(width)
    param = Parametrization(model, mup_config(layers=LSTM_LAYERS, attention_scale="keep"))
    spec = {s.name: s for s in param.layers}
    ih0, hh0, ih1 = (spec[f"lstm.weight_{x}"] for x in ("ih_l0", "hh_l0", "ih_l1"))
    assert (ih0.role, ih0.a, ih0.b, ih0.c) == ("embedding", 0.0, 0.0, 0.0)
    assert "a = 0 representative" in ih0.note
    assert (hh0.role, hh0.a, hh0.b, hh0.c) == ("hidden", 0.0, 0.5, 1.0)
    assert ih1.role == "hidden" and not isinstance(model.lstm, type(model.out))  # not wrapped
    assert std_close(model.lstm.weight_ih_l0, 5**-0.5)
    assert std_close(model.lstm.weight_hh_l1, width**-0.5)
    assert torch.all(model.lstm.bias_hh_l0 == 0)
    ref = Recurrent(width, mup.MuReadout)
    mup.set_base_shapes(
        ref, Recurrent(BASE, mup.MuReadout), delta=Recurrent(2 * BASE, mup.MuReadout)
    )
    theirs = {
        id(p): g["lr"]
        for g in mup.MuAdam(ref.parameters(), lr=LR).param_groups
        for p in g["params"]
    }
    ours = {id(p): g["lr"] for g in param.param_groups for p in g["params"]}
    ref_names = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        if name.startswith("lstm"):
            assert ours[id(p)] == pytest.approx(theirs[id(ref_names[name])]), name
    assert model(torch.randn(2, 7, 5)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"'lstm' \(LSTM\) cannot be a readout"):
        Parametrization(Recurrent(64), ParametrizationConfig(layers={"lstm": "readout"}))


class Encoder(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(6, width)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(width, 2)

    def forward(self, x):
        return self.out(self.encoder(self.inp(x)))


ENCODER_LAYERS = {
    "inp": "embedding",
    "encoder.layers.*.self_attn": "hidden",
    "encoder.layers.*.linear*": "hidden",
    "out": "readout",
}


def test_transformer_encoder_multipliers_survive_the_fast_path():
    """Under ntk (hidden a = 1/2) a wrapper on linear1/linear2 would be bypassed by
    TransformerEncoderLayer's inference fast path, which reads their weights directly: those
    weights take their a = 0 representative instead, so train and eval paths agree."""
    model = Encoder(64)
    cfg = ParametrizationConfig("ntk", layers=ENCODER_LAYERS, base_width=16, attention_scale="keep")
    param = Parametrization(model, cfg)
    spec = {s.name: s for s in param.layers}
    lin = spec["encoder.layers.0.linear1"]
    assert (lin.a, lin.b, lin.multiplier) == (0.0, 0.5, 1.0) and "a = 0" in lin.note
    assert isinstance(model.encoder.layers[0].linear1, nn.Linear)  # not wrapped
    assert spec["encoder.layers.0.self_attn.in_proj_weight"].geometry.blocks == ("q", "k", "v")
    x = torch.randn(3, 5, 6)
    model.train()
    slow = model(x)
    model.eval()
    with torch.no_grad():
        fast = model(x)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def test_spectral_monitor_reads_conv1d_in_proj_and_lstm_gates():
    model = gpt2(64)
    monitor = SpectralMonitor(model, exact=True)
    rows = {r["layer"]: r for r in monitor.log(0)}
    fc = rows["transformer.h.0.mlp.c_fc"]  # Conv1D (64 -> 256), stored (64, 256)
    w = model.transformer.h[0].mlp.c_fc.weight
    assert (fc["fan_in"], fc["fan_out"]) == (64, 256)
    sigma = torch.linalg.matrix_norm(w, ord=2).item()
    assert fc["rel_w"] == pytest.approx(sigma / 2.0, rel=1e-5)  # sqrt(fan_out / fan_in) = 2
    c_attn = model.transformer.h[0].attn.c_attn.weight
    for k, block in enumerate("qkv"):
        row = rows[f"transformer.h.0.attn.c_attn[{block}]"]
        w_block = c_attn[:, 64 * k : 64 * (k + 1)]  # stored (in, 3E): columns per block
        assert (row["fan_in"], row["fan_out"]) == (64, 64)
        assert row["sigma_w"] == pytest.approx(
            torch.linalg.matrix_norm(w_block, ord=2).item(), rel=1e-5
        )
    assert (rows["transformer.wte"]["fan_in"], rows["transformer.wte"]["fan_out"]) == (VOCAB, 64)
    model = Encoder(32)
    rows = {r["layer"]: r for r in SpectralMonitor(model, exact=True).log(0)}
    mha = model.encoder.layers[0].self_attn
    assert {"encoder.layers.0.self_attn[k]", "encoder.layers.0.self_attn.out_proj"} <= rows.keys()
    k = torch.linalg.matrix_norm(mha.in_proj_weight[32:64], ord=2).item()
    assert rows["encoder.layers.0.self_attn[k]"]["sigma_w"] == pytest.approx(k, rel=1e-5)
    model = Recurrent(16)
    rows = {r["layer"]: r for r in SpectralMonitor(model, exact=True).log(0)}
    gate = rows["lstm.weight_ih_l0[f]"]
    assert (gate["fan_in"], gate["fan_out"]) == (5, 16)
    f = torch.linalg.matrix_norm(model.lstm.weight_ih_l0[16:32], ord=2).item()
    assert gate["sigma_w"] == pytest.approx(f, rel=1e-5)
    assert len([k for k in rows if k.startswith("lstm.")]) == 4 * 4  # 4 weights x 4 gates
