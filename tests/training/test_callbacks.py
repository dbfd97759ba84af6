"""EMA: the recursion, swapping the average in and out bit for bit, state round trip."""

import pytest
import torch
from torch import nn

from ntk.training import EMA


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_update_is_the_exponential_moving_average():
    model, beta = net(), 0.75
    ema = EMA(model, decay=beta)
    expected = {k: p.detach().clone() for k, p in model.named_parameters()}
    for _ in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model)
        for k, p in model.named_parameters():
            expected[k] = beta * expected[k] + (1 - beta) * p.detach()
    for k, avg in ema.average.items():
        torch.testing.assert_close(avg, expected[k], rtol=1e-6, atol=1e-7)


def test_swapped_restores_the_training_weights_bitwise_even_on_error():
    model = net()
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1).add_(0.01)  # weights that differ from the average by non-dyadic amounts
    ema.update(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 3)
    with ema.swapped(model) as swapped:
        assert swapped is model
        for k, p in model.named_parameters():
            assert torch.equal(p, ema.average[k])
        averaged_out = model(x)
    assert torch.equal(averaged_out, ema.copy_to(net(1))(x))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(RuntimeError, match="inside"):
        with ema.swapped(model):
            raise RuntimeError("inside")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_state_dict_round_trip_and_mismatch():
    model = net()
    ema = EMA(model, decay=0.9)
    ema.update(net(3))
    other = EMA(net(4), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.9
    for k in ema.average:
        assert torch.equal(other.average[k], ema.average[k])
    with pytest.raises(ValueError, match=r"missing \[\], extra \['2.bias', '2.weight'\]"):
        EMA(nn.Sequential(nn.Linear(3, 4)), decay=0.5).load_state_dict(ema.state_dict())
    wide = EMA(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)))
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(4, 3\), the model \(5, 3\)"):
        wide.load_state_dict(ema.state_dict())
