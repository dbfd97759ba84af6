"""The GPT through the abc engine: every matrix has a role, sp = mup at the base width."""

import mup
import pytest
import torch

from ntk.lm.model import GPT, GPTConfig
from ntk.lm.parametrize import gpt_layers, gpt_recipe, optimizer_groups, parametrize
from ntk.lm.step import train_step

pytestmark = pytest.mark.usefixtures("single_thread")


def make(n_embd: int, **kw) -> GPT:
    return GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_embd=n_embd, n_head=4, **kw))


def clean(name: str) -> str:
    return name.replace(".module", "")  # the engine wraps each layer in a ScaledModule


def test_every_weight_matrix_has_a_role_and_vectors_stay_in_the_rest_group():
    model = make(32, bias=True)
    p = parametrize(model, "mup", base_width=32, lr=1e-3)
    assert len(p.layers) == 1 + 2 * 6 + 1
    assert [s.role for s in p.layers][:2] == ["embedding", "hidden"]
    assert p.layers[-1].role == "readout"
    names = {id(q): clean(n) for n, q in model.named_parameters()}
    seen = [names[id(q)] for g in p.param_groups for q in g["params"]]
    assert sorted(seen) == sorted(names.values())  # each parameter in exactly one group
    rest = next(g for g in p.param_groups if g["name"] == "rest")
    assert all(q.ndim == 1 for q in rest["params"])  # norm gains and biases
    matrices = [clean(n) for n, q in model.named_parameters() if q.ndim == 2]
    layer_weights = [f"{s.name}.weight" for s in p.layers]
    assert sorted(matrices) == sorted(layer_weights)


def test_gpt_layers_rejects_other_models():
    with pytest.raises(TypeError, match="must be an ntk.lm.GPT"):
        gpt_layers(torch.nn.Linear(2, 2))


def train_three_steps(name: str, n_embd: int = 64, **options):
    torch.manual_seed(0)
    batch = (torch.randint(0, 13, (4, 16)), torch.randint(0, 13, (4, 16)))
    model = make(n_embd)
    p = parametrize(model, name, base_width=64, lr=3e-3, **options)
    opt = torch.optim.AdamW(optimizer_groups(p, weight_decay=0.1))
    losses = [train_step(model, opt, batch, step=s) for s in range(3)]
    return model, p, losses


@pytest.mark.parametrize("sp", [dict(), dict(lr_rule="global")])
def test_sp_and_mup_are_the_same_model_at_the_base_width(sp):
    """Without muP's zero inits, the same init, learning rates, decay and training."""
    runs = {
        "sp": train_three_steps("sp", **sp),
        "mup": train_three_steps("mup", zero_query=False, zero_readout=False),
    }
    (sp_model, sp_p, sp_losses), (mup_model, mup_p, mup_losses) = runs["sp"], runs["mup"]
    assert all(s.multiplier == 1.0 for s in sp_p.layers + mup_p.layers)
    lrs = [[(g["lr"], g["weight_decay"]) for g in optimizer_groups(p, 0.1)] for p in (sp_p, mup_p)]
    assert lrs[0] == lrs[1]
    assert sp_losses == mup_losses
    for (n, a), (_, b) in zip(
        sp_model.state_dict().items(), mup_model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), n


