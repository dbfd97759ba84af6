"""Property-based tests of the analytic kernels and the kernel predictions.

For any finite inputs (zero vectors and repeated rows included) and valid network arguments,
the NNGP and NTK are finite, symmetric, positive semi-definite, and the same whichever entry
point computes them (K(x), K(x, x), the diagonal); predictions from them are finite at every
time, or refuse a singular kernel at t = inf with a ValueError. Invalid arguments raise errors
that name the argument.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ntk.kernels import MLPKernel, gp_posterior, gradient_descent_mse, gradient_descent_mse_ensemble
from tests.strategies import assert_names, bad_count, bad_name, bad_std, matrices


@st.composite
def kernels(draw) -> MLPKernel:
    parametrization = draw(st.sampled_from(["ntk", "sp", "standard"]))
    activation = draw(st.sampled_from(["relu", "erf", "gelu", "identity", "tanh"]))
    return MLPKernel(
        depth=draw(st.integers(0, 3)),
        activation=activation,
        weight_std=draw(st.floats(0.0, 3.0)),
        bias_std=draw(st.one_of(st.none(), st.floats(0.0, 3.0))),
        parametrization=parametrization,
        width=draw(st.integers(1, 10_000)),
        quadrature_degree=draw(st.integers(20, 40)),
    )


# Closed forms: arccos(cos) near cos = 1 keeps only half of float64's digits (sqrt(eps) ~ 1.5e-8
# in the angle), which is why the symmetric path takes its diagonal from the O(N) recursion;
# the Gram path K(x, x) agrees with it to that accuracy.
TOL = 1e-7


@given(x=matrices(), kernel=kernels())
def test_kernels_are_finite_symmetric_psd_and_agree_across_entry_points(x, kernel):
    nngp, ntk = kernel.kernels(x)
    diag = kernel.diag(x)
    for k in (nngp, ntk):
        assert torch.isfinite(k).all() and torch.equal(k, k.T)
    assert torch.equal(diag.nngp, nngp.diagonal()) and torch.equal(diag.ntk, ntk.diagonal())
    if kernel._kind == "quadrature":
        # Gauss-Hermite kernels are exact only up to the rule's error (the module docstring's
        # table), large once the nodes do not resolve the activation at the inputs' scale:
        # they are neither exactly PSD nor equal across entry points
        return
    for k in (nngp, ntk):
        scale = k.abs().max().item() + 1e-300
        assert torch.linalg.eigvalsh(k).min() >= -1e-12 * scale * k.shape[0]
    # the Gram path K(x, x) and the symmetric path K(x) agree (zero-variance inputs too)
    both = kernel.kernels(x, x.clone())
    for a, b in ((both.nngp, nngp), (both.ntk, ntk)):
        assert torch.allclose(a, b, rtol=TOL, atol=TOL * (b.abs().max().item() + 1e-300))


@given(x1=matrices(cols=(3, 3)), x2=matrices(cols=(3, 3)), kernel=kernels())
def test_cross_kernels_are_transposes(x1, x2, kernel):
    k12, k21 = kernel.ntk(x1, x2), kernel.ntk(x2, x1)
    assert k12.shape == (len(x1), len(x2)) and torch.isfinite(k12).all()
    if kernel._kind != "quadrature":
        assert torch.allclose(k12, k21.T, rtol=1e-12, atol=1e-12 * k12.abs().max().item())


BAD_KERNEL_ARGS = {
    "depth": bad_count(minimum=0),
    "weight_std": bad_std(),
    "bias_std": bad_std().filter(lambda v: v is not None),
    "parametrization": bad_name(),
    "width": bad_count(),
    "quadrature_degree": st.one_of(bad_count(), st.integers(501, 10**6)),
    "dtype": st.sampled_from([torch.int64, torch.complex128, "float64", None, float]),
    "activation": st.sampled_from(["swish?", 3, None]),
}


@given(data=st.data(), name=st.sampled_from(sorted(BAD_KERNEL_ARGS)))
def test_bad_kernel_arguments_are_named(data, name):
    value = data.draw(BAD_KERNEL_ARGS[name])
    with pytest.raises((TypeError, ValueError)) as err:
        MLPKernel(**{name: value, "width": 8} if name != "width" else {name: value})
    assert_names(err, name)


@given(
    bad=st.sampled_from(["nan", "inf", "complex", "no_features", "no_rows", "vector", "cube"]),
    which=st.sampled_from(["x1", "x2"]),
)
def test_bad_kernel_inputs_are_named(bad, which):
    good = torch.randn(3, 2, dtype=torch.float64)
    x = {
        "nan": torch.tensor([[1.0, math.nan]]),
        "inf": torch.tensor([[math.inf, 1.0]]),
        "complex": torch.complex(good, good),
        "no_features": torch.zeros(3, 0),
        "no_rows": torch.zeros(0, 2),
        "vector": torch.zeros(2),
        "cube": torch.zeros(2, 2, 2),
    }[bad]
    args = (x, good) if which == "x1" else (good, x)
    with pytest.raises((TypeError, ValueError)) as err:
        MLPKernel().ntk(*args)
    assert_names(err, which)


@st.composite
def training_problems(draw):
    """NTK/NNGP of a small net on inputs with likely duplicates (singular kernels)."""
    x = draw(matrices(rows=(1, 7), cols=(1, 3), scale=5.0))
    kernel = MLPKernel(depth=draw(st.integers(0, 2)), bias_std=draw(st.sampled_from([0.0, 0.3])))
    n_test = draw(st.integers(1, 3))
    x_test = draw(matrices(rows=(n_test, n_test), cols=(x.shape[1],) * 2, scale=5.0))
    y = torch.tensor(
        draw(st.lists(st.floats(-10, 10), min_size=len(x), max_size=len(x))), dtype=torch.float64
    )
    train, cross = kernel.kernels(x), kernel.kernels(x_test, x)
    return train, cross, kernel.nngp(x_test), y


TIMES = st.one_of(
    st.sampled_from([0.0, 1e-3, 1.0, 1e3, 1e8, 1e12, 1e16, 1e100, 1e300, math.inf, None]),
    st.floats(0.0, 1e300),
)


@given(problem=training_problems(), t=TIMES, diag_reg=st.sampled_from([0.0, 1e-8, 0.1]))
def test_gradient_flow_is_finite_at_every_time_or_refuses_clearly(problem, t, diag_reg):
    (k, theta), (k_tx, theta_tx), k_tt, y = problem
    try:
        pred = gradient_descent_mse_ensemble(
            theta,
            theta_tx,
            y,
            t,
            nngp_train=k,
            nngp_test_train=k_tx,
            nngp_test=k_tt,
            diag_reg=diag_reg,
        )
        f0_test = torch.zeros(len(k_tt), dtype=torch.float64)
        f = gradient_descent_mse(theta, theta_tx, y, torch.zeros_like(y), f0_test, t)
    except ValueError as err:  # documented: t = inf needs an invertible (regularized) kernel
        assert (t is None or t == math.inf) and "not positive definite" in str(err)
        return
    assert torch.isfinite(pred.mean).all() and torch.isfinite(pred.cov).all()
    assert torch.isfinite(f).all()
    # the prediction never leaves the scale of the targets by more than the kernel allows:
    # |mean| <= ||Θ_*X Θ^+|| ||y||, bounded here by the (finite) pseudo-inverse solution
    ridge = diag_reg * theta.diagonal().mean() * torch.eye(len(theta), dtype=theta.dtype)
    limit = theta_tx @ torch.linalg.pinv(theta + ridge, hermitian=True)
    bound = (limit.norm() * y.norm()).item()
    assert pred.mean.abs().max().item() <= 1.01 * bound + 1e-9


@given(problem=training_problems(), diag_reg=st.sampled_from([0.0, 1e-6, 1.0]))
def test_gp_posterior_is_finite_or_refuses_a_singular_kernel(problem, diag_reg):
    (k, _), (k_tx, _), k_tt, y = problem
    try:
        pred = gp_posterior(k, k_tx, y, k_tt, diag_reg=diag_reg)
    except ValueError as err:
        assert "k_train" in str(err) and "not positive definite" in str(err)
        return
    assert torch.isfinite(pred.mean).all() and torch.isfinite(pred.cov).all()


BAD_PREDICT_ARGS = {
    "t": st.one_of(st.floats(max_value=-1e-300), st.just(math.nan), st.just("1"), st.just(True)),
    "learning_rate": st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just("1")),
    "diag_reg": st.one_of(st.floats(max_value=-1e-300), st.just(math.nan)),
    "y_train": st.sampled_from(["nan", "complex", "rows"]),
}


@given(data=st.data(), name=st.sampled_from(sorted(BAD_PREDICT_ARGS)))
def test_bad_prediction_arguments_are_named(data, name):
    x = torch.randn(4, 2, dtype=torch.float64)
    theta = MLPKernel().ntk(x)
    y = torch.randn(4, dtype=torch.float64)
    value = data.draw(BAD_PREDICT_ARGS[name])
    if name == "y_train":
        value = {"nan": y * math.nan, "complex": torch.complex(y, y), "rows": y[:3]}[value]
    kwargs = {"t": 1.0, "y_train": y, name: value}
    with pytest.raises((TypeError, ValueError)) as err:
        gradient_descent_mse_ensemble(theta, theta[:2], **kwargs)
    assert_names(err, name)
