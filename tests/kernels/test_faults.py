"""Kernels and predictions at numerical corners: singular train kernels at any time,
zero-variance inputs, overflowing arguments, complex and feature-less inputs."""

import math

import pytest
import torch

from ntk.kernels import MLPKernel, gradient_descent_mse, gradient_descent_mse_ensemble

F64 = torch.float64
TIMES = [1e10, 1e12, 1e16, 1e100, 1e300]  # tau = t / 8: converged from ~1e9 on


@pytest.fixture
def duplicated():
    """Six distinct inputs, the first two repeated with different targets: a rank-6 (8, 8) NTK.

    Gradient flow cannot fit two targets at one input: on the kernel's range it converges to
    their mean, i.e. to the kernel regression on the six distinct points with averaged targets.
    """
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    x_test = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    kernel = MLPKernel(2, bias_std=0.1)
    i = [0, 1, 2, 3, 4, 5, 0, 1]
    y = torch.randn(8, dtype=F64, generator=torch.Generator().manual_seed(2))
    y_mean = y[:6].clone()
    y_mean[:2] = (y[:2] + y[6:]) / 2
    train, cross = kernel.kernels(x[i]), kernel.kernels(x_test, x[i])
    unique, cross_unique = kernel.kernels(x), kernel.kernels(x_test, x)
    limit = gradient_descent_mse_ensemble(unique.ntk, cross_unique.ntk, y_mean, None)
    return train, cross, y, limit.mean, kernel.nngp(x_test)


@pytest.mark.parametrize("t", TIMES)
def test_a_singular_ntk_gives_the_range_solution_at_any_large_time(duplicated, t):
    train, cross, y, limit, nngp_test = duplicated
    pred = gradient_descent_mse_ensemble(
        train.ntk,
        cross.ntk,
        y,
        t,
        nngp_train=train.nngp,
        nngp_test_train=cross.nngp,
        nngp_test=nngp_test,
    )
    torch.testing.assert_close(pred.mean, limit, rtol=1e-8, atol=1e-10)
    assert torch.isfinite(pred.cov).all()
    f = gradient_descent_mse(train.ntk, cross.ntk, y, torch.zeros(8, dtype=F64), limit * 0, t)
    torch.testing.assert_close(f, limit, rtol=1e-8, atol=1e-10)
    # train outputs: the duplicated points converge to their targets' mean
    f_train = gradient_descent_mse(train.ntk, None, y, torch.zeros(8, dtype=F64), None, t)
    torch.testing.assert_close(f_train[[0, 1]], f_train[[6, 7]], rtol=0, atol=1e-10)
    torch.testing.assert_close(f_train[[0, 1]], (y[:2] + y[6:]) / 2, rtol=1e-8, atol=1e-10)


def test_a_singular_ntk_at_infinite_time_is_a_clear_error(duplicated):
    train, cross, y, *_ = duplicated
    for t in (None, math.inf):
        with pytest.raises(ValueError, match="ntk_train .* not positive definite"):
            gradient_descent_mse_ensemble(train.ntk, cross.ntk, y, t)
    # a ridge makes it invertible
    pred = gradient_descent_mse_ensemble(train.ntk, cross.ntk, y, None, diag_reg=1e-3)
    assert torch.isfinite(pred.mean).all()


def test_an_indefinite_matrix_is_not_a_kernel():
    k = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64)  # eigenvalues 3 and -1
    with pytest.raises(ValueError, match="not positive semi-definite"):
        gradient_descent_mse_ensemble(k, k, torch.ones(2, dtype=F64), 1.0)


def test_relu_ntk_at_zero_variance_is_the_same_from_every_entry_point():
    # bias_std = 0 with biases (sp): the first layer's NNGP is 0 at x = 0, so the ReLU sees a
    # zero-variance input; like neural-tangents we take cos = 0 there, Kdot = 1/4, and
    # Theta = n * 0 + 1 * Kdot * Theta^1 + 1 = 1/4 + 1 with Theta^1 = <x, x> + 1 = 1
    kernel = MLPKernel(1, weight_std=1.0, bias_std=0.0, parametrization="standard", width=100)
    x = torch.zeros(2, 3)
    want = torch.full((2, 2), 1.25, dtype=F64)
    torch.testing.assert_close(kernel.ntk(x), want, rtol=0, atol=0)
    torch.testing.assert_close(kernel.ntk(x, x), want, rtol=0, atol=0)
    torch.testing.assert_close(kernel.ntk_diag(x), want.diagonal(), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(bias_std=1e200), "bias_std"),
        (dict(weight_std=1e300), "weight_std"),
        (dict(width=10**400, parametrization="sp"), "width"),
        (dict(activation="tanh", quadrature_degree=372), "quadrature_degree"),
        (dict(activation="tanh", quadrature_degree=200_000), "quadrature_degree"),
    ],
)
def test_overflowing_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MLPKernel(**kwargs)


def test_complex_and_featureless_inputs_are_refused():
    x = torch.randn(3, 2)
    with pytest.raises(TypeError, match="x1 must be real"):
        MLPKernel().nngp(torch.complex(x, x))
    with pytest.raises(TypeError, match="x2 must be real"):
        MLPKernel().ntk(x, torch.complex(x, x))
    with pytest.raises(ValueError, match="x1 has no features"):
        MLPKernel(depth=3).nngp(torch.zeros(4, 0))
    k = MLPKernel().ntk(x.double())
    with pytest.raises(TypeError, match="y_train must be real"):
        gradient_descent_mse_ensemble(k, k, torch.complex(x[:, 0], x[:, 1]).to(torch.complex128))


# ---- the library edges of issue 24 ---------------------------------------------------------------
def test_a_callable_activation_must_be_an_elementwise_torch_function():
    import numpy as np

    with pytest.raises(ValueError, match=r"activation must be elementwise: .* shape \(1, 3\)"):
        MLPKernel(2, activation=lambda x: x[:1])  # broadcast silently before
    with pytest.raises(ValueError, match="activation failed .* not a numpy one"):
        MLPKernel(2, activation=lambda x: np.tanh(x))
    with pytest.raises(TypeError, match="activation must return a torch.Tensor"):
        MLPKernel(2, activation=lambda x: 1.0)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    by_name = MLPKernel(2, activation="erf").ntk(x)
    as_callable = MLPKernel(2, activation=lambda z: torch.erf(z), quadrature_degree=200).ntk(x)
    torch.testing.assert_close(as_callable, by_name, rtol=1e-6, atol=1e-8)
