"""The empirical NTK of third-party models (Hugging Face GPT-2, BERT, ViT; torch's LSTM and
TransformerEncoder) against a brute-force Jacobian J J^T of the batched forward pass, in every
method each model accepts; clear errors for the methods it does not, for models that mix the
examples of a batch, and for random models."""

import copy
import warnings

import pytest
import torch
from torch import nn

from ntk.kernels import empirical
from ntk.kernels.empirical import empirical_ntk
from ntk.kernels.predict import LinearizedModel
from tests.real_models import models as M

pytestmark = pytest.mark.usefixtures("single_thread")

# model -> the methods it accepts ("auto" always); the others must raise a clear error
CASES = {
    "gpt2_tied": (lambda: M.gpt2(tied=True), {"jacobian"}),
    "gpt2_untied": (lambda: M.gpt2(tied=False), {"jacobian"}),
    "gpt2_eager": (lambda: M.gpt2(attn_implementation="eager"), {"jacobian", "ntvp"}),
    "bert": (M.bert, {"jacobian"}),
    "vit": (M.vit, {"jacobian"}),
    "lstm": (M.lstm, {"jacobian"}),
    "lstm_seq_first": (lambda: M.lstm(batch_first=False), {"jacobian"}),
    "encoder": (M.transformer_encoder, {"jacobian"}),
    "encoder_seq_first": (lambda: M.transformer_encoder(batch_first=False), {"jacobian"}),
}
REFUSALS = {"structured": "linear map", "ntvp": "forward-mode AD"}


def _rel_err(k: torch.Tensor, ref: torch.Tensor) -> float:
    return float((k.double() - ref.double()).abs().max() / ref.double().abs().max())


@pytest.mark.parametrize("case", list(CASES))
def test_agrees_with_brute_force_in_every_method_it_accepts(case):
    make, accepted = CASES[case]
    model, x = make()
    ref = M.brute_force_ntk(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on vmap fallbacks
        for method in ("auto", "jacobian", "ntvp", "structured"):
            if method == "auto" or method in accepted:
                k = empirical_ntk(model, x, method=method)
                assert k.dtype == torch.float32 and k.shape == (len(x), len(x))
                assert _rel_err(k, ref) < 1e-5, (case, method, _rel_err(k, ref))
            else:
                with pytest.raises(ValueError, match=REFUSALS[method]):
                    empirical_ntk(model, x, method=method)


def test_gpt2_full_blocks_and_two_batches():
    model, x = M.gpt2(n=4, tied=True)
    k = empirical_ntk(model, x[:3], x[3:], trace_outputs=False)  # (3, 1, K, K)
    params = list(model.parameters())
    out1, out2 = model(x[:3]).reshape(3, -1), model(x[3:]).reshape(1, -1)

    def jac(out):
        rows = [
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, params, retain_graph=True)])
            for o in out.reshape(-1)
        ]
        return torch.stack(rows).double().reshape(out.shape[0], out.shape[1], -1)

    j1, j2 = jac(out1), jac(out2)
    ref = torch.einsum("nkp,mlp->nmkl", j1, j2)
    assert k.shape == ref.shape
    assert _rel_err(k, ref) < 1e-5


def test_auto_falls_back_to_jacobian_and_says_so_once(monkeypatch):
    model, x = M.gpt2(tied=True)
    ref = M.brute_force_ntk(model, x)
    monkeypatch.setattr(empirical, "MEMORY_BUDGET", 1)  # the Jacobian "does not fit": ntvp
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        k = empirical_ntk(model, x)
    notes = [w for w in caught if "forward-mode AD" in str(w.message)]
    assert len(notes) == 1 and "falling back to method='jacobian'" in str(notes[0].message)
    assert _rel_err(k, ref) < 1e-5


def test_lstm_in_float64_agrees_to_machine_precision():
    model, x = M.lstm()
    model, x = model.double(), x.double()
    ref = M.brute_force_ntk(model, x)
    with pytest.warns(UserWarning, match="does not support torch.func.vmap"):
        k = empirical_ntk(model, x, method="jacobian")
    assert k.dtype == torch.float64
    assert _rel_err(k, ref) < 1e-12


def test_models_that_mix_examples_are_refused_naming_where():
    raw_lstm = M.LastStep(nn.LSTM(5, 8, batch_first=False), 8, 2).eval()
    with pytest.raises(ValueError, match=r"model\.body \(LSTM\), which has batch_first=False"):
        empirical_ntk(raw_lstm, torch.randn(3, 4, 5))
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)  # batch_first=False
    raw_encoder = M.LastStep(nn.TransformerEncoder(layer, 1, enable_nested_tensor=False), 8, 2)
    with pytest.raises(ValueError, match=r"self_attn \(MultiheadAttention\), which has batch_"):
        empirical_ntk(raw_encoder.eval(), torch.randn(3, 4, 8))
    # the same LSTM, fed the layout it expects, is fine (CASES["lstm_seq_first"] checks values)
    fixed = copy.deepcopy(raw_lstm)
    fixed.seq_first = True
    assert empirical_ntk(fixed, torch.randn(3, 4, 5)).shape == (3, 3)


def test_linearized_model_needs_forward_mode_and_says_what_to_do():
    model, x = M.gpt2(tied=True)
    with pytest.raises(NotImplementedError, match="attn_implementation='eager'"):
        LinearizedModel(model)(x)
    eager, _ = M.gpt2(tied=True, attn_implementation="eager")
    torch.testing.assert_close(LinearizedModel(eager)(x), eager(x))  # θ = θ_0: f_lin = f


def test_model_outputs_that_are_not_tensors_are_refused_with_a_hint():
    wrapped, x = M.gpt2(tied=True)
    with pytest.raises(TypeError, match=r"CausalLMOutput.*\.logits"):
        empirical_ntk(wrapped.model, x)
