"""The GPT's mixture-of-experts MLP and latent attention: dispatch, aux loss, roles, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from ntk.lm.model import GPT, GPTConfig, apply_rope, cached_rotation
from ntk.lm.moe import MoE, moe_aux_loss, routing_entropy
from ntk.lm.parametrize import gpt_layers, parametrize
from ntk.lm.step import lm_loss, train_step
from ntk.scaling import Parametrization, ParametrizationConfig

pytestmark = pytest.mark.usefixtures("single_thread")


def config(n_embd: int = 32, **kw) -> GPTConfig:
    return GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_embd=n_embd, n_head=2, **kw)


def loop_reference(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Token by token, expert by expert, in order, with the capacity's first-come drops."""
    N, C = x.shape
    probs = F.softmax(moe.router(x), -1)
    gates, chosen = probs.topk(moe.top_k, -1)
    out = torch.zeros_like(x)
    counts = torch.bincount(chosen.reshape(-1), minlength=moe.experts)
    cap = moe.capacity(N, counts)
    used = [0] * moe.experts
    for i in range(N):
        for j in range(moe.top_k):
            e = int(chosen[i, j])
            if used[e] < cap:
                h = F.gelu(x[i] @ moe.expert_up.weight[e]) @ moe.expert_down.weight[e]
                out[i] += gates[i, j] * h
            used[e] += 1
    return out


@pytest.mark.parametrize("capacity", [None, 0.5])
def test_batched_dispatch_equals_a_loop_over_tokens(capacity):
    torch.manual_seed(0)
    moe = MoE(32, experts=4, top_k=2, hidden=32, capacity=capacity).double()
    x = torch.randn(2, 8, 32, dtype=torch.float64)
    with torch.no_grad():
        moe.router.weight.mul_(4.0)  # uneven routing, so a capacity of 0.5 drops assignments
        got = moe(x).reshape(16, 32)
        ref = loop_reference(moe, x.reshape(16, 32))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    if capacity is not None:
        assert int(moe.load.max()) > math.ceil(0.5 * 16 * 2 / 4)  # some were dropped


def test_aux_loss_is_one_at_uniform_routing_and_train_step_adds_it():
    torch.manual_seed(0)
    model = GPT(config(moe_experts=4, moe_top_k=1, moe_aux_coef=1.0))
    moe = model.blocks[0].mlp
    with torch.no_grad():
        moe.router.weight.zero_()  # p uniform: f . P = 1/E whatever the load
    x = torch.randint(0, 11, (2, 8))
    logits = model(x)
    assert moe_aux_loss(model).item() == pytest.approx(1.0, abs=1e-6)
    assert routing_entropy(model)["token"] == pytest.approx(1.0, abs=1e-9)
    assert moe_aux_loss(GPT(config())) is None
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loss = train_step(model, opt, (x, x), step=0)
    assert loss == pytest.approx(lm_loss(logits, x).item() + 1.0, abs=1e-5)


def test_latent_attention_equals_two_scale_reference():
    torch.manual_seed(0)
    cfg = config(mla_rank=6, mla_rope_dim=4)
    model = GPT(cfg).double()
    att = model.blocks[0].attn
    x = torch.randn(1, 5, 32, dtype=torch.float64)
    rot = cached_rotation(5, 4, cfg.rope_base, x.device, x.dtype)
    B, T, H, D, R = 1, 5, 2, 16, 4
    c_q, c_kv = att.q_down(x), att.kv_down(x)
    q, k = att.q(c_q).view(B, T, H, D), att.k(c_kv).view(B, T, H, D)
    v = att.v(c_kv).view(B, T, H, D)
    qr = apply_rope(att.q_rope(c_q).view(B, T, H, R), rot)
    kr = apply_rope(att.k_rope(x).view(B, T, 1, R), rot)
    logits = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)
    logits = logits + torch.einsum("bthd,bsd->bhts", qr, kr[:, :, 0]) / math.sqrt(R)
    logits = logits.masked_fill(torch.ones(T, T).triu(1).bool(), -math.inf)
    y = torch.einsum("bhts,bshd->bthd", logits.softmax(-1), v).reshape(B, T, H * D)
    torch.testing.assert_close(att(x, rot), att.o(y), rtol=0, atol=1e-12)


