"""Coordinate check: agreement with the mup package, exponent fits, SP vs muP behaviour."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from mup import MuAdam, MuReadout, MuSGD, set_base_shapes
from mup.coord_check import get_coord_data
from torch import nn

from ntk.scaling.coord_check import (
    ROOT,
    coord_check,
    exponent_table,
    fit_exponents,
    from_mup,
    plot_coord_check,
)
from ntk.scaling.parametrization import Parametrization, ParametrizationConfig

IN, OUT = 12, 5


def _mlp(width: int, readout: type = nn.Linear, **kw) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(IN, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        readout(width, OUT, **kw),
    )


def mup_mlp(width: int, readout_zero_init: bool = False) -> nn.Sequential:
    """A muP MLP on the mup package: MuReadout + base shapes (base width 8)."""
    kw = dict(readout_zero_init=readout_zero_init)
    model = _mlp(width, MuReadout, **kw)
    set_base_shapes(model, _mlp(8, MuReadout, **kw), delta=_mlp(16, MuReadout, **kw))
    return model


def sp_mlp(width: int) -> nn.Sequential:
    return _mlp(width)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(24, IN, generator=g), torch.randint(0, OUT, (24,), generator=g)


@pytest.mark.parametrize(("name", "opt_cls", "lr"), [("adam", MuAdam, 1e-2), ("sgd", MuSGD, 0.3)])
def test_agrees_with_mup_get_coord_data(batch, name, opt_cls, lr):
    widths, seeds, steps = [16, 64], [0, 1], 2
    ours = coord_check(
        mup_mlp,
        widths,
        batch,
        optimizer=lambda m: opt_cls(m.parameters(), lr=lr),
        steps=steps,
        seeds=seeds,
    )
    # mup seeds once per seed and then builds its widths in order: one width per call makes
    # each model's init depend only on (seed, width), as in coord_check.
    theirs = []
    for w in widths:
        d = get_coord_data(
            {w: lambda w=w: mup_mlp(w)},
            [batch],
            optimizer=name,
            lr=lr,
            mup=True,
            nsteps=steps + 1,
            nseeds=len(seeds),
            cuda=False,
            show_progress=False,
        )
        d = from_mup(d)
        d["seed"] = np.repeat(seeds, len(d) // len(seeds))  # mup loops seeds outermost
        theirs.append(d)
    theirs = pd.concat(theirs)
    merged = ours.merge(theirs, on=["width", "module", "step", "seed"], suffixes=("", "_mup"))
    assert len(merged) == len(ours) == len(theirs)
    assert set(merged["module"]) == {"0", "1", "2", "3", "4", ROOT}
    np.testing.assert_allclose(merged["act_size"], merged["act_size_mup"], rtol=1e-6, atol=0)
    assert (merged.query("step > 0")["delta_size"] > 0).all()
    assert (merged.query("step == 0")["delta_size"] == 0).all()


def test_fit_exponents_recovers_known_slopes():
    rng = np.random.default_rng(0)
    rows = []
    for w in [8, 16, 32, 64, 128]:
        for seed in range(3):
            for step in range(3):
                noise = np.exp(0.01 * rng.standard_normal())
                rows.append(
                    dict(
                        width=w,
                        module="a",
                        step=step,
                        seed=seed,
                        act_size=2.0 * w**0.5,
                        delta_size=step * 0.1 * w**-1.0 * noise,
                    )
                )
    fits = fit_exponents(pd.DataFrame(rows)).set_index(["module", "step", "quantity"])
    np.testing.assert_allclose(fits.xs("act_size", level="quantity")["exponent"], 0.5, atol=1e-12)
    delta = fits.xs("delta_size", level="quantity")
    assert np.isnan(delta.loc[("a", 0), "exponent"])  # all zero: nothing to fit
    assert delta.loc[("a", 0), "n_widths"] == 0
    for step in (1, 2):
        row = delta.loc[("a", step)]
        assert abs(row["exponent"] + 1.0) < 0.02
        assert 0 < row["stderr"] < 0.02


def test_fit_exponents_rejects_foreign_tables():
    with pytest.raises(ValueError, match="act_size"):
        fit_exponents(pd.DataFrame({"width": [1], "module": ["a"], "step": [0]}))


def test_mup_exponents_flat_and_sp_updates_grow(batch):
    widths, steps = [32, 64, 128, 256], 3
    mup = coord_check(
        lambda w: mup_mlp(w, readout_zero_init=True),
        widths,
        batch,
        optimizer=lambda m: MuAdam(m.parameters(), lr=1e-2),
        steps=steps,
        seeds=[0, 1],
    )
    sp = coord_check(
        sp_mlp,
        widths,
        batch,
        optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=1e-2),
        steps=steps,
        seeds=[0, 1],
    )
    fm = fit_exponents(mup).query("step > 0")
    fs = fit_exponents(sp).query("step > 0").set_index(["module", "step", "quantity"])
    # with a zero readout, the first update reaches only the readout: hidden deltas are 0 at
    # step 1 (no fit); from step 2 on every module moves
    assert fm.query("step > 1")["exponent"].notna().all()
    assert fm.query("step == 1 and quantity == 'delta_size'")["exponent"].isna().sum() == 4
    assert fm["exponent"].abs().max() < 0.2, fm.sort_values("exponent")
    for module in ["2", "4", ROOT]:  # hidden-to-hidden Linear, readout, model output
        for step in range(1, steps + 1):
            assert fs.loc[(module, step, "delta_size"), "exponent"] > 0.5
    assert fs.loc[("4", steps, "act_size"), "exponent"] > 0.5


def test_filters_factories_and_callbacks(batch):
    calls = []

    def make(width):
        model = sp_mlp(width)
        return model, torch.optim.SGD(model.parameters(), lr=0.1)

    df = coord_check(
        make,
        [8, 16],
        batch,
        steps=2,
        modules=["0", "4"],
        on_step=lambda m, w, s, t: calls.append((w, s, t)),
    )
    assert set(df["module"]) == {"0", "4"}
    assert sorted(df["step"].unique()) == [0, 1, 2]
    assert calls == [(w, 0, t) for w in (8, 16) for t in range(3)]
    df2 = coord_check(make, [8], batch, steps=1, modules=lambda name: name.startswith("4"))
    assert set(df2["module"]) == {"4"}
    default = coord_check(make, [8], batch, steps=0)
    assert ROOT in set(default["module"]) and "" not in set(default["module"])

    with pytest.raises(ValueError, match="optimizer"):
        coord_check(sp_mlp, [8], batch)
    with pytest.raises(TypeError, match="make_model"):
        coord_check(lambda w: "model", [8], batch, optimizer=torch.optim.SGD)
    with pytest.raises(TypeError, match="data"):
        coord_check(make, [8], batch[0])
    with pytest.raises(ValueError, match="widths"):
        coord_check(make, [], batch)
    with pytest.raises(TypeError, match="modules"):
        coord_check(make, [8], batch, modules="0")


def test_plot_has_one_panel_per_step(batch):
    df = coord_check(
        sp_mlp, [8, 16], batch, steps=2, optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1)
    )
    fig = plot_coord_check(df, "delta_size")  # delta is 0 at step 0: no empty panel for it
    assert [ax.get_title() for ax in fig.axes] == ["step 1", "step 2"]
    assert all(ax.lines for ax in fig.axes)
    assert fig.axes[0].get_xscale() == "log"
    fig = plot_coord_check(df, "act_size")
    assert [ax.get_title() for ax in fig.axes] == ["step 0", "step 1", "step 2"]
    with pytest.raises(ValueError, match="quantity"):
        plot_coord_check(df, "l1")


class _TupleDict(nn.Module):
    """Returns a dict holding a tuple: every tensor in it is a coordinate to record."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(IN, width), nn.Linear(width, OUT)

    def forward(self, x):
        h = self.inp(x)
        return {"logits": self.out(h.relu()), "aux": (h, None, h.argmax(-1)), "cache": "c"}


