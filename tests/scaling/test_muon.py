"""Muon in the abc engine (`ntk.scaling.muon`): exponents, the rules' scales, the groups and the
one optimizer object, on an MLP, the GPT and a Hugging Face GPT-2; refusals by name."""

import math

import pytest
import torch
from torch import nn

from ntk.lm.model import GPTConfig
from ntk.lm.parametrize import gpt_recipe
from ntk.models import WideMLP
from ntk.scaling import Parametrization, ParametrizationConfig
from ntk.scaling.abc_rules import role_exponents, update_exponents
from ntk.scaling.dynamic_lr import DynamicLR
from ntk.scaling.muon import MuonAdamW, build_optimizer, rule_scale

pytestmark = pytest.mark.usefixtures("single_thread")


def mlp(width=128, **cfg):
    torch.manual_seed(0)
    model = WideMLP(8, width=width, depth=3)
    options = dict(optimizer="muon", base_width=32, lr=1e-2, muon_lr=0.05) | cfg
    return model, Parametrization(model, ParametrizationConfig("mup", **options))


def test_muon_exponents_hidden_c_is_minus_a_and_alignment_free():
    for p in ("sp", "mup", "ntk", "mfp"):
        full, no = role_exponents(p, "muon", "full"), role_exponents(p, "muon", "no")
        assert full["hidden"].c == no["hidden"].c == -full["hidden"].a
        adam = role_exponents(p, "adam", "full")
        assert full["embedding"] == adam["embedding"]  # the other roles stay on Adam
    mup = role_exponents("mup", "muon")
    roles = ["embedding", "hidden", "hidden", "readout"]
    abcs = [mup[r] for r in roles]
    r = update_exponents(*zip(*abcs, strict=True), roles, optimizer="muon")
    assert r == [0.0] * 4  # every layer moves by Theta(1): muP's feature learning


def test_rule_scales_and_torch_adjust_agree():
    assert rule_scale("spectral", 256, 64) == 2.0 and rule_scale("spectral", 64, 256) == 0.5
    assert rule_scale("keller", 64, 256) == 1.0
    assert rule_scale("moonshot", 64, 256) == pytest.approx(0.2 * 16)
    adjust = getattr(torch.optim._muon, "_adjust_lr", None)  # torch's own formula, if present
    if adjust is not None:
        assert adjust(1.0, "original", torch.Size([256, 64])) == rule_scale("keller", 256, 64)
        assert adjust(1.0, "match_rms_adamw", torch.Size([64, 256])) == pytest.approx(3.2)


@pytest.mark.parametrize("rule,c", [("spectral", 0.0), ("keller", 0.0), ("moonshot", 0.5)])
def test_mlp_groups_rule_exponent_and_effective_step(rule, c):
    model, param = mlp(muon_rule=rule)
    groups = param.param_groups
    muon = [g for g in groups if g.get("optimizer") == "muon"]
    assert [g["name"] for g in muon] == ["hidden.1", "hidden.2"]
    assert sum(g["optimizer"] == "adamw" for g in groups) == len(groups) - 2
    for g in muon:
        assert g["c"] == c and g["lr"] == pytest.approx(0.05 * 4**-c)
        assert "eps" not in g  # Muon's eps is Newton-Schulz's, not Adam's
    assert "optimizer" in param.table().columns


def test_global_lr_rule_runs_each_rule_uncorrected():
    _, param = mlp(muon_rule="moonshot", lr_rule="global")
    assert {g["lr"] for g in param.param_groups if g["optimizer"] == "muon"} == {0.05}


def test_one_optimizer_steps_both_and_resumes_bitwise():
    def run(steps, state=None):
        model, param = mlp()
        opt = build_optimizer(param.param_groups)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + s))
        if state is not None:
            model.load_state_dict(state[0])
            opt.load_state_dict(state[1])
            sched.load_state_dict(state[2])
        x, y = torch.randn(16, 8, generator=torch.Generator().manual_seed(1)), torch.ones(16, 1)
        for _ in range(steps):
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        return model, opt, sched

    model, opt, _ = run(4)
    assert isinstance(opt, MuonAdamW) and len(opt.state) == len(list(model.parameters()))
    assert {"muon", "adamw"} == set(opt.state_dict())
    half_model, half_opt, half_sched = run(2)
    state = (half_model.state_dict(), half_opt.state_dict(), half_sched.state_dict())
    resumed, _, _ = run(2, state)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="muon"):
        opt.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())


