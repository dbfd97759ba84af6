"""Tied embedding/readout: one matrix, one init, one lr, the readout's multiplier (as mup's
MuSharedReadout), derived from the abc-symmetry; refused when no representative exists."""

from __future__ import annotations

import mup
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ntk.scaling.abc_rules import ABC, abc_table
from ntk.scaling.parametrization import Parametrization, ParametrizationConfig
from ntk.scaling.tying import symmetry_invariant, tie_exponents

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB, BASE = 23, 16
LAYERS = {"embed": "embedding", "hidden": "hidden", "head": "readout"}


class TiedLM(nn.Module):
    def __init__(self, width: int, mup_readout: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.hidden = nn.Linear(width, width)
        if mup_readout:
            self.head = mup.MuSharedReadout(self.embed.weight, bias=False)
        else:
            self.head = nn.Linear(width, VOCAB, bias=False)
            self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.hidden(self.embed(tokens))))


def _tie(name: str, opt: str) -> list[ABC]:
    emb, _, readout = abc_table(name, opt, "full", ["embedding", "hidden", "readout"])
    return tie_exponents([emb, readout], ["embedding", "readout"], ["embed", "head"], opt)


def test_representatives_from_the_symmetry():
    # muP + Adam: (-1/2, 1/2, 1/2) ~ (0, 0, 0) and (1/2, 1/2, 1/2) ~ (1, 0, 0)
    assert _tie("mup", "adam") == [ABC(0.0, 0.0, 0.0), ABC(1.0, 0.0, 0.0)]
    # muP + SGD: one matrix with lr ~ n (MuSGD's vector-like rule), readout multiplier n^-1
    assert _tie("mup", "sgd") == [ABC(0.0, 0.0, -1.0), ABC(1.0, 0.0, -1.0)]
    assert _tie("mfp", "adam") == [ABC(0.0, 0.0, 0.0), ABC(1.0, 0.0, 0.0)]
    for name, opt, what in [
        ("sp", "adam", "b - c"),
        ("ntk", "adam", "b - c"),
        ("sp", "sgd", "2b - c"),
    ]:
        with pytest.raises(ValueError, match=rf"{what} differs.*Untie.*tie_word_embeddings"):
            _tie(name, opt)
    # the shift keeps the invariants and a + b (the function at init)
    emb, _, readout = abc_table("mup", "adam", "full", ["embedding", "hidden", "readout"])
    for before, after in zip([emb, readout], _tie("mup", "adam"), strict=True):
        assert symmetry_invariant(before, "adam") == symmetry_invariant(after, "adam")
        assert before.a + before.b == after.a + after.b


def test_tied_mup_is_one_matrix_with_the_embeddings_init_and_lr():
    specs = {}
    for width in (64, 256):
        torch.manual_seed(0)
        model = TiedLM(width)
        cfg = ParametrizationConfig("mup", layers=LAYERS, base_width=BASE, lr=0.01)
        param = Parametrization(model, cfg)
        spec = {s.name: s for s in param.layers}
        specs[width] = spec
        assert model.head.weight is model.embed.weight  # still one tensor
        assert (spec["embed"].a, spec["embed"].b, spec["embed"].c) == (0.0, 0.0, 0.0)
        assert (spec["head"].a, spec["head"].b, spec["head"].c) == (1.0, 0.0, 0.0)
        assert spec["head"].multiplier == pytest.approx(BASE / width)  # MuSharedReadout's 1/m
        assert spec["embed"].multiplier == 1.0
        # one std for both rows: the readout's SP std at the base width, constant in width
        assert spec["embed"].init_std == spec["head"].init_std == pytest.approx(BASE**-0.5)
        w = model.embed.weight
        assert w.std().item() == pytest.approx(BASE**-0.5, rel=5 * (2 * w.numel()) ** -0.5)
        groups = [g for g in param.param_groups if any(p is w for p in g["params"])]
        assert len(groups) == 1 and groups[0]["lr"] == 0.01 and groups[0]["tied"] == ["head"]
        assert "tied with head" in param.table().set_index("name").loc["embed", "note"]
    # base_std sets the tied matrix's std at the base width (e.g. GPT-2's 0.02)
    torch.manual_seed(0)
    model = TiedLM(64)
    cfg = ParametrizationConfig("mup", layers=LAYERS, base_width=BASE, base_std={"embed": 0.02})
    Parametrization(model, cfg)
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_tied_mup_trains_exactly_like_mups_shared_readout():
    """Same weights, Adam: our tied parametrization and mup's MuSharedReadout + MuAdam follow
    the same trajectory (float64; the gradients coincide, so Adam's eps does not matter)."""
    width, lr = 64, 3e-3
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        mine = TiedLM(width)
        cfg = ParametrizationConfig("mup", layers=LAYERS, base_width=BASE, lr=lr)
        param = Parametrization(mine, cfg)
        ref = TiedLM(width, mup_readout=True)
        mup.set_base_shapes(ref, TiedLM(BASE, True), delta=TiedLM(2 * BASE, True))
        ref.load_state_dict({k.replace(".module", ""): v for k, v in mine.state_dict().items()})
        tokens, targets = torch.randint(0, VOCAB, (8, 5)), torch.randint(0, VOCAB, (8, 5))
        losses = []
        for model, opt in [
            (mine, torch.optim.Adam(param.param_groups)),
            (ref, mup.MuAdam(ref.parameters(), lr=lr)),
        ]:
            run = []
            for _ in range(6):
                loss = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.append(loss.item())
            losses.append(torch.tensor(run))
    finally:
        torch.set_default_dtype(torch.float32)
    assert losses[0][-1] < losses[0][0]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=0)


def test_tie_refusals_and_custom_exponents():
    with pytest.raises(ValueError, match=r"share one weight.*b - c differs.*Untie"):
        Parametrization(TiedLM(64), ParametrizationConfig("sp", layers=LAYERS, base_width=BASE))
    # listing one role only would change the shared matrix by that role: refused
    with pytest.raises(ValueError, match=r"'head'.*shared with embed.weight.*list both"):
        Parametrization(
            TiedLM(64), ParametrizationConfig(layers={"hidden": "hidden", "head": "readout"})
        )
    with pytest.raises(ValueError, match="zero_readout.*tied"):
        cfg = ParametrizationConfig("mup", layers=LAYERS, base_width=BASE, zero_readout=True)
        Parametrization(TiedLM(64), cfg)
    # SP-like tied weights stated as custom exponents with one b and c: accepted
    model = TiedLM(64)
    cfg = ParametrizationConfig(
        None, layers=LAYERS, base_width=BASE, a=[0, 0, 0.5], b=[0, 0.5, 0], c=[0, 1, 0]
    )
    param = Parametrization(model, cfg)
    assert [s.multiplier for s in param.layers] == [1.0, 1.0, pytest.approx(0.5)]
