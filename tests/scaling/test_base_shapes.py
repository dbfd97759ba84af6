"""Width ratios from the model, not the layer: against the `mup` package's base shapes.

The model (tests/scaling/tiny_models.py) has the layers a per-layer reading gets wrong: an MLP
down-projection 4C -> C, a head-dimension layer and a vocabulary-sized readout. `mup`'s
set_base_shapes + MuAdam give each parameter a learning rate; `mup`'s own init (PyTorch's
default, uniform with std 1/sqrt(3 fan_in), the readout rescaled to a width-independent std)
gives each an init std. Our `Parametrization` with the same exponents in mup's form
(embedding (0, 0, 0), hidden (0, 1/2, 1), readout (1, 0, 0), Adam) must give the same numbers,
and in Everett et al.'s form ("mup") the same effective weights and updates.
"""

from __future__ import annotations

import math

import mup
import pytest
import torch
from torch import nn

from ntk.scaling.parametrization import Parametrization, ParametrizationConfig
from tests.scaling.tiny_models import LAYERS, VOCAB, TinyTransformer

pytestmark = pytest.mark.usefixtures("single_thread")

BASE, WIDTH, LR = 64, 256, 0.01
ROLES = ["embedding"] + ["hidden"] * 7 + ["readout"]  # embed, q, k, v, o, per_head, up, down, head
MUP_FORM = dict(  # the mup package's representative of muP with Adam
    parametrization=None,
    a=[0.0] + [0.0] * 7 + [1.0],
    b=[0.0] + [0.5] * 7 + [0.0],
    c=[0.0] + [1.0] * 7 + [0.0],
    attention_scale="mup",
)
UNIFORM = 3**-0.5  # std of PyTorch's default Linear init, in units of 1/sqrt(fan_in)


def mup_reference(width: int, base: int, **kw):
    """A mup-package model at `width` with base shapes set, its per-parameter Adam lr."""
    torch.manual_seed(1)
    model = TinyTransformer(width, readout=mup.MuReadout, **kw)
    base_kw = {**kw, "head_dim": kw["head_dim"]} if "head_dim" in kw else kw
    mup.set_base_shapes(
        model,
        TinyTransformer(base, readout=mup.MuReadout, **base_kw),
        delta=TinyTransformer(2 * base, readout=mup.MuReadout, **base_kw),
    )
    opt = mup.MuAdam(model.parameters(), lr=LR)
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    names = {n: lrs[id(p)] for n, p in model.named_parameters()}
    return model, names


def ours(width: int, **cfg_kw) -> tuple[nn.Module, Parametrization, dict[str, float]]:
    torch.manual_seed(2)
    model = TinyTransformer(width, **cfg_kw.pop("model_kw", {}))
    cfg = ParametrizationConfig(layers=LAYERS, lr=LR, **cfg_kw)
    param = Parametrization(model, cfg)
    names = {id(p): n.replace(".module", "") for n, p in model.named_parameters()}
    lrs = {names[id(p)]: g["lr"] for g in param.param_groups for p in g["params"]}
    return model, param, lrs


def sampled_std_tolerance(p: torch.Tensor) -> float:
    return 5 * (2 * p.numel()) ** -0.5  # 5 standard errors of a sample std


