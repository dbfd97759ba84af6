"""Property-based tests of the data sets, the power-law fit and the shared argument checks."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ntk._checks import check_positive_int, check_std
from ntk.data import (
    hermite,
    load_digits_task,
    make_low_dim_task,
    point_on_sphere,
    sphere_task,
    toy_regression_task,
)
from ntk.fitting import fit_power_law, loglog_fit
from tests.strategies import assert_names, bad_count, bad_std


@given(
    n_train=st.integers(1, 40),
    n_test=st.integers(1, 40),
    dim=st.integers(1, 8),
    degree=st.integers(0, 300),
    data=st.data(),
)
def test_low_dim_tasks_are_finite(n_train, n_test, dim, degree, data):
    task = make_low_dim_task(
        n_train,
        n_test,
        dim,
        degree=degree,
        n_directions=data.draw(st.integers(1, dim)),
        noise=data.draw(st.floats(0.0, 10.0)),
        input_dist=data.draw(st.sampled_from(["sphere", "gaussian"])),
        seed=data.draw(st.integers(0, 2**31)),
        dtype=data.draw(st.sampled_from([torch.float32, torch.float64])),
    )
    x, y, x_test, y_test = task
    assert x.shape == (n_train, dim) and y.shape == (n_train, 1) and x_test.shape == (n_test, dim)
    for t in task:
        assert torch.isfinite(t).all()


@given(z=st.floats(-10.0, 10.0), degree=st.integers(0, 500))
def test_normalized_hermite_polynomials_are_finite_at_any_degree(z, degree):
    # Cramer's inequality |He_k(z)| <= K sqrt(k!) e^{z^2 / 4} with K < 1.0865 (Abramowitz &
    # Stegun 22.14.17): the normalized polynomials stay below 1.0865 e^{z^2 / 4} at any degree
    value = hermite(torch.tensor([z], dtype=torch.float64), degree)
    assert torch.isfinite(value).all()
    assert abs(float(value)) <= 1.0865 * math.exp(z * z / 4) * (1 + 1e-9)


BAD_TASK_ARGS = {
    "n_train": bad_count(),
    "n_test": bad_count(),
    "dim": bad_count(),
    "degree": st.one_of(bad_count(minimum=0), st.integers(10_001, 10**9)),
    "n_directions": st.one_of(bad_count(), st.integers(9, 100)),
    "noise": bad_std(),
    "input_dist": st.sampled_from(["uniform", 1, None]),
    "seed": bad_count(minimum=0),
    "dtype": st.sampled_from([torch.int64, "float32", None]),
}


@given(data=st.data(), name=st.sampled_from(sorted(BAD_TASK_ARGS)))
def test_bad_task_arguments_are_named(data, name):
    args = {"n_train": 4, "n_test": 4, "dim": 8, name: data.draw(BAD_TASK_ARGS[name])}
    if name == "noise" and args["noise"] == 1e200:
        return  # a huge noise is a valid std of the labels (finite, documented as std)
    with pytest.raises((TypeError, ValueError)) as err:
        make_low_dim_task(**args)
    assert_names(err, name)


@given(
    call=st.sampled_from(["point", "sphere", "toy", "digits"]),
    value=bad_count(),
)
def test_bad_arguments_of_the_small_tasks_are_named(call, value):
    name, fn = {
        "point": ("in_features", lambda v: point_on_sphere(v)),
        "sphere": ("n_train", lambda v: sphere_task(n_train=v)),
        "toy": ("n_test", lambda v: toy_regression_task(n_test=v)),
        "digits": ("seed", lambda v: load_digits_task(seed=v)),
    }[call]
    if call == "digits" and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return  # 0 is a valid seed (bad_count() draws it as a bad count)
    with pytest.raises((TypeError, ValueError)) as err:
        fn(value)
    assert_names(err, name)


@given(
    exponent=st.floats(-3.0, 3.0),
    prefactor=st.floats(1e-3, 1e3),
    x=st.lists(st.floats(1e-3, 1e4), min_size=2, max_size=8, unique=True),
)
def test_power_laws_are_recovered(exponent, prefactor, x):
    x = np.array(x)
    if np.ptp(np.log(x)) < 1e-3:
        return  # all x (nearly) equal: no slope to find
    fit = fit_power_law(x, prefactor * x**exponent)
    assert fit.exponent == pytest.approx(exponent, abs=1e-6 / np.ptp(np.log(x)))


@given(
    bad=st.sampled_from([0.0, -1.0, math.nan, math.inf]),
    which=st.sampled_from(["x", "y"]),
)
def test_log_log_fits_refuse_points_off_the_positive_axis(bad, which):
    x, y = np.array([1.0, 2.0, 4.0]), np.array([1.0, 0.5, 0.25])
    (x if which == "x" else y)[1] = bad
    with pytest.raises(ValueError) as err:
        loglog_fit(x, y)
    assert_names(err, which)


@given(value=st.one_of(st.integers(), st.floats(), st.text(max_size=3), st.none(), st.booleans()))
def test_shared_checks_return_valid_values_or_name_the_argument(value):
    for check in (lambda v: check_positive_int("count", v), lambda v: check_std("count", v)):
        try:
            out = check(value)
        except (TypeError, ValueError) as err:
            assert "count" in str(err)
        else:
            assert math.isfinite(out) and out >= 0 and not isinstance(out, bool)