def test_mup_default_is_sp_with_a_zero_query_and_readout_at_the_base_width():
    sp, sp_p, sp_losses = train_three_steps("sp", zero_query=True, zero_readout=True)
    mup_model, mup_p, mup_losses = train_three_steps("mup")  # zero query and readout by default
    assert sp_losses == mup_losses
    for (n, a), (_, b) in zip(sp.state_dict().items(), mup_model.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    torch.manual_seed(0)
    plain = make(64)
    parametrize(plain, "sp", base_width=64, lr=3e-3)
    assert plain.lm_head.weight.abs().min() > 0 and plain.blocks[0].attn.q.weight.abs().max() > 0


def test_mup_away_from_the_base_width_scales_readout_and_hidden_learning_rates():
    p = parametrize(make(128), "mup", base_width=32, lr=1.0, zero_readout=False)
    by_name = {s.name: s for s in p.layers}
    assert by_name["lm_head"].multiplier == pytest.approx(0.5)  # (n / n0)^-1/2, Everett form
    head = by_name["lm_head"]
    assert head.init_std == pytest.approx(128**-0.5)
    assert head.multiplier * head.init_std == pytest.approx(32**0.5 / 128)  # effective std ~ 1/n
    assert by_name["blocks.0.attn.q"].lr == pytest.approx(1 / 4)  # Adam: hidden lr ~ 1/n


def mup_package_lrs(n_embd: int, base: int) -> dict[str, float]:
    """Learning rate per weight under the `mup` package's MuAdam (readout as MuReadout)."""

    def build(width):
        model = make(width)
        model.lm_head = mup.MuReadout(width, 13, bias=False)
        return model

    model = build(n_embd)
    mup.set_base_shapes(model, build(base), delta=build(2 * base))
    opt = mup.MuAdam(model.parameters(), lr=1.0)
    names = {id(q): n for n, q in model.named_parameters()}
    return {names[id(q)]: g["lr"] for g in opt.param_groups for q in g["params"]}


@pytest.mark.parametrize("layer", ["attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down"])
def test_hidden_learning_rates_match_the_mup_package(layer):
    ours = parametrize(make(128), "mup", base_width=32, lr=1.0)
    theirs = mup_package_lrs(128, 32)
    lr = {clean(g["name"]): g["lr"] for g in ours.param_groups}
    assert lr[f"blocks.0.{layer}"] == pytest.approx(theirs[f"blocks.0.{layer}.weight"])


def test_attention_scale_follows_the_way_the_width_grows():
    """muP's sqrt(d0)/d: 1/sqrt(d) at the base width, 1/d-like when heads widen."""
    wider_heads = make(128)  # n_head 4: head_dim 32, 8 at the base width 32
    parametrize(wider_heads, "mup", base_width=32, lr=1e-3)
    assert wider_heads.blocks[0].attn.softmax_scale == pytest.approx(8**0.5 / 32)
    more_heads = GPT(
        GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_embd=128, n_head=None, head_dim=8)
    )
    parametrize(more_heads, "mup", base_width=32, lr=1e-3)
    assert more_heads.blocks[1].attn.softmax_scale == pytest.approx(8**-0.5)  # d = d0
    standard = make(128)
    parametrize(standard, "sp", base_width=32, lr=1e-3)
    assert standard.blocks[0].attn.softmax_scale == pytest.approx(32**-0.5)  # sp keeps 1/sqrt(d)


def test_zero_query_and_readout_options():
    model = make(64)
    parametrize(model, "mup", base_width=32, lr=1e-3)  # muP's default: both zero
    assert all(b.attn.q.weight.abs().max() == 0 for b in model.blocks)
    assert model.lm_head.weight.abs().max() == 0
    assert model.blocks[0].attn.k.weight.abs().max() > 0
    model = make(64)
    parametrize(model, "mup", base_width=32, lr=1e-3, zero_query=False, zero_readout=False)
    assert model.blocks[0].attn.q.weight.abs().max() > 0 and model.lm_head.weight.abs().max() > 0
    model = make(64)
    parametrize(model, "sp", base_width=32, lr=1e-3, zero_query=True)
    assert model.blocks[0].attn.q.weight.abs().max() == 0 and model.lm_head.weight.abs().max() > 0


def test_tied_embeddings_under_mup_and_refused_under_sp():
    model = make(64, tie_embeddings=True)
    p = parametrize(model, "mup", base_width=32, lr=1e-3)
    assert model.lm_head.weight is model.wte.weight
    shared = [g for g in p.param_groups if any(q is model.wte.weight for q in g["params"])]
    assert len(shared) == 1  # one matrix: one init, one learning rate
    batch = (torch.randint(0, 13, (2, 16)), torch.randint(0, 13, (2, 16)))
    opt = torch.optim.AdamW(p.param_groups)
    losses = [train_step(model, opt, batch, step=s) for s in range(5)]
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="share one weight"):
        parametrize(make(64, tie_embeddings=True), "sp", base_width=32, lr=1e-3)


def test_base_width_must_fit_the_heads():
    with pytest.raises(ValueError, match="base_width=30 does not fit this GPT: .*n_head"):
        parametrize(make(64), "mup", base_width=30, lr=1e-3)
    with pytest.raises(TypeError, match="base_width must be an int"):
        parametrize(make(64), "mup", base_width=32.0, lr=1e-3)


