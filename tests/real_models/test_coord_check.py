"""Coordinate checks on Hugging Face models: every tensor of tuple and dict outputs, attention
logits equal to a hand computation, and GPT-2 under muP (flat) and SP (growing updates)."""

import pytest
import torch
import torch.nn.functional as F

from ntk.chapters.coordinate_checks import gpt2_factory, gpt2_groups, hf_lm_loss
from ntk.scaling.coord_check import ROOT, coord_check
from tests.real_models import models as M

pytestmark = pytest.mark.usefixtures("single_thread")


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


def _ce(out, y):
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def test_gpt2_records_tuples_dicts_and_attention_logits():
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model, x = M.gpt2(n=3, **no_dropout)
    df = coord_check(
        lambda w: M.gpt2(n=3, **no_dropout)[0], [M.WIDTH], (x, x), optimizer=_sgd, loss_fn=_ce
    )
    at0 = df[df["step"] == 0].set_index("module")
    # the attention module returns (output, None): its tensor is recorded as attn[0], the
    # output of its last submodule
    assert "model.transformer.last_hidden_state" in at0.index  # a ModelOutput (dict)
    assert at0.loc["model.transformer.h.0.attn[0]", "act_size"] == pytest.approx(
        at0.loc["model.transformer.h.0.attn.resid_dropout", "act_size"], rel=1e-12
    )
    # logits s q k^T of block 0 over the causal triangle, from its c_attn output
    attn, seen = model.model.transformer.h[0].attn, {}
    hook = attn.c_attn.register_forward_hook(lambda m, i, o: seen.setdefault("qkv", o))
    with torch.no_grad():
        model(x)
    hook.remove()
    q, k, _ = seen["qkv"].split(M.WIDTH, dim=-1)
    q, k = (t.reshape(3, M.SEQ, 2, M.WIDTH // 2).transpose(1, 2) for t in (q, k))
    logits = (q @ k.transpose(-2, -1)) * attn.scaling
    causal = torch.ones(M.SEQ, M.SEQ, dtype=torch.bool).tril().expand_as(logits)
    expected = logits[causal].abs().mean().item()
    recorded = at0.loc["model.transformer.h.0.attn.attn_logits"]
    assert recorded["module_type"] == "attn_logits"
    assert recorded["act_size"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("make", [M.bert, M.vit], ids=["bert", "vit"])
def test_bert_and_vit_attention_logits_of_every_layer(make):
    _, x = make()
    y = torch.zeros(len(x), dtype=torch.long)
    df = coord_check(lambda w: make()[0], [M.WIDTH], (x, y), optimizer=_sgd, loss_fn=_ce, steps=1)
    logits = df[df["module_type"] == "attn_logits"]
    assert logits["module"].nunique() == 2  # one per layer
    assert (logits["act_size"] > 0).all()
    assert (logits.query("step == 1")["delta_size"] > 0).all()
    assert f"{ROOT}" in set(df["module"])  # the wrapper returns the logits tensor


def test_gpt2_mup_is_flat_and_sp_updates_grow():
    """GPT-2 at widths 64, 128, 256, 3 seeds, 4 Adam steps (as notebook 07)."""
    vocab, seq = 101, 16
    ids = torch.randint(0, vocab, (8, seq + 1), generator=torch.Generator().manual_seed(0))
    tokens = ids[:, :-1], ids[:, 1:]
    kw = dict(lr=3e-3, base_width=64, head_dim=32, vocab=vocab, seq=seq)
    run = dict(loss_fn=hf_lm_loss, steps=4, seeds=[0, 1, 2], modules=_recorded)
    mup = gpt2_groups(coord_check(gpt2_factory("mup", **kw), [64, 128, 256], tokens, **run))
    sp = gpt2_groups(coord_check(gpt2_factory("sp", **kw), [64, 128, 256], tokens, **run))
    hidden = ["block outputs", "Conv1D layers", "attention and MLP outputs", "LayerNorms"]
    assert mup.loc[hidden].abs().max().max() < 0.1, mup  # measured 0.080
    assert mup.loc[("logits", "delta_size")].abs().max() < 0.1, mup  # measured 0.093
    grow = sp.loc[(["block outputs", "Conv1D layers"], "delta_size"), "min"]
    assert grow.min() > 0.5, sp  # measured 0.71


def _recorded(name: str) -> bool:
    return not name.endswith(".module") and "drop" not in name
