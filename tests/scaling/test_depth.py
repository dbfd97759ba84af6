"""Depth rules: the published exponents, the engine applying them, and their predictions."""

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from ntk import Parametrization, ParametrizationConfig
from ntk.lm.model import GPT, GPTConfig
from ntk.lm.parametrize import parametrize
from ntk.models.residual import RESIDUAL_BRANCHES, RESIDUAL_LAYERS, ResidualMLP
from ntk.scaling.coord_check import ROOT, coord_check, fit_exponents
from ntk.scaling.depth import (
    DepthConfig,
    DepthPlan,
    at_relative_depth,
    depth_exponents,
    depth_optima,
    depth_sweep,
)
from ntk.scaling.scaled_module import ScaledModule
from ntk.scaling.sweep import lr_drift

D, W, W0 = 6, 32, 8


def _param(depth: int, rule=None, optimizer="adam", base_depth=2, eps=1e-8, name="mup"):
    torch.manual_seed(0)
    model = ResidualMLP(D, W, 1, depth=depth)
    dc = None if rule is None else DepthConfig(rule, RESIDUAL_BRANCHES, base_depth=base_depth)
    cfg = ParametrizationConfig(
        name,
        optimizer=optimizer,
        lr=0.01,
        layers=dict(RESIDUAL_LAYERS),
        base_width=W0,
        adam_eps=eps if optimizer == "adam" else None,
        depth=dc,
    )
    return model, Parametrization(model, cfg)


# ---- the formulas ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("alpha", "optimizer", "lr", "eps"),
    [
        # Yang et al. 2023 (Depth-muP): Adam lr L^-1/2, SGD lr L^0; eps L^-1/2
        ("depth-mup", "adam", -0.5, -0.5),
        ("depth-mup", "sgd", 0.0, math.nan),
        # Dey et al. 2025 (CompleteP, Table 1): Adam lr L^(alpha-1) = L^0, eps L^-alpha
        ("completep", "adam", 0.0, -1.0),
        ("completep", "sgd", 1.0, math.nan),
        (0.75, "adam", -0.25, -0.75),
        (0.75, "sgd", 0.5, math.nan),
    ],
)
def test_exponents_match_the_papers(alpha, optimizer, lr, eps):
    e = depth_exponents(alpha, optimizer)
    assert e.lr == lr
    assert e.eps == eps or (math.isnan(e.eps) and math.isnan(eps))


def test_each_branch_moves_the_stream_by_one_over_depth():
    """The derivation's step 3 for every alpha: multiplier x update = L^-1 (Adam: the update
    is ~ lr; SGD: it is ~ lr x gradient ~ lr L^-alpha)."""
    for alpha in (0.5, 0.6, 0.8, 1.0):
        adam, sgd = depth_exponents(alpha, "adam"), depth_exponents(alpha, "sgd")
        assert -alpha + adam.lr == pytest.approx(-1.0)
        assert -2 * alpha + sgd.lr == pytest.approx(-1.0)
        assert adam.eps == -alpha  # eps follows the gradient, which carries L^-alpha


@pytest.mark.parametrize("alpha", [0.0, 0.49, 1.01, math.nan, "depthmup"])
def test_bad_alpha_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha"):
        depth_exponents(alpha)


# ---- the engine ------------------------------------------------------------------------------
@pytest.mark.parametrize(("rule", "alpha"), [("depth-mup", 0.5), ("completep", 1.0)])
def test_branches_are_wrapped_with_the_multiplier(rule, alpha):
    model, p = _param(8, rule)
    branches = [m for n, m in model.named_modules() if n.endswith(".branch")]
    assert len(branches) == 8
    for m in branches:
        assert isinstance(m, ScaledModule)
        assert m.multiplier == pytest.approx((8 / 2) ** -alpha)
    x = torch.randn(5, D)
    h = model.embed(x)
    for block in model.blocks:  # the forward pass is h + L^-alpha W phi(LN h)
        fc = block.branch.module.fc
        h = h + (8 / 2) ** -alpha * fc(torch.relu(F.layer_norm(h, (W,))))
    torch.testing.assert_close(model(x), model.readout(h))
    assert "DepthPlan(alpha=" in str(p)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("rule", ["depth-mup", "completep"])