def test_sp_with_one_global_learning_rate():
    """Standard init (embedding N(0, 1), others N(0, 1/fan_in)), one lr, 1/sqrt(d) attention."""
    torch.manual_seed(0)
    model = make(256)
    p = parametrize(model, "sp", base_width=32, lr=0.01, lr_rule="global")
    assert {g["lr"] for g in p.param_groups} == {0.01}
    assert all((s.a, s.c, s.multiplier) == (0.0, 0.0, 1.0) for s in p.layers)
    assert model.wte.weight.std().item() == pytest.approx(1.0, rel=0.05)
    assert model.blocks[0].mlp.up.weight.std().item() == pytest.approx(256**-0.5, rel=0.05)
    assert model.blocks[0].mlp.down.weight.std().item() == pytest.approx(1024**-0.5, rel=0.05)
    assert model.lm_head.weight.std().item() == pytest.approx(256**-0.5, rel=0.05)
    assert model.blocks[0].attn.softmax_scale == pytest.approx(64**-0.5)
    engine_sp = parametrize(make(256), "sp", base_width=32, lr=0.01)  # Everett's per-layer lrs
    hidden = next(s for s in engine_sp.layers if s.name == "blocks.0.mlp.up")
    assert hidden.lr == pytest.approx(0.01 / 8)  # lr ~ 1/n: not what "one lr" means
    mup = parametrize(make(256), "mup", base_width=32, lr=0.01, lr_rule="global")
    assert {g["lr"] for g in mup.param_groups} == {0.01}  # muP's init and multipliers, one lr
    assert next(s for s in mup.layers if s.role == "readout").multiplier == pytest.approx(8**-0.5)
    with pytest.raises(ValueError, match="lr_rule must be one of"):
        parametrize(make(64), "sp", base_width=32, lr=0.01, lr_rule="one")
    with pytest.raises(ValueError, match="share one weight"):
        parametrize(make(64, tie_embeddings=True), "sp", base_width=32, lr=0.01, lr_rule="global")


@pytest.mark.parametrize("name", ["mup", "sp"])
def test_weight_decay_per_step_is_the_same_at_every_width(name):
    """torch's AdamW decays p by lr_g * wd_g per step; optimizer_groups makes it lr * wd.

    With zero gradients Adam's update is exactly 0, so one step is the decay alone."""
    lr, wd = 0.01, 0.5
    for width in (32, 128):
        model = make(width, bias=True)
        p = parametrize(model, name, base_width=32, lr=lr, zero_readout=False)
        groups = optimizer_groups(p, weight_decay=wd)
        before = {n: q.detach().clone() for n, q in model.named_parameters()}
        for q in model.parameters():
            q.grad = torch.zeros_like(q)
        torch.optim.AdamW(groups).step()
        for n, q in model.named_parameters():
            factor = 1 - lr * wd if q.ndim == 2 else 1.0  # matrices decay, vectors do not
            torch.testing.assert_close(q.detach(), before[n] * factor, rtol=1e-6, atol=0)
        hidden = next(g for g in groups if g["name"] == "blocks.0.mlp.up")
        assert hidden["lr"] * hidden["weight_decay"] == pytest.approx(lr * wd)
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        optimizer_groups(p, weight_decay=-1.0)
    with pytest.raises(TypeError, match="param must be an ntk.Parametrization"):
        optimizer_groups(model.parameters(), weight_decay=0.1)


def test_gpt_recipe_is_seed_model_parametrization_and_mup_decay_groups():
    """gpt_recipe = manual_seed(seed); GPT(config); parametrize(...); optimizer_groups(...):
    the same draws in the same order (bitwise), and muP's weight decay in the groups."""
    config = GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_embd=128, n_head=4)
    model, param, groups = gpt_recipe(
        config, "mup", base_width=32, lr=0.01, weight_decay=0.1, seed=3
    )
    torch.manual_seed(3)
    by_hand = GPT(config)
    parametrize(by_hand, "mup", base_width=32, lr=0.01)
    for (name, a), b in zip(model.state_dict().items(), by_hand.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [g["params"] for g in groups] == [g["params"] for g in param.param_groups]
    hidden = next(g for g in groups if g["name"] == "blocks.0.mlp.up")
    assert hidden["lr"] * hidden["weight_decay"] == pytest.approx(0.01 * 0.1)
    assert next(g for g in groups if g["name"] == "rest")["weight_decay"] == 0.0
    one = gpt_recipe(config, "sp", base_width=32, lr=0.01, lr_rule="global", seed=3).param
    assert {g["lr"] for g in one.param_groups} == {0.01}
    with pytest.raises(TypeError, match="config must be an ntk.lm.GPTConfig"):
        gpt_recipe(make(64), "mup", base_width=32, lr=0.01)
    with pytest.raises(ValueError, match="weight_decay must be"):
        gpt_recipe(config, "mup", base_width=32, lr=0.01, weight_decay=-1.0)
