"""Layer geometry: every layout read as W (fan_out, fan_in) with y = W x, checked by computing
y from the matrix and comparing with the layer's own forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ntk.scaling.geometry import WeightGeometry, geometry_of, register_geometry, torch_layout


def _geoms(module):
    return {g.param: g for g in geometry_of(module, "layer")}


def test_linear_conv_embedding_read_as_y_equals_w_x():
    x = torch.randn(5, 7)
    lin = nn.Linear(7, 3)
    (g,) = geometry_of(lin)
    assert (g.fan_in, g.fan_out, g.bias, g.init_fan_in) == (7, 3, "bias", 7)
    torch.testing.assert_close(x @ g.matrix(lin.weight).T + lin.bias, lin(x))
    conv = nn.Conv2d(4, 6, 3, groups=2)
    (g,) = geometry_of(conv)
    assert (g.fan_in, g.fan_out) == (2 * 9, 6)  # in / groups * kernel
    conv = nn.Conv1d(4, 6, 3)
    (g,) = geometry_of(conv)
    patch = torch.randn(1, 4, 3)  # one output position sums in * kernel terms
    torch.testing.assert_close(
        g.matrix(conv.weight) @ patch.flatten() + conv.bias, conv(patch)[0, :, 0]
    )
    emb = nn.Embedding(10, 4)
    (g,) = geometry_of(emb)
    assert (g.fan_in, g.fan_out, g.lookup, g.init_fan_in) == (10, 4, True, 1)
    ids = torch.tensor([3, 7])
    torch.testing.assert_close(g.matrix(emb.weight) @ F.one_hot(ids, 10).float().T, emb(ids).T)


def test_multihead_attention_blocks_and_separate_projections():
    mha = nn.MultiheadAttention(16, 4)
    g = _geoms(mha)
    assert set(g) == {"in_proj_weight", "out_proj.weight"}
    qkv = g["in_proj_weight"]
    assert (qkv.fan_in, qkv.fan_out, qkv.blocks, qkv.bias) == (
        16,
        48,
        ("q", "k", "v"),
        "in_proj_bias",
    )
    assert not qkv.scalable
    blocks = dict(qkv.block_matrices(mha.in_proj_weight))
    torch.testing.assert_close(blocks["k"], mha.in_proj_weight[16:32])
    mha = nn.MultiheadAttention(16, 4, kdim=5, vdim=6)
    g = _geoms(mha)
    assert [(g[f"{x}_proj_weight"].fan_in, g[f"{x}_proj_weight"].fan_out) for x in "qkv"] == [
        (16, 16),
        (5, 16),
        (6, 16),
    ]


def test_rnn_weights_gate_blocks_and_inner_state():
    lstm = nn.LSTM(5, 8, num_layers=2, bidirectional=True)
    g = _geoms(lstm)
    assert len(g) == 8  # ih, hh for 2 layers x 2 directions
    ih0, hh0, ih1 = g["weight_ih_l0"], g["weight_hh_l0_reverse"], g["weight_ih_l1"]
    assert (ih0.fan_in, ih0.fan_out, ih0.inner, ih0.blocks) == (5, 32, False, ("i", "f", "g", "o"))
    assert (hh0.fan_in, hh0.inner, hh0.bias) == (8, True, "bias_hh_l0_reverse")
    assert (ih1.fan_in, ih1.inner) == (16, True)  # both directions of layer 0 feed layer 1
    gates = dict(ih0.block_matrices(lstm.weight_ih_l0))
    torch.testing.assert_close(gates["g"], lstm.weight_ih_l0[16:24])
    proj = _geoms(nn.LSTM(5, 8, proj_size=3))
    assert (proj["weight_hr_l0"].fan_in, proj["weight_hr_l0"].fan_out) == (8, 3)
    assert proj["weight_hh_l0"].fan_in == 3
    assert _geoms(nn.GRU(5, 8))["weight_ih_l0"].blocks == ("r", "z", "n")
    assert _geoms(nn.RNN(5, 8, bias=False))["weight_hh_l0"].blocks == ()
    cell = _geoms(nn.LSTMCell(5, 8))
    assert cell["weight_hh"].inner and cell["weight_ih"].blocks == ("i", "f", "g", "o")


class Dense(nn.Module):
    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(4, 3))

    def forward(self, x):
        return x @ self.kernel


def test_register_and_errors():
    with pytest.raises(ValueError, match=r"'d' is a Dense.*register_geometry\(Dense, fn\)"):
        geometry_of(Dense(), "d")
    with pytest.raises(ValueError, match="stride.*register_geometry"):
        geometry_of(nn.ConvTranspose2d(3, 4, 2), "up")
    name = f"{Dense.__module__}.{Dense.__qualname__}"  # by name, as for transformers' Conv1D
    register_geometry(name, lambda m: [WeightGeometry("kernel", 4, 3, transposed=True)])
    try:
        (g,) = geometry_of(Dense())
        x, d = torch.randn(2, 4), Dense()
        torch.testing.assert_close(x @ g.matrix(d.kernel).T, d(x))
        register_geometry(Dense, lambda m: [WeightGeometry("kernel", 5, 3)])  # wrong sizes
        with pytest.raises(ValueError, match=r"'d': kernel has shape \(4, 3\).*fan_out=3"):
            geometry_of(Dense(), "d")
        register_geometry(Dense, lambda m: "kernel")
        with pytest.raises(TypeError, match="list of WeightGeometry"):
            geometry_of(Dense(), "d")
        register_geometry(Dense, lambda m: [WeightGeometry("w", 4, 3, transposed=True)])
        with pytest.raises(ValueError, match="'w', absent"):
            geometry_of(Dense(), "d")
    finally:
        register_geometry(Dense, None)
        register_geometry(name, None)
    with pytest.raises(TypeError, match="module_type"):
        register_geometry(int, lambda m: [])
    with pytest.raises(ValueError, match="qualified name"):
        register_geometry("Dense", lambda m: [])
    with pytest.raises(TypeError, match="fn must be a callable"):
        register_geometry(Dense, "fn")
    with pytest.raises(ValueError, match="lazy"):
        geometry_of(nn.LazyLinear(3), "lazy")
    assert torch_layout(nn.LayerNorm(4)) is None
    assert torch_layout(nn.Bilinear(2, 3, 4)).fan_in == 6