def test_learning_rates_and_eps_are_the_width_rule_times_the_depth_factor(rule, optimizer):
    depth = 16
    _, plain = _param(depth, None, optimizer)
    _, ruled = _param(depth, rule, optimizer)
    e = depth_exponents(rule, optimizer)
    base = {g["name"]: g for g in plain.param_groups}
    groups = ruled.param_groups
    assert sum(len(g["params"]) for g in groups) == sum(len(g["params"]) for g in base.values())
    for g in groups:
        ref = base[g["name"]]
        inside = ".branch." in g["name"]
        factor = (depth / 2) ** e.lr if inside else 1.0
        assert g["lr"] == pytest.approx(ref["lr"] * factor)
        assert g["depth_factor"] == pytest.approx(factor)
        if optimizer == "adam":
            eps_factor = (depth / 2) ** e.eps if inside else 1.0
            assert g["eps"] == pytest.approx(ref["eps"] * eps_factor)


def test_at_the_base_depth_every_rule_is_width_only_mup():
    x = torch.randn(7, D)
    (m0, p0), (m1, p1) = _param(2, None), _param(2, "completep")
    torch.testing.assert_close(m0(x), m1(x))
    assert [g["lr"] for g in p0.param_groups] == [g["lr"] for g in p1.param_groups]


def test_gpt_branches_named_by_pattern_need_no_model_change():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=4, n_embd=16, n_head=2)
    model = GPT(cfg)
    dc = DepthConfig("depth-mup", ["blocks.*.attn", "blocks.*.mlp"], base_depth=1, depth=4)
    p = parametrize(model, "mup", base_width=8, lr=1e-3, adam_eps=1e-8, depth=dc)
    assert isinstance(model.blocks[0].attn, ScaledModule)
    assert model.blocks[3].mlp.multiplier == pytest.approx(0.5)
    names = {g["name"]: g for g in p.param_groups}
    assert names["blocks.1.attn.q"]["depth_factor"] == pytest.approx(0.5)  # 4^-1/2
    assert names["lm_head"]["depth_factor"] == 1.0
    rest = [g for g in p.param_groups if g["name"] == "rest"]
    assert rest and all(g["depth_factor"] == 1.0 for g in rest)  # ln_1, ln_2 lie outside
    idx = torch.randint(0, 11, (2, 8))
    assert model(idx).shape == (2, 8, 11)


def test_plan_on_any_model_without_a_parametrization():
    model = ResidualMLP(D, W, 1, depth=4)
    plan = DepthPlan(model, DepthConfig(1.0, "blocks.*.branch", base_depth=1)).apply(model)
    groups = plan.groups([dict(params=list(model.parameters()), lr=0.1, eps=1e-8)])
    assert [g["lr"] for g in groups] == [0.1, 0.1]  # CompleteP with Adam: lr L^0
    assert [g["eps"] for g in groups] == [1e-8, pytest.approx(1e-8 / 4)]
    with pytest.raises(ValueError, match="applied already"):
        plan.apply(model)


def test_bad_branches_fail_before_the_model_changes():
    model = ResidualMLP(D, W, 1, depth=3)
    before = [p.clone() for p in model.parameters()]
    bad = DepthConfig("completep", ["blocks.*.brunch"])
    cfg = ParametrizationConfig("mup", layers=dict(RESIDUAL_LAYERS), base_width=W0, depth=bad)
    with pytest.raises(ValueError, match=r"DepthConfig.branches patterns \['blocks.\*.brunch'\]"):
        Parametrization(model, cfg)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not any(isinstance(m, ScaledModule) for m in model.modules())
    nested = DepthConfig("completep", ["blocks.*", "blocks.*.branch"])
    with pytest.raises(ValueError, match="lies inside branch"):
        DepthPlan(model, nested)
    with pytest.raises(TypeError, match="config.depth must be a DepthConfig"):
        ParametrizationConfig("mup", depth=0.5).validate()
    with pytest.raises(ValueError, match="DepthConfig.base_depth"):
        DepthConfig("completep", "blocks.*.branch", base_depth=0).validate()


