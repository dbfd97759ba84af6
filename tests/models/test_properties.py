"""Property-based tests of the finite-width models.

Any valid architecture gives finite outputs on finite inputs; training the ensemble either
returns finite losses and parameters or stops with `TrainingDivergedError` at the step where
the loss left the floats (the readout untouched by `train_readout`); invalid arguments raise
errors that name them.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ntk.models import MLPEnsemble, WideMLP, WideMLP_MuP
from ntk.training import TrainingDivergedError
from tests.strategies import assert_names, bad_count, bad_name, bad_std, matrices

ACTIVATIONS = ["relu", "erf", "tanh", "gelu", "sigmoid", "identity"]
ARCH = dict(
    in_features=st.integers(1, 4),
    width=st.integers(1, 64),
    out_features=st.integers(1, 3),
    depth=st.integers(0, 3),
    activation=st.sampled_from(ACTIVATIONS),
    weight_std=st.floats(0.0, 3.0),
    bias_std=st.floats(0.0, 3.0),
)


@given(data=st.data(), arch=st.fixed_dictionaries(ARCH), p=st.sampled_from(["sp", "ntk"]))
def test_wide_mlps_are_finite_on_finite_inputs(data, arch, p):
    x = data.draw(matrices(cols=(arch["in_features"],) * 2, dtype=torch.float32))
    net = WideMLP(**arch, parametrization=p)
    out = net(x)
    assert out.shape == (len(x), arch["out_features"]) and torch.isfinite(out).all()
    if arch["depth"] >= 1:
        mup_net = WideMLP_MuP(**arch, base_width=8)
        assert torch.isfinite(mup_net(x)).all()


@given(data=st.data(), arch=st.fixed_dictionaries(ARCH), p=st.sampled_from(["sp", "ntk"]))
def test_ensembles_are_finite_and_match_their_members(data, arch, p):
    x = data.draw(matrices(cols=(arch["in_features"],) * 2, dtype=torch.float64))
    ens = MLPEnsemble(
        3, **arch, parametrization=p, dtype=torch.float64, seed=data.draw(st.integers(0, 9))
    )
    out = ens(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(ens.member(2)(x), out[2].detach(), rtol=1e-10, atol=1e-8)
    assert torch.isfinite(ens.empirical_nngp(x)).all()


@given(
    lr=st.floats(1e-3, 1e9),
    steps=st.integers(1, 40),
    y_scale=st.sampled_from([1.0, 1e6]),
    p=st.sampled_from(["sp", "ntk"]),
)
def test_readout_training_is_finite_or_stops_at_the_diverging_step(lr, steps, y_scale, p):
    ens = MLPEnsemble(4, 2, 32, depth=1, bias_std=0.5, parametrization=p, dtype=torch.float64)
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = y_scale * torch.sin(x[:, 0])
    before = [w.detach().clone() for w in ens.parameters()]
    try:
        losses = ens.train_readout(x, y, learning_rate=lr, steps=steps)
    except TrainingDivergedError as err:
        assert 0 <= err.step <= steps and not math.isfinite(err.loss)
        for w, w0 in zip(ens.parameters(), before, strict=True):
            assert torch.equal(w, w0)  # nothing written
        return
    assert losses.shape == (steps,) and torch.isfinite(losses).all()
    assert all(torch.isfinite(w).all() for w in ens.parameters())


@given(lr=st.floats(1e-3, 1e6), steps=st.integers(0, 15), p=st.sampled_from(["sp", "ntk"]))
def test_full_training_is_finite_or_stops_at_the_diverging_step(lr, steps, p):
    ens = MLPEnsemble(3, 2, 16, depth=2, parametrization=p, dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    try:
        losses = ens.train_gd(x, x[:, :1] ** 2, learning_rate=lr, steps=steps)
    except TrainingDivergedError as err:
        assert 0 <= err.step <= steps and not math.isfinite(err.loss)
        return
    assert losses.shape == (steps + 1, 3) and torch.isfinite(losses).all()


@given(
    noise=st.floats(0.0, 10.0),
    jitter=st.floats(0.0, 1e-3),
    duplicate=st.booleans(),
)
def test_posterior_samples_are_finite_or_refuse_a_singular_gram(noise, jitter, duplicate):
    ens = MLPEnsemble(3, 2, 16, depth=1, bias_std=0.2, dtype=torch.float64)
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    if duplicate:
        x = torch.cat([x, x[:1]])
    y = torch.randn(len(x), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    try:
        ens.sample_readout_posterior(x, y, noise, jitter=jitter)
    except ValueError as err:
        assert "singular" in str(err) and noise == 0
        return
    assert all(torch.isfinite(w).all() for w in ens.parameters())


BAD_MODEL_ARGS = {
    "in_features": bad_count(),
    "width": bad_count(),
    "out_features": bad_count(),
    "depth": bad_count(minimum=0),
    "weight_std": bad_std(),
    "bias_std": bad_std(),
    "parametrization": bad_name(),
    "activation": st.sampled_from(["swishy", 3, None]),
}


@given(data=st.data(), name=st.sampled_from(sorted(BAD_MODEL_ARGS)))
def test_bad_model_arguments_are_named(data, name):
    value = data.draw(BAD_MODEL_ARGS[name])
    args = {"in_features": 2, "width": 8, name: value}
    with pytest.raises((TypeError, ValueError)) as err:
        WideMLP(**args)
    assert_names(err, name)
    with pytest.raises((TypeError, ValueError)) as err:
        MLPEnsemble(2, **args)
    assert_names(err, name)


BAD_ENSEMBLE_ARGS = {
    "n_members": bad_count(),
    "seed": st.one_of(st.floats(), st.just(-1), st.just("0"), st.just(True)),
    "dtype": st.sampled_from(["float32", torch.int32, torch.complex64, None]),
}


@given(data=st.data(), name=st.sampled_from(sorted(BAD_ENSEMBLE_ARGS)))
def test_bad_ensemble_arguments_are_named(data, name):
    args = {"n_members": 2, "in_features": 2, "width": 4}
    args[name] = data.draw(BAD_ENSEMBLE_ARGS[name])
    with pytest.raises((TypeError, ValueError)) as err:
        MLPEnsemble(**args)
    assert_names(err, name)


@given(
    bad=st.sampled_from(["nan", "complex", "features", "members", "rows"]),
    which=st.sampled_from(["x", "x_train", "y_train"]),
)
def test_bad_ensemble_data_is_named(bad, which):
    ens = MLPEnsemble(2, 3, 8)
    x, y = torch.randn(4, 3), torch.randn(4)
    value = {
        "nan": {"x": x * math.nan, "x_train": x * math.nan, "y_train": y * math.nan},
        "complex": {
            "x": torch.complex(x, x),
            "x_train": torch.complex(x, x),
            "y_train": torch.complex(y, y),
        },
        "features": {"x": x[:, :2], "x_train": x[:, :2], "y_train": y[:, None].expand(4, 2)},
        "members": {"x": x.expand(3, 4, 3), "x_train": x[None], "y_train": y[None, None]},
        "rows": {"x": x[:0], "x_train": x[:0], "y_train": y[:3]},
    }[bad][which]
    with pytest.raises((TypeError, ValueError)) as err:
        if which == "x":
            ens(value)
        elif which == "x_train":
            ens.train_readout(value, y, steps=1)
        else:
            ens.sample_readout_posterior(x, value)
    assert_names(err, which)