def test_tuple_and_dict_outputs_give_one_record_per_tensor(batch):
    df = coord_check(
        _TupleDict,
        [8, 16],
        batch,
        optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        loss_fn=lambda out, y: F.cross_entropy(out["logits"], y),
        steps=1,
    )
    # integer tensors (argmax), None and other objects hold no coordinates
    assert set(df["module"]) == {"inp", "out", f"{ROOT}.logits", f"{ROOT}.aux[0]"}
    rows = df.set_index(["module", "width", "step"])
    for width in (8, 16):
        for step in (0, 1):
            same = rows.loc[("out", width, step)], rows.loc[(f"{ROOT}.logits", width, step)]
            assert same[0]["act_size"] == same[1]["act_size"]
            assert rows.loc[(f"{ROOT}.aux[0]", width, step), "act_size"] == pytest.approx(
                rows.loc[("inp", width, step), "act_size"]
            )
    assert (df.query("step == 1")["delta_size"] > 0).all()


def _encoder(width: int, batch_first: bool = True) -> nn.Module:
    layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=batch_first)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


def test_attention_logits_of_torch_transformer_match_a_hand_computation():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8)  # (N, T, d)
    df = coord_check(
        _encoder,
        [8],
        (x, x),
        optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        loss_fn=lambda out, y: (out - y).pow(2).mean(),
        steps=1,
    )
    logits = df[df["module_type"] == "attn_logits"].set_index(["module", "step"])
    assert set(logits.index.get_level_values("module")) == {
        "layers.0.self_attn.attn_logits",
        "layers.1.self_attn.attn_logits",
    }
    torch.manual_seed(0)  # the same model: mean |q k^T| / sqrt(d_head) of layer 0 at init
    attn = _encoder(8).layers[0].self_attn
    q, k, _ = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k = (t.reshape(3, 5, 2, 4).transpose(1, 2) for t in (q, k))
    expected = (q @ k.transpose(-2, -1) / 2.0).abs().mean().item()
    assert logits.loc[("layers.0.self_attn.attn_logits", 0), "act_size"] == pytest.approx(
        expected, rel=1e-5
    )
    assert (logits.xs(1, level="step")["delta_size"] > 0).all()
    no_logits = coord_check(
        _encoder,
        [8],
        (x, x),
        optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        loss_fn=lambda out, y: (out - y).pow(2).mean(),
        steps=0,
        attention_logits=False,
    )
    assert "attn_logits" not in set(no_logits["module_type"])
    selected = coord_check(
        _encoder,
        [8],
        (x, x),
        optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        loss_fn=lambda out, y: (out - y).pow(2).mean(),
        steps=0,
        modules=["layers.1.self_attn.attn_logits"],
    )
    assert set(selected["module"]) == {"layers.1.self_attn.attn_logits"}
    with pytest.raises(TypeError, match="attention_logits"):
        coord_check(_encoder, [8], (x, x), optimizer=torch.optim.SGD, attention_logits=1)


def test_default_records_the_wrappers_not_the_layers_inside(batch):
    """Under Parametrization the default records each wrapper (layer output x multiplier) under
    the layer's name, never the raw `.module` inside, whose exponents would read as a failed
    muP check; the exponent table is flat where the raw layer's is not."""

    def make(width):
        model = _mlp(width)
        cfg = ParametrizationConfig("mup", lr=1e-2, base_width=8)
        return model, torch.optim.Adam(Parametrization(model, cfg).param_groups)

    widths = [32, 128, 512]
    df = coord_check(make, widths, batch, steps=2)
    assert not df["module"].str.endswith(".module").any()
    assert {"0", "2", "4", ROOT} <= set(df["module"])
    table = exponent_table(df)
    assert list(table.columns) == [1, 2]
    # muP: every update flat (the output at init shrinks like n^-1/2, so act_size is not)
    assert table.xs("delta_size", level="quantity").abs().max().max() < 0.1
    # the rival: the raw readout inside its wrapper moves like sqrt(n) (multiplier n^-1/2)
    raw = coord_check(make, widths, batch, steps=2, modules=["4.module"])
    assert exponent_table(raw, ["delta_size"]).loc[("4.module", "delta_size")].min() > 0.35