# ---- the predictions: a depth coordinate check -------------------------------------------
def test_depth_coordinate_check_exponents(single_thread):
    """Width-only muP: the stream grows like sqrt(L) at init and its one-step change like L;
    under the depth rules both stay Theta(1) (exponents near 0)."""
    x, y = torch.randn(64, D), torch.randn(64, 1)
    depths = [2, 4, 8, 16, 32]
    fits = {}
    for rule in (None, "depth-mup", "completep"):
        df = coord_check(
            lambda depth, rule=rule: (lambda mp: (mp[0], torch.optim.Adam(mp[1].param_groups)))(
                _param(depth, rule)
            ),
            depths,
            (x, y),
            loss_fn=F.mse_loss,
            steps=1,
            modules=lambda n: n == ROOT or (n.startswith("blocks.") and n.count(".") == 1),
            attention_logits=False,
            axis="depth",
        )
        assert "depth" in df.columns and "width" not in df.columns
        fit = fit_exponents(at_relative_depth(df), axis="depth").set_index(
            ["module", "step", "quantity"]
        )["exponent"]
        fits[rule] = fit
    last_act, last_delta = ("blocks@1", 0, "act_size"), ("blocks@1", 1, "delta_size")
    assert fits[None][last_act] == pytest.approx(0.5, abs=0.15)
    assert fits[None][last_delta] > 0.6
    for rule in ("depth-mup", "completep"):
        assert abs(fits[rule][last_act]) < 0.3
        assert abs(fits[rule][last_delta]) < 0.3


def test_at_relative_depth_picks_the_block_at_each_fraction():
    rows = [
        dict(depth=L, module=f"blocks.{i}", step=0, act_size=float(i))
        for L in (2, 8)
        for i in range(L)
    ]
    rows.append(dict(depth=8, module=ROOT, step=0, act_size=1.0))
    rel = at_relative_depth(pd.DataFrame(rows), positions=(0.25, 0.5, 1.0))
    got = {(r.depth, r.module): r.act_size for r in rel.itertuples()}
    assert got[(8, "blocks@0.25")] == 1 and got[(8, "blocks@0.5")] == 3
    assert got[(8, "blocks@1")] == 7 and got[(2, "blocks@1")] == 1
    assert got[(2, "blocks@0.25")] == 0 and got[(8, ROOT)] == 1
    with pytest.raises(ValueError, match="positions"):
        at_relative_depth(pd.DataFrame(rows), positions=(0.0,))


def _quadratic(*, parametrization, depth, lr, seed):
    """A loss whose optimum sits at log2 lr = -depth/4 for "drifting", -3 for "flat"."""
    target = -depth / 4 if parametrization == "drifting" else -3.0
    return (math.log2(lr) - target) ** 2 + 0.01 * seed


def test_depth_sweep_reads_the_drift_across_depth(tmp_path):
    df = depth_sweep(
        _quadratic,
        depths=[4, 8, 16],
        log2_lrs=[-5.0, -4.0, -3.0, -2.0, -1.0],
        seeds=[0, 1],
        parametrizations=["drifting", "flat"],
        cache=tmp_path / "d.sqlite",
        progress=False,
    )
    assert set(df["depth"]) == {4, 8, 16}
    drift = lr_drift(depth_optima(df, n_boot=0))
    assert drift["drifting"] == 3.0 and drift["flat"] == 0.0
