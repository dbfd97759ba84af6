"""The speedrun options of the GPT: off by default (bitwise), sliding windows (FlexAttention =
masked SDPA), the window schedule, muP roles of the new weights, bad input."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ntk.chapters.speedrun_gpt import SPEEDRUN as CHAPTER_OPTIONS
from ntk.lm.attention import causal_attention, window_at, window_mask
from ntk.lm.model import GPT, GPTConfig, apply_rope, cached_rotation
from ntk.lm.parametrize import gpt_layers, gpt_recipe
from ntk.lm.speedrun import truncate_rope, value_embed_blocks

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parents[2]

SPEEDRUN = {**CHAPTER_OPTIONS, "attn_window": 8}  # every option on, chapter 13's


def tiny(**kw) -> GPTConfig:
    base = dict(vocab_size=11, block_size=16, n_layer=3, n_embd=32, n_head=4)
    return GPTConfig(**{**base, **kw})


def nanogpt_forward(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The plain pre-norm nanoGPT forward of before the speedrun options, op for op."""
    cfg, (H, D) = model.config, model.config.heads
    B, T = idx.shape
    x = model.wte(idx)
    rot = cached_rotation(T, D, cfg.rope_base, idx.device, x.dtype)
    for blk in model.blocks:
        h, a = blk.ln_1(x), blk.attn
        q = apply_rope(a.q(h).view(B, T, H, D), rot).transpose(1, 2)
        k = apply_rope(a.k(h).view(B, T, H, D), rot).transpose(1, 2)
        v = a.v(h).view(B, T, H, D).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=a.softmax_scale)
        x = x + a.o(y.transpose(1, 2).reshape(B, T, H * D))
        x = x + blk.mlp.down(F.gelu(blk.mlp.up(blk.ln_2(x))))
    return model.lm_head(model.ln_f(x))


@pytest.mark.parametrize("kw", [{}, {"bias": True, "tie_embeddings": True}])
def test_options_off_leave_the_plain_gpt_bitwise_unchanged(kw):
    torch.manual_seed(0)
    model = GPT(tiny(**kw))
    names = [n for n, _ in model.named_parameters()]
    assert not any(s in n for n in names for s in ("value", "skips", "x0_mix"))
    x = torch.randint(0, 11, (2, 16))
    assert torch.equal(model(x), nanogpt_forward(model, x))
    mup = gpt_recipe(tiny(**kw), "mup", base_width=16, lr=1e-2, seed=0).model
    assert torch.equal(mup(x), nanogpt_forward(mup, x))


@pytest.mark.parametrize("window", [1, 5, 16])
def test_flex_attention_equals_masked_sdpa(window):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 8) for _ in range(3))
    flex = causal_attention(q, k, v, scale=0.3, window=window, impl="flex")
    sdpa = causal_attention(q, k, v, scale=0.3, window=window, impl="sdpa")
    torch.testing.assert_close(flex, sdpa, rtol=0, atol=1e-5)
    # the mask itself: softmax over the window written out
    logits = 0.3 * q @ k.transpose(-1, -2)
    logits = logits.masked_fill(~window_mask(40, window, q.device), float("-inf"))
    torch.testing.assert_close(sdpa, logits.softmax(-1) @ v, rtol=0, atol=1e-5)


def test_window_limits_what_a_position_sees_and_the_model_agrees_across_impls():
    torch.manual_seed(0)
    one_block = GPT(tiny(n_layer=1, attn_window=4)).eval()
    x = torch.randint(0, 11, (2, 16))
    x2 = x.clone()
    x2[:, 6] = (x2[:, 6] + 1) % 11
    moved = (one_block(x) - one_block(x2)).abs().amax(dim=(0, 2))
    assert (moved[6:10] > 1e-4).all() and not moved[:6].any() and not moved[10:].any()
    model = GPT(tiny(**SPEEDRUN, attn_impl="sdpa")).eval()
    with torch.no_grad():
        sdpa = model(x)
        for blk in model.blocks:
            blk.attn.impl = "flex"
        torch.testing.assert_close(model(x), sdpa, rtol=0, atol=1e-5)


def test_window_schedule_grows_to_the_full_window_in_multiples():
    seen = [window_at(s, 100, 16, 112, multiple=16) for s in range(0, 101, 10)]
    assert seen[0] == 16 and seen[-1] == 112
    assert all(w % 16 == 0 for w in seen) and seen == sorted(seen)
    assert window_at(50, 100, 16, 112, multiple=16) == 64  # 16 + 96 / 2
    assert window_at(500, 100, 4, 8) == 8  # past the end: the full window
    with pytest.raises(ValueError, match="end"):
        window_at(0, 10, 8, 4)


def test_speedrun_model_trains_every_weight_and_caps_logits():
    torch.manual_seed(0)
    model = GPT(tiny(**SPEEDRUN))
    logits = model(torch.randint(0, 11, (2, 16)))
    assert logits.abs().max() < 15.0
    logits.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert value_embed_blocks(6, 2) == {0: 0, 1: 1, 4: 0, 5: 1}


