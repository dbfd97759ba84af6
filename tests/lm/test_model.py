"""The GPT: shapes, causality, RoPE, both ways of growing the width, a reference forward pass."""

import math

import pytest
import torch
import torch.nn.functional as F

from ntk.lm.model import GPT, GPTConfig, apply_rope, cached_rotation, rope_rotation

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(**kw) -> GPTConfig:
    base = dict(vocab_size=11, block_size=16, n_layer=2, n_embd=32, n_head=4)
    return GPTConfig(**{**base, **kw})


def test_shapes_and_parameter_count():
    cfg = tiny()
    model = GPT(cfg)
    logits = model(torch.randint(0, 11, (3, 16)))
    assert logits.shape == (3, 16, 11) and logits.dtype == torch.float32
    C, L, V = 32, 2, 11
    per_block = 4 * C * C + 2 * 4 * C * C + 2 * C  # q k v o, up down, two norm gains
    assert model.num_params() == L * per_block + C + V * C  # + final norm + readout
    assert model.num_params(embedding=True) == model.num_params() + V * C


def test_default_init_is_standard_parametrization():
    torch.manual_seed(0)
    model = GPT(tiny(n_embd=256, n_head=4, vocab_size=64))
    assert model.wte.weight.std().item() == pytest.approx(1.0, rel=0.05)
    assert model.blocks[0].mlp.up.weight.std().item() == pytest.approx(256**-0.5, rel=0.05)
    assert model.blocks[0].mlp.down.weight.std().item() == pytest.approx(1024**-0.5, rel=0.05)
    assert model.lm_head.weight.std().item() == pytest.approx(256**-0.5, rel=0.05)


def test_causal_changing_a_token_never_changes_earlier_logits():
    model = GPT(tiny())
    x = torch.randint(0, 11, (2, 16))
    for t in (0, 5, 15):
        x2 = x.clone()
        x2[:, t] = (x2[:, t] + 1) % 11
        a, b = model(x), model(x2)
        torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
        assert (a[:, t:] - b[:, t:]).abs().amax(-1).min() > 1e-4  # every later position moves


def test_rope_matches_the_rotation_formula_and_keeps_norms():
    x = torch.randn(2, 8, 3, 6, dtype=torch.float64)
    out = apply_rope(x, rope_rotation(8, 6, 10000.0))
    # Su et al. 2021, eq. (34): pair (x_2i, x_2i+1) rotated by the angle t * theta_i
    for t in range(8):
        for i in range(3):
            angle = t * 10000.0 ** (-2 * i / 6)
            c, s = math.cos(angle), math.sin(angle)
            x0, x1 = x[:, t, :, 2 * i], x[:, t, :, 2 * i + 1]
            torch.testing.assert_close(out[:, t, :, 2 * i], c * x0 - s * x1, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(
                out[:, t, :, 2 * i + 1], s * x0 + c * x1, rtol=1e-6, atol=1e-6
            )
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))


def test_rope_scores_depend_on_relative_position_only():
    T, D = 64, 16
    rotation = rope_rotation(T, D, 10000.0)
    q, k = torch.randn(D, dtype=torch.float64), torch.randn(D, dtype=torch.float64)
    rq = apply_rope(q.expand(1, T, 1, D), rotation)[0, :, 0]  # (T, D): q at every position
    rk = apply_rope(k.expand(1, T, 1, D), rotation)[0, :, 0]
    scores = rq @ rk.T  # (T, T): score of q at t and k at s
    for offset in (0, 3, 17, 40):
        diagonal = torch.diagonal(scores, offset=-offset)  # t - s = offset
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), rtol=0, atol=1e-5)
    assert torch.diagonal(scores, -1)[0] != pytest.approx(torch.diagonal(scores, -2)[0].item())


