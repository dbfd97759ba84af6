"""The data sets (ntk.data): deterministic, of the promised structure, with clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from ntk.data import (
    hermite,
    load_digits_task,
    make_low_dim_task,
    point_on_sphere,
    sphere_task,
    toy_regression_task,
)


@pytest.fixture(scope="module")
def digits():
    return load_digits_task(seed=0)


def test_low_dim_task_is_deterministic_and_low_dimensional():
    t1 = make_low_dim_task(n_train=64, n_test=32, dim=10, degree=3, n_directions=2, seed=5)
    t2 = make_low_dim_task(n_train=64, n_test=99, dim=10, degree=3, n_directions=2, seed=5)
    assert torch.equal(t1.x_train, t2.x_train) and torch.equal(t1.y_train, t2.y_train)
    assert t1.x_train.shape == (64, 10) and t1.y_train.shape == (64, 1)
    assert t1.x_test.shape == (32, 10)
    torch.testing.assert_close(t1.x_train.norm(dim=1), torch.full((64,), math.sqrt(10)))
    u = t1.info["directions"]  # (d, r), orthonormal
    torch.testing.assert_close(u.T @ u, torch.eye(2), atol=1e-6, rtol=0)
    z = t1.x_train @ u
    expected = hermite(z, 3).sum(1, keepdim=True) / math.sqrt(2)
    torch.testing.assert_close(t1.y_train, expected, atol=1e-5, rtol=1e-5)
    # another seed, another draw
    other = make_low_dim_task(n_train=64, n_test=32, dim=10, degree=3, n_directions=2, seed=6)
    assert not torch.equal(other.x_train, t1.x_train)


def test_hermite_is_normalized():
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for k in range(5):
        he = hermite(z, k)
        assert he.pow(2).mean().item() == pytest.approx(1.0, abs=0.03)
        if k:
            assert abs(he.mean().item()) < 0.01
    torch.testing.assert_close(hermite(z, 3), (z**3 - 3 * z) / math.sqrt(6))


def test_low_dim_task_noise_and_arguments():
    clean = make_low_dim_task(n_train=50, n_test=20, dim=8, seed=1)
    noisy = make_low_dim_task(n_train=50, n_test=20, dim=8, seed=1, noise=0.5)
    assert torch.equal(clean.y_test, noisy.y_test)
    assert (noisy.y_train - clean.y_train).std().item() == pytest.approx(0.5, rel=0.3)
    with pytest.raises(ValueError, match="n_directions"):
        make_low_dim_task(dim=4, n_directions=5)
    with pytest.raises(ValueError, match="input_dist"):
        make_low_dim_task(input_dist="cube")
    with pytest.raises(TypeError, match="dtype"):  # an int task would truncate x silently
        make_low_dim_task(dtype=torch.int64)
    with pytest.raises(TypeError, match="dtype"):
        load_digits_task(dtype=torch.int32)
    with pytest.raises(TypeError, match="link"):
        make_low_dim_task(link=3)
    with pytest.raises(ValueError, match="link must act elementwise"):
        make_low_dim_task(link=lambda z: z.sum(1))
    with pytest.raises(TypeError, match="test_fraction"):
        load_digits_task("0.2")
    with pytest.raises(ValueError, match="degree"):
        hermite(torch.ones(3), -1)
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        hermite([1.0, 2.0], 2)


def test_digits_task(digits):
    x_tr, y_tr, x_te, y_te = digits
    assert x_tr.shape[1] == 64 and len(x_tr) + len(x_te) == 1797
    assert y_tr.dtype == torch.long and set(y_tr.tolist()) == set(range(10))
    torch.testing.assert_close(x_tr.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    again = load_digits_task(seed=0)
    assert torch.equal(again.x_test, x_te) and torch.equal(again.y_test, y_te)
    one_hot = load_digits_task(seed=0, one_hot=True)
    assert torch.equal(one_hot.y_train.argmax(1), y_tr)


def test_small_tasks_are_deterministic_and_as_described():
    x = point_on_sphere(5, seed=1)
    assert x.shape == (1, 5) and x.norm() ** 2 == pytest.approx(5.0)
    torch.testing.assert_close(point_on_sphere(5, seed=1), x)
    x_tr, y_tr, x_te = sphere_task(12, 7, in_features=3, seed=2)
    assert x_tr.shape == (12, 3) and y_tr.shape == (12,) and x_te.shape == (7, 3)
    assert x_tr.dtype == torch.float64
    torch.testing.assert_close(x_tr.norm(dim=1) ** 2, torch.full((12,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(sphere_task(12, 7, in_features=3, seed=2)[1], y_tr)
    x_tr, y_tr, x_te = toy_regression_task(10, 101, noise=0.0, seed=0)
    assert (x_tr[1:] >= x_tr[:-1]).all() and x_tr.abs().max() <= 2  # sorted, in [-2, 2]
    torch.testing.assert_close(y_tr, torch.sin(2 * x_tr[:, 0]))
    assert x_te[0, 0] == -3 and x_te[-1, 0] == 3 and len(x_te) == 101


def test_digits_is_the_one_cached_default_digits_task():
    from ntk.data import digits as shared

    a, b = shared(one_hot=True), shared(one_hot=True)
    assert a is b  # made once per process
    fresh = load_digits_task(one_hot=True)
    assert torch.equal(a.x_train, fresh.x_train) and torch.equal(a.y_train, fresh.y_train)
    assert shared().y_train.dtype == torch.int64  # class labels by default
    with pytest.raises(TypeError, match="one_hot must be a bool"):
        shared(one_hot=1)
