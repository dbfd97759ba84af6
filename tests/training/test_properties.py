"""Property-based tests of `train`: any finite problem and learning rate gives a finite
History or stops with `TrainingDivergedError` at its step; bad config fields are named."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ntk.models import WideMLP
from ntk.training import TrainConfig, TrainingDivergedError, train
from tests.strategies import assert_names, bad_count, bad_std


@given(
    lr=st.floats(1e-4, 1e7),
    optimizer=st.sampled_from(["sgd", "adam"]),
    steps=st.integers(0, 12),
    batch=st.one_of(st.none(), st.integers(1, 8)),
    loss=st.sampled_from(["half_mse", "cross_entropy"]),
    seed=st.integers(0, 2**31),
)
def test_training_is_finite_or_stops_at_the_diverging_step(lr, optimizer, steps, batch, loss, seed):
    g = torch.Generator().manual_seed(seed)
    x = 10 * torch.randn(8, 3, generator=g)
    y = (
        torch.randint(0, 2, (8,), generator=g)
        if loss == "cross_entropy"
        else torch.randn(8, 2, generator=g)
    )
    model = WideMLP(3, 16, 2, depth=2)
    try:
        hist = train(
            model,
            x,
            y,
            steps=steps,
            lr=lr,
            optimizer=optimizer,
            batch_size=batch,
            loss=loss,
            seed=seed,
        )
    except TrainingDivergedError as err:
        assert 0 <= err.step <= steps and not math.isfinite(err.loss)
        return
    assert all(math.isfinite(v) for v in hist.train_loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


BAD_CONFIG = {
    "steps": bad_count(minimum=0),
    "lr": bad_std().filter(lambda v: v != 1e200),
    "optimizer": st.sampled_from(["adamw", 1]),  # None means "not given" in train()
    "loss": st.sampled_from(["l1", None]),
    "batch_size": st.one_of(st.integers(max_value=0), st.floats(), st.just("8")),
    "log_every": bad_count(),
    "seed": bad_count(minimum=0),
    "track_ntk": st.sampled_from(["yes", 1, None]),
}


@given(data=st.data(), name=st.sampled_from(sorted(BAD_CONFIG)))
def test_bad_config_fields_are_named(data, name):
    x = torch.randn(4, 3)
    with pytest.raises((TypeError, ValueError)) as err:
        train(WideMLP(3, 8), x, x[:, :1], **{name: data.draw(BAD_CONFIG[name])})
    assert_names(err, name)
    with pytest.raises((TypeError, ValueError)) as err:
        TrainConfig(**{name: data.draw(BAD_CONFIG[name])}).validate()
    assert_names(err, name)