def reference_forward(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The model's forward written out loop by loop: explicit rotations, masked softmax."""
    cfg = model.config
    H, D = cfg.heads
    B, T = idx.shape
    x = model.wte.weight[idx]  # (B, T, C)

    def rope(v):  # (B, T, H, D), pairs rotated by t * theta_i
        out = v.clone()
        for t in range(T):
            for i in range(D // 2):
                a = t * cfg.rope_base ** (-2 * i / D)
                c, s = math.cos(a), math.sin(a)
                out[:, t, :, 2 * i] = c * v[:, t, :, 2 * i] - s * v[:, t, :, 2 * i + 1]
                out[:, t, :, 2 * i + 1] = s * v[:, t, :, 2 * i] + c * v[:, t, :, 2 * i + 1]
        return out

    def norm(v, ln):
        v = (v - v.mean(-1, keepdim=True)) / torch.sqrt(
            v.var(-1, unbiased=False, keepdim=True) + ln.eps
        )
        return v * ln.weight

    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for block in model.blocks:
        att = block.attn
        h = norm(x, block.ln_1)
        q = rope((h @ att.q.weight.T).view(B, T, H, D))
        k = rope((h @ att.k.weight.T).view(B, T, H, D))
        v = (h @ att.v.weight.T).view(B, T, H, D)
        scores = torch.einsum("bthd,bshd->bhts", q, k) * att.softmax_scale
        weights = torch.softmax(scores.masked_fill(~mask, -math.inf), dim=-1)
        y = torch.einsum("bhts,bshd->bthd", weights, v).reshape(B, T, H * D)
        x = x + y @ att.o.weight.T
        h = norm(x, block.ln_2)
        gelu = 0.5 * h @ block.mlp.up.weight.T
        gelu = gelu * (1 + torch.erf((h @ block.mlp.up.weight.T) / math.sqrt(2)))
        x = x + gelu @ block.mlp.down.weight.T
    return norm(x, model.ln_f) @ model.lm_head.weight.T


@pytest.mark.parametrize("heads", [dict(n_head=2), dict(n_head=None, head_dim=4)])
def test_forward_matches_reference_computation(heads):
    torch.manual_seed(1)
    model = GPT(tiny(n_embd=16, block_size=8, **heads)).double()
    with torch.no_grad():  # non-trivial norm gains, so the reference must apply them
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    idx = torch.randint(0, 11, (2, 7))
    torch.testing.assert_close(model(idx), reference_forward(model, idx), rtol=1e-10, atol=1e-10)
    for block in model.blocks:  # the parametrization sets this float: forward must read it
        block.attn.softmax_scale = 0.37
    torch.testing.assert_close(model(idx), reference_forward(model, idx), rtol=1e-10, atol=1e-10)


def test_two_ways_to_grow_the_width():
    for n_embd in (32, 64, 128):
        fixed_dim = GPT(tiny(n_embd=n_embd, n_head=None, head_dim=16)).blocks[0].attn
        assert (fixed_dim.n_head, fixed_dim.head_dim) == (n_embd // 16, 16)
        fixed_heads = GPT(tiny(n_embd=n_embd, n_head=4)).blocks[0].attn
        assert (fixed_heads.n_head, fixed_heads.head_dim) == (4, n_embd // 4)
        for attn in (fixed_dim, fixed_heads):
            assert isinstance(attn.softmax_scale, float)
            assert attn.softmax_scale == pytest.approx(attn.head_dim**-0.5)
    model = GPT(tiny(n_embd=64, n_head=None, head_dim=16))
    assert model(torch.randint(0, 11, (1, 16))).shape == (1, 16, 11)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="exactly one of n_head .* and head_dim"):
        GPTConfig(n_embd=64, n_head=4, head_dim=16)
    with pytest.raises(ValueError, match="exactly one of n_head"):
        GPTConfig(n_embd=64, n_head=None)
    with pytest.raises(ValueError, match=r"n_embd \(60\) must be divisible by GPTConfig.n_head"):
        GPTConfig(n_embd=60, n_head=8)
    with pytest.raises(ValueError, match=r"n_embd \(64\) must be divisible by GPTConfig.head_dim"):
        GPTConfig(n_embd=64, n_head=None, head_dim=24)
    with pytest.raises(ValueError, match="head size must be even"):
        GPTConfig(n_embd=60, n_head=4)
    with pytest.raises(ValueError, match="GPTConfig.n_layer must be >= 1"):
        GPTConfig(n_layer=0)
    with pytest.raises(TypeError, match="GPTConfig.vocab_size must be an int"):
        GPTConfig(vocab_size=256.0)
    with pytest.raises(TypeError, match="GPTConfig.tie_embeddings must be a bool"):
        GPTConfig(tie_embeddings="yes")
    with pytest.raises(ValueError, match="GPTConfig.rope_base must be > 1"):
        GPTConfig(rope_base=1.0)
    with pytest.raises(TypeError, match="config must be a GPTConfig"):
        GPT(dict(n_embd=64))


def test_bad_input_errors():
    model = GPT(tiny())
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[1, 2, 3]])
    with pytest.raises(ValueError, match="shape \\(batch, time\\)"):
        model(torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="sequence length 17 > GPTConfig.block_size \\(16\\)"):
        model(torch.zeros(1, 17, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[0, GPTConfig.vocab_size\) = \[0, 11\)"):
        model(torch.full((1, 4), 11))
    with pytest.raises(ValueError, match="outside"):
        model(torch.tensor([[0, -1]]))


def test_tied_embeddings_share_one_matrix_and_every_parameter_gets_a_gradient():
    for tie in (False, True):
        model = GPT(tiny(tie_embeddings=tie, bias=True))
        assert (model.lm_head.weight is model.wte.weight) == tie
        F.cross_entropy(
            model(torch.randint(0, 11, (2, 16))).flatten(0, 1), torch.randint(0, 11, (32,))
        ).backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        assert unused == []  # DistributedDataParallel needs every parameter used
    assert model.num_params() == model.num_params(embedding=True)  # tied: counted once


def test_state_dict_round_trip_and_float64():
    model = GPT(tiny())
    assert list(model.buffers()) == []  # the RoPE table is cached outside the module
    copy = GPT(tiny())
    copy.load_state_dict(model.state_dict())
    x = torch.randint(0, 11, (2, 16))
    torch.testing.assert_close(copy(x), model(x), rtol=0, atol=0)
    wide = model.double()(x)
    assert wide.dtype == torch.float64
    torch.testing.assert_close(wide.float(), copy(x), rtol=1e-5, atol=1e-5)


# ---- generate ----------------------------------------------------------------------------------
def manual_greedy(model: GPT, idx: torch.Tensor, n: int) -> torch.Tensor:
    for _ in range(n):
        logits = model(idx[:, -model.config.block_size :])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def test_generate_greedy_is_the_argmax_loop_and_top_k_1_is_greedy():
    torch.manual_seed(0)
    model = GPT(tiny(block_size=8))
    prompt = torch.randint(0, 11, (3, 5))
    expected = manual_greedy(model, prompt, 12)  # runs past block_size: the context is cropped
    assert torch.equal(model.generate(prompt, 12, temperature=0.0), expected)
    assert torch.equal(model.generate(prompt, 12, do_sample=False), expected)
    gen = torch.Generator().manual_seed(1)
    assert torch.equal(model.generate(prompt, 12, top_k=1, generator=gen), expected)
    assert torch.equal(model.generate(prompt, 0), prompt)
    # a prompt longer than block_size is kept whole and continued from its last block_size ids
    long = torch.randint(0, 11, (2, 20))
    out = model.generate(long, 3, temperature=0)
    assert out.shape == (2, 23) and torch.equal(out[:, :20], long)
    assert torch.equal(out[:, 12:], manual_greedy(model, long[:, 12:], 3))


def test_generate_samples_from_the_tempered_top_k_softmax():
    """One new token for 20,000 copies of a prompt: its frequencies are softmax(logits / T)
    over the top_k ids (zero elsewhere), within 4 binomial standard deviations."""
    torch.manual_seed(0)
    model = GPT(tiny())
    prompt = torch.randint(0, 11, (1, 6))
    logits = model(prompt)[0, -1].double()
    n, T, k = 20_000, 2.0, 4
    gen = torch.Generator().manual_seed(0)
    out = model.generate(prompt.expand(n, -1), 1, temperature=T, top_k=k, generator=gen)
    counts = torch.bincount(out[:, -1], minlength=11).double()
    top = logits.topk(k).indices
    p = torch.zeros(11, dtype=torch.float64)
    p[top] = torch.softmax(logits[top] / T, 0)
    assert counts[p == 0].sum() == 0
    sd = (n * p * (1 - p)).sqrt()
    assert ((counts - n * p).abs() <= 4 * sd + 1e-9).all()
    # the rival: temperature 1 predicts other frequencies, which these counts reject
    p1 = torch.zeros(11, dtype=torch.float64)
    p1[top] = torch.softmax(logits[top], 0)
    assert ((counts - n * p1).abs() > 4 * (n * p1 * (1 - p1)).sqrt()).any()
    again = model.generate(prompt.expand(n, -1), 1, T, k, generator=gen.manual_seed(0))
    assert torch.equal(again, out)  # a seeded generator reproduces the draws


def test_generate_bad_arguments():
    model = GPT(tiny())
    prompt = torch.zeros(1, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        model.generate(prompt, -1)
    with pytest.raises(TypeError, match="max_new_tokens must be an int"):
        model.generate(prompt, 2.0)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        model.generate(prompt, 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        model.generate(prompt, 2, top_k=0)
    with pytest.raises(TypeError, match="do_sample must be a bool"):
        model.generate(prompt, 2, do_sample=1)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        model.generate(prompt, 2, generator=0)
    with pytest.raises(ValueError, match=r"outside \[0, GPTConfig.vocab_size\)"):
        model.generate(torch.tensor([[11]]), 2)
    with pytest.raises(TypeError, match="idx must be a torch.Tensor"):
        model.generate([[1, 2]], 2)
    with pytest.raises(ValueError, match=r"idx must have shape \(batch, time\)"):
        model.generate(torch.zeros(3, dtype=torch.int64), 2)


def test_cached_rotation_is_the_fresh_table_built_once_per_key():
    fresh = rope_rotation(12, 8, 500.0)
    for dtype, complex_dtype in (
        (torch.float32, torch.complex64),
        (torch.float64, torch.complex128),
    ):
        table = cached_rotation(12, 8, 500.0, torch.device("cpu"), dtype)
        assert table.dtype == dtype and table.shape == (12, 4, 2)  # (cos, sin) pairs
        expected = torch.view_as_real(fresh.to(complex_dtype))
        torch.testing.assert_close(table, expected, rtol=0, atol=0)
        assert cached_rotation(12, 8, 500.0, torch.device("cpu"), dtype) is table  # reused
    with torch.inference_mode():  # built under inference mode, still usable with autograd
        cached_rotation(5, 8, 321.0, torch.device("cpu"), torch.float32)
    x = torch.randn(1, 5, 1, 8, requires_grad=True)
    apply_rope(x, cached_rotation(5, 8, 321.0, torch.device("cpu"), torch.float32)).sum().backward()
    assert x.grad is not None


def test_token_ids_are_checked_on_the_cpu_and_on_request():
    model = GPT(tiny())
    with pytest.raises(ValueError, match=r"token ids in \[0, 11\]"):
        model.check_token_ids(torch.tensor([[0, 11]]))
    model.check_token_ids(torch.tensor([[0, 10]]))  # in range: no error
