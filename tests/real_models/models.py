"""Small third-party models with random init (no downloads), and what each one eats.

Each factory returns (model, inputs): a model in eval mode that maps a batch (N, ...) to a
tensor (N, ...) and a batch of N inputs for it. Hugging Face models return `ModelOutput`s, so
they are wrapped to return `.logits` (a practitioner does the same for any tensor tool).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

transformers = __import__("pytest").importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB, SEQ, WIDTH = 11, 4, 16


class Logits(nn.Module):
    """A Hugging Face model whose forward returns `.logits` only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).logits


class LastStep(nn.Module):
    """Sequence model (N, T, d) -> its output at the last step, through a linear readout."""

    def __init__(self, body: nn.Module, width: int, out: int, seq_first: bool = False) -> None:
        super().__init__()
        self.body, self.readout, self.seq_first = body, nn.Linear(width, out), seq_first

    def forward(self, x: Tensor) -> Tensor:
        if self.seq_first:  # the body wants (T, N, d)
            h = self.body(x.transpose(0, 1))
            h = (h[0] if isinstance(h, tuple) else h).transpose(0, 1)
        else:
            h = self.body(x)
            h = h[0] if isinstance(h, tuple) else h
        return self.readout(h[:, -1])


def _tokens(n: int, g: torch.Generator) -> Tensor:
    return torch.randint(0, VOCAB, (n, SEQ), generator=g)


def gpt2(n: int = 3, *, tied: bool = True, width: int = WIDTH, layers: int = 2, **kw):
    cfg = transformers.GPT2Config(
        n_embd=width,
        n_layer=layers,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=SEQ,
        tie_word_embeddings=tied,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
        **kw,
    )
    return Logits(transformers.GPT2LMHeadModel(cfg)).eval(), _tokens(n, _gen())


def bert(n: int = 3):
    cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * WIDTH,
        max_position_embeddings=SEQ,
        num_labels=3,
    )
    return Logits(transformers.BertForSequenceClassification(cfg)).eval(), _tokens(n, _gen())


def vit(n: int = 3):
    cfg = transformers.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * WIDTH,
        num_labels=3,
    )
    model = Logits(transformers.ViTForImageClassification(cfg)).eval()
    return model, torch.randn(n, 3, 8, 8, generator=_gen())


def lstm(n: int = 3, *, batch_first: bool = True):
    body = nn.LSTM(5, WIDTH, batch_first=batch_first)
    model = LastStep(body, WIDTH, 2, seq_first=not batch_first).eval()
    return model, torch.randn(n, SEQ, 5, generator=_gen())


def transformer_encoder(n: int = 3, *, batch_first: bool = True):
    layer = nn.TransformerEncoderLayer(WIDTH, 2, 2 * WIDTH, dropout=0.0, batch_first=batch_first)
    body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    model = LastStep(body, WIDTH, 2, seq_first=not batch_first).eval()
    return model, torch.randn(n, SEQ, WIDTH, generator=_gen())


def _gen() -> torch.Generator:
    torch.manual_seed(0)  # the model's init
    return torch.Generator().manual_seed(1)  # its inputs


def brute_force_ntk(model: nn.Module, x: Tensor) -> Tensor:
    """J J^T / K from one backward pass per output of the batched forward f(X) (N, K):
    the definition, with no per-example vmap, no forward-mode AD, no structure. J is in the
    model's dtype; the product is accumulated in float64, so that the reference adds no
    rounding of its own to the comparison."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = model(x).reshape(len(x), -1)
    rows = []
    for i in range(out.shape[0]):
        for k in range(out.shape[1]):
            grads = torch.autograd.grad(out[i, k], params, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat(
                    [
                        (torch.zeros_like(p) if g is None else g).reshape(-1)
                        for g, p in zip(grads, params, strict=True)
                    ]
                )
            )
    jac = torch.stack(rows).reshape(out.shape[0], -1).double()  # (N, K * P)
    return (jac @ jac.T / out.shape[1]).to(out.dtype)