def test_adam_config_still_builds_plain_adamw():
    torch.manual_seed(0)
    model = WideMLP(8, width=64, depth=2)
    param = Parametrization(model, ParametrizationConfig("mup", base_width=32))
    assert type(build_optimizer(param.param_groups)) is torch.optim.AdamW
    assert all("optimizer" not in g for g in param.param_groups)


def test_gpt_recipe_muon_every_hidden_matrix_and_layout():
    cfg = GPTConfig(vocab_size=40, block_size=8, n_layer=1, n_embd=64, n_head=4)
    model, param, groups = gpt_recipe(
        cfg, "mup", base_width=32, lr=3e-3, optimizer="muon", muon_lr=0.02, weight_decay=0.1
    )
    muon = {g["name"]: g for g in groups if g.get("optimizer") == "muon"}
    assert set(muon) == {f"blocks.0.{m}" for m in ("attn.q", "attn.k", "attn.v", "attn.o")} | {
        "blocks.0.mlp.up",
        "blocks.0.mlp.down",
    }
    # spectral on the down projection (fan_out/fan_in = 1/4): torch's "original" gives 1
    assert muon["blocks.0.mlp.down"]["lr"] == pytest.approx(0.01)
    assert all(g["lr"] * g["weight_decay"] == pytest.approx(3e-4) for g in muon.values())
    opt = build_optimizer(groups)
    x = torch.randint(0, 40, (2, 8))
    model(x).logsumexp(-1).mean().backward()
    opt.step()


def test_hugging_face_gpt2_transposed_conv1d_gets_the_rules_scale():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_embd=64,
        n_layer=1,
        n_head=4,
        vocab_size=40,
        n_positions=16,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config)
    layers = {
        "transformer.wte": "embedding",
        "transformer.h.*.*.c_*": "hidden",
        "lm_head": "readout",
    }
    param = Parametrization(
        model,
        ParametrizationConfig(
            "mup", optimizer="muon", layers=layers, base_width=32, width=64, base_head_dim=8
        ),
    )
    lr = {g["name"]: g["lr"] for g in param.param_groups if g.get("optimizer") == "muon"}
    # stored (fan_in, fan_out): torch reads c_attn (64, 192) as contracting; the factor fixes it
    assert lr["transformer.h.0.attn.c_attn"] == pytest.approx(1e-3 * math.sqrt(3))
    assert lr["transformer.h.0.mlp.c_proj"] == pytest.approx(1e-3 * 0.5 / 2)


def test_refusals_name_the_layer():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.LazyLinear(2))
    conv[3] = nn.Linear(8 * 28 * 28, 2)
    layers = {"0": "embedding", "1": "hidden", "3": "readout"}
    with pytest.raises(ValueError, match=r"'1' \(Conv2d\).*4-D"):
        Parametrization(conv, ParametrizationConfig("mup", optimizer="muon", layers=layers))
    mha = nn.ModuleDict(
        dict(inp=nn.Linear(4, 16), attn=nn.MultiheadAttention(16, 2), out=nn.Linear(16, 2))
    )
    layers = {"inp": "embedding", "attn": "hidden", "out": "readout"}
    with pytest.raises(ValueError, match="stacks the blocks"):
        Parametrization(mha, ParametrizationConfig("mup", optimizer="muon", layers=layers))
    with pytest.raises(ValueError, match="muon_rule"):
        ParametrizationConfig("mup", optimizer="muon", muon_rule="adam").validate()
    model, param = mlp()
    opt = build_optimizer(param.param_groups)
    with pytest.raises(ValueError, match="DynamicLR .* Muon"):
        DynamicLR(param, opt, torch.randn(4, 8))