@pytest.mark.parametrize("route", ["base_width", "base_model"])
def test_learning_rates_and_init_stds_match_mup(route):
    """Same exponents as mup's, ratio from the model: every lr equal, every init std equal."""
    ref, ref_lrs = mup_reference(WIDTH, BASE)
    if route == "base_width":
        kw = dict(base_width=BASE, base_head_dim=BASE // 4)
    else:
        with torch.device("meta"):
            kw = dict(base_model=TinyTransformer(BASE))  # shapes only: no memory, no init
    model, param, lrs = ours(
        WIDTH, std_prefactor=UNIFORM, base_std={"embed": 1.0}, **MUP_FORM, **kw
    )
    assert lrs.keys() == ref_lrs.keys()
    for name, lr in ref_lrs.items():
        assert lrs[name] == pytest.approx(lr, rel=1e-12), name
    assert lrs["down.weight"] == pytest.approx(LR * BASE / WIDTH)  # the 4C -> C layer
    ref_params = dict(ref.named_parameters())
    for spec in param.layers:
        p_ref = ref_params[f"{spec.name}.weight"]
        tol = sampled_std_tolerance(p_ref)
        assert p_ref.std().item() == pytest.approx(spec.init_std, rel=tol), spec.name
        assert spec.weight.std().item() == pytest.approx(spec.init_std, rel=tol), spec.name
    # muP's attention scale sqrt(d0)/d: head_dim 64 at width 256, 16 at the base width
    assert model.attn.softmax_scale == pytest.approx(math.sqrt(16) / 64)


def test_everett_form_gives_mups_effective_weights_and_updates():
    """ "mup" (embedding a = -1/2, readout a = 1/2): hidden lrs equal mup's; for the embedding and
    readout, multiplier * std and multiplier * lr (Adam's effective update) equal mup's."""
    _, ref_lrs = mup_reference(WIDTH, BASE)
    _, param, lrs = ours(
        WIDTH, std_prefactor=UNIFORM, base_std={"embed": 1.0}, base_width=BASE, base_head_dim=16
    )
    r = WIDTH / BASE
    mup_mult = {"embed": 1.0, "head": 1 / r}  # MuReadout divides its input by width_mult
    mup_std = {"embed": 1.0, "head": UNIFORM / math.sqrt(BASE)}
    for spec in param.layers:
        ref_lr = ref_lrs[f"{spec.name}.weight"]
        if spec.role == "hidden":
            assert spec.multiplier == 1.0 and lrs[f"{spec.name}.weight"] == pytest.approx(ref_lr)
            continue
        m = mup_mult[spec.name]
        assert spec.multiplier * spec.init_std == pytest.approx(m * mup_std[spec.name])
        assert spec.multiplier * spec.lr == pytest.approx(m * ref_lr)


def test_base_model_reads_a_head_dimension_that_does_not_grow():
    """Fixed head size (more heads as C grows): the per-head layer keeps ratio 1, as in mup
    (finite x finite: lr unscaled); the attention scale stays 1/sqrt(d)."""
    ref, ref_lrs = mup_reference(WIDTH, BASE, head_dim=16)
    with torch.device("meta"):
        base = TinyTransformer(BASE, head_dim=16)
    model, param, lrs = ours(
        WIDTH, **MUP_FORM, base_model=base, std_prefactor=UNIFORM, model_kw=dict(head_dim=16)
    )
    spec = {s.name: s for s in param.layers}
    assert spec["attn.per_head"].ratio == 1.0 and spec["attn.q"].ratio == WIDTH / BASE
    for name, lr in ref_lrs.items():
        assert lrs[name] == pytest.approx(lr, rel=1e-12), name
    assert model.attn.softmax_scale == 16**-0.5
    assert param.attention[0]["scale_after"] == param.attention[0]["scale_before"]


def test_at_the_base_width_every_parametrization_is_sp():
    """width == base: lr and std_prefactor / sqrt(fan_in) for every weight (the 4C ->
    C layer, the per-head layer, the readout), multiplier 1; sp and mup give the same model and
    groups; MuAdam's lrs are all lr there too."""
    runs = {}
    for name in ("sp", "mup"):
        model, param, lrs = ours(BASE, parametrization=name, base_width=BASE, std_prefactor=0.7)
        for spec in param.layers:
            fan_in = 1 if spec.name == "embed" else spec.geometry.fan_in
            assert spec.lr == LR and spec.multiplier == 1.0, spec.name
            assert spec.init_std == pytest.approx(0.7 / math.sqrt(fan_in)), spec.name
        runs[name] = (model.state_dict(), lrs, [s.init_std for s in param.layers])
    (sp_state, sp_lrs, sp_std), (mup_state, mup_lrs, mup_std) = runs["sp"], runs["mup"]
    assert sp_lrs == mup_lrs and sp_std == mup_std
    assert all(torch.equal(sp_state[k], mup_state[k]) for k in sp_state)
    _, ref_lrs = mup_reference(BASE, BASE)
    assert set(ref_lrs.values()) == {LR}


def test_width_errors():
    class Odd(nn.Module):  # a hidden layer whose fan-in does not grow with the width
        def __init__(self, width):
            super().__init__()
            self.inp, self.mid, self.out = (
                nn.Linear(3, width),
                nn.Linear(width + 1, width),
                nn.Linear(width, 2),
            )

    with pytest.raises(ValueError, match=r"'mid'.*not an integer.*base_model"):
        Parametrization(Odd(96), ParametrizationConfig(base_width=64))
    with pytest.raises(ValueError, match=r"'up' is listed as 'readout'.*'hidden' layer"):
        Parametrization(
            TinyTransformer(WIDTH),
            ParametrizationConfig(
                layers={**LAYERS, "up": "readout"}, base_model=TinyTransformer(BASE)
            ),
        )
    with pytest.raises(ValueError, match="base_model has no module"):
        Parametrization(
            TinyTransformer(WIDTH),
            ParametrizationConfig(layers={**LAYERS, "up": "hidden"}, base_model=nn.Linear(2, 2)),
        )
    with pytest.raises(ValueError, match="base_model states every width"):
        ParametrizationConfig(base_model=nn.Linear(2, 2), base_width=4).validate()
    with pytest.raises(TypeError, match="config.base_model"):
        ParametrizationConfig(base_model="model").validate()
    with pytest.raises(ValueError, match="config.base_head_dim"):  # away from the base width
        Parametrization(
            TinyTransformer(WIDTH), ParametrizationConfig(layers=LAYERS, base_width=BASE)
        )
    model = TinyTransformer(WIDTH)
    with pytest.raises(ValueError, match="config.width"):  # only hidden layers listed
        Parametrization(model, ParametrizationConfig(layers={"up": "hidden"}, base_width=BASE))
    cfg = ParametrizationConfig(
        layers={"up": "hidden"}, base_width=BASE, width=WIDTH, attention_scale="keep"
    )
    param = Parametrization(model, cfg)  # the same with the width stated
    assert param.layers[0].ratio == WIDTH / BASE
    assert VOCAB == model.head.out_features
