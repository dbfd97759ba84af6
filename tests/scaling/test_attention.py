"""muP's attention scale sqrt(d0)/d, zero queries, and loud errors for unreachable modules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ntk.scaling import attention
from ntk.scaling.attention import AttentionAdapter, register_attention
from ntk.scaling.parametrization import Parametrization, ParametrizationConfig
from tests.scaling.tiny_models import LAYERS, TinyTransformer

pytestmark = pytest.mark.usefixtures("single_thread")

BASE = 64


def mup_model(width: int, **kw) -> tuple[TinyTransformer, Parametrization]:
    torch.manual_seed(0)
    model = TinyTransformer(width)  # 4 heads: the head dimension grows with the width
    cfg = dict(layers=LAYERS, base_width=BASE, base_head_dim=BASE // 4)
    return model, Parametrization(model, ParametrizationConfig(**{**cfg, **kw}))


def test_mup_scale_keeps_aligned_logits_width_independent():
    """q = k (the alignment training produces): logit s |q|^2 ~ s d. With s = sqrt(d0)/d it is
    the same at every width, equal to the 1/sqrt(d) one at the base width; 1/sqrt(d) grows."""
    logits, sp_logits = {}, {}
    for width in (BASE, 4 * BASE, 16 * BASE):
        model, param = mup_model(width)
        d = model.attn.head_dim
        assert model.attn.softmax_scale == pytest.approx(math.sqrt(BASE // 4) / d)
        q = torch.randn(4096, d, generator=torch.Generator().manual_seed(d))
        logits[width] = model.attn.softmax_scale * (q * q).sum(1).mean().item()
        sp_logits[width] = (q * q).sum(1).mean().item() / math.sqrt(d)
        (record,) = param.attention
        assert record["name"] == "attn" and record["scale_after"] == model.attn.softmax_scale
    assert mup_model(BASE)[0].attn.softmax_scale == (BASE // 4) ** -0.5  # unchanged at base
    for width in (4 * BASE, 16 * BASE):
        assert logits[width] == pytest.approx(logits[BASE], rel=0.05)
    assert sp_logits[16 * BASE] / sp_logits[BASE] == pytest.approx(4.0, rel=0.05)  # sqrt(16)


def test_sp_keeps_each_modules_scale_and_absolute_mup_is_one_over_d():
    model, param = mup_model(256, parametrization="sp")
    assert model.attn.softmax_scale == 64**-0.5 and param.attention == []
    model = TinyTransformer(256)
    Parametrization(model, ParametrizationConfig(layers=LAYERS))  # absolute exponents: d0 = 1
    assert model.attn.softmax_scale == pytest.approx(1 / 64)
    with pytest.raises(ValueError, match=r"\['attn'\].*config.attention_scale"):
        cfg = dict(parametrization=None, a=[0] * 9, b=[0] * 9, c=[0] * 9, layers=LAYERS)
        Parametrization(TinyTransformer(64), ParametrizationConfig(**cfg))
    with pytest.raises(ValueError, match="config.attention_scale"):
        ParametrizationConfig(attention_scale="1/d").validate()


class Encoder(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.inp = nn.Linear(5, width)
        self.block = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
        self.out = nn.Linear(width, 3)

    def forward(self, x):
        return self.out(self.block(self.inp(x)))


ENCODER_LAYERS = {
    "inp": "embedding",
    "block.self_attn": "hidden",
    "block.linear*": "hidden",
    "out": "readout",
}


def test_multihead_attention_is_named_and_its_query_can_be_zeroed():
    with pytest.raises(
        ValueError, match=r"\['block.self_attn'\].*F.multi_head_attention_forward.*'keep'"
    ):
        Parametrization(Encoder(), ParametrizationConfig(layers=ENCODER_LAYERS, base_width=16))
    model = Encoder()
    cfg = ParametrizationConfig(
        layers=ENCODER_LAYERS, base_width=16, attention_scale="keep", zero_query=True
    )
    Parametrization(model, cfg)
    mha = model.block.self_attn
    assert torch.all(mha.in_proj_weight[:32] == 0) and torch.all(mha.in_proj_bias[:32] == 0)
    assert mha.in_proj_weight[32:].abs().min() > 0
    x = torch.randn(2, 6, 32)
    _, weights = mha(x, x, x, need_weights=True)
    torch.testing.assert_close(weights, torch.full_like(weights, 1 / 6))  # uniform at init


def test_zero_query_and_readout_options():
    model, param = mup_model(128, zero_query=True, zero_readout=True)
    assert torch.all(model.attn.q.weight == 0) and torch.all(model.attn.q.bias == 0)
    assert model.attn.k.weight.abs().min() > 0
    assert torch.all(model.head.weight == 0)
    table = param.table().set_index("name")
    assert table.loc["head", "init_std"] == 0.0 and table.loc["attn.q", "init_std"] == 0.0
    assert table.loc["attn.q", "note"] == "query: zero init"
    assert torch.all(model(torch.randint(0, 97, (2, 5))) == 0)


class PlainAttention(nn.Module):
    """An attention module no built-in adapter reaches: its scale is a class constant."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.wq, self.wk, self.wv = (nn.Linear(width, width) for _ in range(3))
        self.dim = width

    def forward(self, x):
        s = self.wq(x) @ self.wk(x).transpose(-1, -2) * self.scale
        return torch.softmax(s, -1) @ self.wv(x)

    scale = 0.125


class PlainModel(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inp, self.attn, self.out = (
            nn.Linear(3, width),
            PlainAttention(width),
            nn.Linear(width, 2),
        )

    def forward(self, x):
        return self.out(self.attn(self.inp(x)))


def test_unknown_attention_is_named_then_reachable_with_an_adapter():
    layers = {"inp": "embedding", "attn.w*": "hidden", "out": "readout"}
    cfg = ParametrizationConfig(layers=layers, base_width=16, base_head_dim=16)
    with pytest.raises(ValueError, match=r"\['attn'\] are not reachable.*register_attention"):
        Parametrization(PlainModel(64), cfg)
    adapter = AttentionAdapter(
        kind="plain",
        matches=lambda m: isinstance(m, PlainAttention),
        head_dim=lambda m: m.dim,
        scale_attr="scale",
        query=lambda m: [(m.wq.weight, (slice(None),))],
    )
    register_attention(adapter)
    try:
        model = PlainModel(64)
        Parametrization(model, cfg)
        assert model.attn.scale == pytest.approx(0.125 * math.sqrt(16 / 64))
    finally:
        attention._ADAPTERS.remove(adapter)
    with pytest.raises(TypeError, match="AttentionAdapter"):
        register_attention("adapter")