def test_roles_of_router_and_low_rank_projections_are_read_off_the_base_model():
    model = GPT(config(64, moe_experts=4, mla_rank=8))
    layers = gpt_layers(model)
    assert layers["blocks.*.mlp.router"] == "readout"
    assert layers["blocks.*.attn.kv_down"] == "readout"
    assert layers["blocks.*.attn.[qkv]"] == "embedding"
    p = parametrize(model, "mup", base_width=32, lr=1e-2)
    rows = {s.name: s for s in p.layers}
    assert rows["lm_head"].init_std == 0.0  # muP zeroes the LM head ...
    assert rows["blocks.0.mlp.router"].init_std > 0  # ... not the router

    def effective(name):  # the effective weight multiplier * W: its init std and Adam step
        s = rows[name]
        return s.multiplier * s.init_std, s.multiplier * s.lr

    # readouts (router, latent down projections): effective init std and Adam step ~ 1/n
    for name in ("blocks.0.mlp.router", "blocks.0.attn.q_down", "blocks.0.attn.k_rope"):
        std, lr = effective(name)
        assert (std, lr) == pytest.approx((32**-0.5 * 32 / 64, 1e-2 * 32 / 64), rel=1e-12)
    # embeddings (latent up projections, fan-in r = 8): O(1) init and step
    assert effective("blocks.0.attn.k") == pytest.approx((8**-0.5, 1e-2), rel=1e-12)


@pytest.mark.parametrize(
    "pattern, role",
    [("blocks.*.mlp.router", "hidden"), ("blocks.*.mlp.router", "embedding")],
)
def test_a_router_listed_with_an_impossible_role_is_refused(pattern, role):
    make = lambda n: GPT(config(n, moe_experts=4))  # noqa: E731
    model = make(64)
    layers = gpt_layers(model) | {pattern: role}
    with torch.device("meta"):
        base = make(32)
    cfg = ParametrizationConfig("mup", layers=layers, base_model=base)
    with pytest.raises(ValueError, match="router.*shape of a 'readout'"):
        Parametrization(model, cfg)


def test_bad_moe_and_mla_settings_name_the_key():
    cases = [
        (dict(moe_experts=4, moe_top_k=5), "GPTConfig.moe_top_k"),
        (dict(moe_experts=0), "GPTConfig.moe_experts"),
        (dict(moe_experts=4, moe_capacity=0.0), "GPTConfig.moe_capacity"),
        (dict(mla_rank=0), "GPTConfig.mla_rank"),
        (dict(mla_rank=32), "GPTConfig.mla_rank"),
        (dict(mla_rank=4, mla_rope_dim=3), "GPTConfig.mla_rope_dim"),
    ]
    for kw, key in cases:
        with pytest.raises(ValueError, match=key):
            config(**kw)
    model = GPT(config(64, moe_experts=4))
    with pytest.raises(ValueError, match="zero_readout=True would zero the MoE routers"):
        parametrize(model, "mup", base_width=32, lr=1e-2, zero_readout=True)
    with pytest.raises(ValueError, match="zero_readout pattern 'blocks.0.mlp.up'"):
        parametrize(model, "mup", base_width=32, lr=1e-2, zero_readout=["blocks.0.mlp.up"])


@pytest.mark.parametrize(
    "options, key",
    [
        (dict(mla_rank=8, qk_norm=True), "qk_norm"),
        (dict(mla_rank=8, attn_window=4), "attn_window"),
        (dict(mla_rank=8, value_embeds=1), "value_embeds"),
        (dict(moe_experts=4, mlp="relu2"), "GPTConfig.mlp"),
    ],
)
def test_options_that_cannot_combine_are_refused_by_name(options, key):
    with pytest.raises(ValueError, match=key):
        GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_embd=32, n_head=2, **options)