def test_truncated_rope_zeroes_the_lowest_frequency_pairs():
    rot = cached_rotation(8, 8, 10000.0, torch.device("cpu"), torch.float32)
    half = truncate_rope(rot, 0.5)
    assert torch.equal(half[:, :2], rot[:, :2])
    assert torch.equal(half[:, 2:, 0], torch.ones(8, 2)) and not half[:, 2:, 1].any()
    assert truncate_rope(rot, 0.5) is half and truncate_rope(rot, 0.0) is rot


def test_mup_roles_of_the_new_weights():
    config = tiny(**SPEEDRUN, n_layer=4)
    model, param, groups = gpt_recipe(config, "mup", base_width=16, lr=1e-2, seed=0)
    assert gpt_layers(model)["value_embeds.*"] == "embedding"
    table = param.table().set_index("name")
    assert table.loc["value_embeds.0", "role"] == "embedding"
    assert table.loc["value_embeds.0", "multiplier"] == pytest.approx(2**0.5)  # m^1/2, m = 2
    (rest,) = [g for g in groups if g["name"] == "rest"]
    scalars = {id(p) for n, p in model.named_parameters() if n.endswith((".a.weight", ".b.weight"))}
    scalars |= {id(s.weight) for s in model.skips}
    assert {id(p) for p in rest["params"]} == scalars and rest["lr"] == 1e-2  # base lr
    # muP's attention scale under QK-norm: sqrt(d0) / d with d = 8, d0 = 4
    assert model.blocks[0].attn.softmax_scale == pytest.approx(4**0.5 / 8)
    # soft-cap of the effective logits: the readout's multiplier is inside the cap
    x = torch.randint(0, 11, (2, 16))
    torch.nn.init.normal_(model.lm_head.weight)
    h = model.ln_f(model._speedrun_blocks(x, model.wte(x), model_rotation(model, x)))
    torch.testing.assert_close(model(x), 15 * torch.tanh(model.lm_head(h) / 15))


def model_rotation(model: GPT, x: torch.Tensor) -> torch.Tensor:
    cfg = model.config
    rot = cached_rotation(x.shape[1], cfg.heads[1], cfg.rope_base, x.device, torch.float32)
    return truncate_rope(rot, cfg.rope_truncate)


@pytest.mark.parametrize(
    "kw, key",
    [
        (dict(attn_window=0), "attn_window"),
        (dict(attn_window=17), "attn_window"),
        (dict(rope_truncate=1.5), "rope_truncate"),
        (dict(rope_truncate=-0.1), "rope_truncate"),
        (dict(value_embeds=2), "value_embeds"),
        (dict(logit_softcap=0.0), "logit_softcap"),
        (dict(logit_softcap=-3.0), "logit_softcap"),
        (dict(mlp="swish"), "mlp"),
        (dict(norm="batch"), "norm"),
        (dict(attn_impl="fast"), "attn_impl"),
    ],
)
def test_bad_options_name_the_field(kw, key):
    with pytest.raises((ValueError, TypeError), match=f"GPTConfig.{key}"):
        tiny(**kw)


def test_flex_refuses_a_cpu_backward_and_set_window_checks():
    model = GPT(tiny(attn_window=4, attn_impl="flex"))
    with pytest.raises(ValueError, match="attn_impl='flex' has no backward on the CPU"):
        model(torch.randint(0, 11, (1, 16)))
    with pytest.raises(ValueError, match="window"):
        model.set_window(17)


def test_speedrun_config_trains_with_a_growing_window_and_resumes_bitwise(corpus_file, tmp_path):
    from ntk.lm.config import load_runs
    from ntk.lm.train import train
    from tests.lm.test_checkpoint import same_run

    def config(out: str, *extra: str):
        overrides = [
            f"data.path={corpus_file}",
            "data.eval_tokens=1024",
            "train.tokens=8192",  # 16 steps of 512 tokens, windows 16 to 64
            "train.tokens_per_step=512",
            "train.eval_every=8",
            "optim.warmup_tokens=1024",
            "checkpoint.every=4",
            "ema.enabled=true",
            "log.progress=false",
            f"log.out_dir={tmp_path / out}",
            *extra,
        ]
        ((_, cfg),) = load_runs(ROOT / "configs" / "speedrun_small.yaml", overrides)
        return cfg

    ref = config("ref")
    assert [ref.window_at(s) for s in (0, 4, 8, 12, 16)] == [16, 32, 48, 64, 64]
    train(ref)
    train(config("part", "train.stop_step=7"))
    train(config("part"))  # resumes from step 7's checkpoint with the window of step 7
    same_run(tmp_path / "ref", tmp_path / "part")


def test_neox_export_refuses_the_speedrun_block():
    from ntk.lm.hf import neox_config

    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="GPT-NeoX has no speedrun block.*qk_norm"):
        neox_config(tiny(qk_norm=True))


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.attn_window=0", "model.attn_window"),
        ("model.attn_window=65", "model.attn_window"),
        ("model.rope_truncate=2", "model.rope_truncate"),
        ("model.value_embeds=3", "model.value_embeds"),
        ("model.logit_softcap=0", "model.logit_softcap"),
        ("model.attn_window_start=128", "model.attn_window_start"),
    ],
)
def test_bad_yaml_options_name_the_key(override, key):
    from ntk.lm.config import load_runs

    with pytest.raises((ValueError, TypeError), match=key):
        load_runs(ROOT / "configs" / "speedrun_small.yaml", [override])
