"""`train` on a Hugging Face GPT-2 (token ids in, a `ModelOutput` out) with a user loss."""

import pytest
import torch
import torch.nn.functional as F

from ntk.training import train
from tests.real_models import models as M

pytestmark = pytest.mark.usefixtures("single_thread")


def test_gpt2_learns_to_count_from_token_ids():
    g = torch.Generator().manual_seed(0)
    ids = (torch.randint(0, M.VOCAB, (16, 1), generator=g) + torch.arange(M.SEQ + 1)) % M.VOCAB
    x, y = ids[:, :-1], ids[:, 1:]  # next-token targets
    wrapped, _ = M.gpt2(tied=True)
    model = wrapped.model  # the raw GPT2LMHeadModel: returns a ModelOutput

    def loss_fn(out, targets):
        return F.cross_entropy(out.logits.reshape(-1, M.VOCAB), targets.reshape(-1))

    hist = train(model, x, y, loss_fn=loss_fn, optimizer="adam", lr=3e-3, steps=40, log_every=40)
    assert hist.step == [0, 40] and hist.metric_name == "none"
    assert hist.train_loss[0] == pytest.approx(float(torch.log(torch.tensor(M.VOCAB))), rel=0.1)
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0]
    # the built-in cross-entropy on the wrapped model (a tensor of logits) gives the same start
    torch.manual_seed(0)
    hist2 = train(M.gpt2(tied=True)[0], x, y, loss="cross_entropy", steps=0)
    assert hist2.train_loss[0] == pytest.approx(hist.train_loss[0], rel=1e-6)
    assert 0.0 <= hist2.train_metric[0] <= 1.0
