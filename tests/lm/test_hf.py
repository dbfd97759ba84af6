"""Hugging Face both ways (`ntk.lm.hf`): a trained, muP-parametrized GPT exported as GPT-NeoX
loads with stock `transformers` and computes our logits (forward and generate); the export
reads back into our GPT; local GPT-2 and Llama checkpoints (written here with save_pretrained
from small random configs, no download) come under muP with their function unchanged."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)
from transformers.utils import logging as hf_logging

from ntk.lm.hf import export_neox, gpt_from_neox, parametrize_pretrained
from ntk.lm.model import GPT, GPTConfig
from ntk.lm.parametrize import parametrize

pytestmark = pytest.mark.usefixtures("single_thread")
hf_logging.set_verbosity_error()

VOCAB = 29


def trained_gpt(tied: bool, bias: bool) -> tuple[GPT, object, torch.Tensor]:
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=VOCAB, block_size=24, n_layer=2, n_embd=48, n_head=4, tie_embeddings=tied,
        bias=bias, rope_base=500.0,
    )  # fmt: skip
    model = GPT(cfg)
    # base width 16 (heads of 4): readout x1/3, attention scale x(4/12)^(1/2): not powers of 2
    param = parametrize(model, "mup", base_width=16, lr=3e-2)
    x = torch.randint(0, VOCAB, (3, 20))
    opt = torch.optim.Adam(param.param_groups)
    for _ in range(4):  # so that the zero-initialized query and readout are not zero
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, param, x


@pytest.mark.parametrize(
    ("tied", "bias"), [(False, False), (True, True)], ids=["untied", "tied-bias"]
)
def test_exported_gpt_loads_in_stock_transformers_with_our_logits(tied, bias, tmp_path):
    model, param, x = trained_gpt(tied, bias)
    assert any(s.multiplier != 1 for s in param.layers) and param.attention
    export_neox(model, param, tmp_path)
    stock = AutoModelForCausalLM.from_pretrained(tmp_path)  # stock transformers
    assert type(stock) is GPTNeoXForCausalLM
    model.eval()
    with torch.no_grad():
        ours = model(x)
        theirs = stock(x).logits
    assert (theirs - ours).abs().max() < 1e-5, (theirs - ours).abs().max()
    # generate: greedy continuation, scores compared with our logits on the same sequence
    prompt = x[:1, :6]
    out = stock.generate(
        prompt, max_new_tokens=8, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    seq = out.sequences
    with torch.no_grad():
        ours = model(seq)[0, 5:-1]
    theirs = torch.cat(out.logits)
    assert (theirs - ours).abs().max() < 1e-5
    assert torch.equal(seq[0, 6:], ours.argmax(-1))
    # and back into our GPT: the same function, plain (SP-form) weights
    back = gpt_from_neox(tmp_path)
    with torch.no_grad():
        assert (back(x) - model(x)).abs().max() < 1e-5


def test_rope_layout_matters():
    """The rival: without the half-split permutation of q and k the logits differ."""
    import ntk.lm.hf as hf

    model, param, x = trained_gpt(False, False)
    keep = hf._half_split
    try:
        hf._half_split = lambda n_head, head_dim: torch.arange(n_head * head_dim)
        stock = GPTNeoXForCausalLM(hf.neox_config(model.config))
        state = hf.neox_state(
            hf.gpt_tensors(hf.export_state_dict(param, "ln_f"), model.config), model.config
        )
        stock.load_state_dict(state)
    finally:
        hf._half_split = keep
    with torch.no_grad():
        assert (stock(x).logits - model(x)).abs().max() > 1e-3


def test_other_architectures_refused_by_name(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=VOCAB)).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match="model_type is 'gpt2'.*parametrize_pretrained"):
        gpt_from_neox(tmp_path)


def _gpt2(tmp_path):
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=16, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path)


def _llama(tmp_path):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
        tie_word_embeddings=False,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)


def _neox(tmp_path):
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, use_parallel_residual=False, max_position_embeddings=32,
    )  # fmt: skip
    GPTNeoXForCausalLM(cfg).save_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("make", "readout_a"),
    [(_gpt2, 1.0), (_llama, 0.5), (_neox, 0.5)],
    ids=["gpt2-tied", "llama-untied", "neox-untied"],
)
def test_pretrained_checkpoint_under_mup_keeps_its_function(make, readout_a, tmp_path):
    make(tmp_path)
    x = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    stock = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        want = stock(x).logits
    model, param = parametrize_pretrained(tmp_path, "mup", base_width=16, lr=1e-2)
    with torch.no_grad():
        got = model(x).logits
    assert (got - want).abs().max() < 1e-5
    table = param.table()
    readout = table[table.role == "readout"].iloc[0]
    # muP's readout, m = 4: multiplier m^-1/2 in abc form, m^-1 when tied (tying's representative)
    assert readout.multiplier == pytest.approx((16 / 64) ** readout_a)
    hidden = table[table.role == "hidden"]
    assert hidden.lr.tolist() == pytest.approx([1e-2 * 16 / 64] * len(hidden))  # Adam muP: lr / m
    scales = [r["scale_after"] / r["scale_before"] for r in param.attention]
    assert scales and all(s == pytest.approx(0.5) for s in scales)  # (d0/d)^(1/2), d = 4 d0


def test_export_command_writes_a_checkpoint_stock_transformers_loads(tiny, tmp_path):
    """python -m ntk.lm.export RUN OUTDIR on a trained run: our logits from stock transformers;
    a missing run is one line and exit 2."""
    import os
    import subprocess
    import sys

    from ntk.lm.checkpoint import load_model
    from ntk.lm.train import train

    config = tiny("run")
    train(config)
    run, out = config.log.out_dir, tmp_path / "hf"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "ntk.lm.export", str(run), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    model, _, _ = load_model(f"{run}/checkpoint.pt")
    x = torch.randint(0, model.config.vocab_size, (2, 16))
    stock = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert (stock(x).logits - model(x)).abs().max() < 1e-5
    bad = subprocess.run(
        [sys.executable, "-m", "ntk.lm.export", str(tmp_path / "nope"), str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert bad.returncode == 2 and "no checkpoint" in bad.stderr
    assert "Traceback" not in bad.stderr
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    junk = subprocess.run(
        [sys.executable, "-m", "ntk.lm.export", str(tmp_path / "junk.pt"), str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert junk.returncode == 2 and junk.stderr.startswith("python -m ntk.lm.export: error:"), (
        junk.stderr
    )
    assert len(junk.stderr.strip().splitlines()) == 1
    # --ema: the averaged weights, which differ from the last ones
    ema_out = tmp_path / "hf-ema"
    done = subprocess.run([*cmd[:-1], str(ema_out), "--ema"], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    _, _, state = load_model(f"{run}/checkpoint.pt")
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(state["ema"]["average"][name])
        ema_logits = model(x)
        got = AutoModelForCausalLM.from_pretrained(ema_out)(x).logits
        assert (got - ema_logits).abs().max() < 1e-5
        assert (got - stock(x).logits).abs().max() > 1e-4


def test_neox_query_rows_are_the_first_of_each_head():
    """GPT-NeoX fuses q, k, v head by head: zero_query zeroes exactly the q rows of each head."""
    from ntk import Parametrization, ParametrizationConfig
    from ntk.lm.hf import HF_LAYERS

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=256, use_parallel_residual=False,
    )  # fmt: skip
    model = GPTNeoXForCausalLM(cfg)
    config = ParametrizationConfig(
        "mup", layers=HF_LAYERS["gpt_neox"], base_width=16, base_head_dim=4, zero_query=True
    )
    Parametrization(model, config)
    qkv = model.gpt_neox.layers[0].attention.query_key_value.module
    blocks = qkv.weight.view(4, 3, 16, 64)  # (head, q/k/v, head_size, C)
    assert blocks[:, 0].abs().max() == 0 and blocks[:, 1:].abs().min(-1).values.min() > 0
    assert qkv.bias.view(4, 3, 16)[:, 0].abs().max() == 0
