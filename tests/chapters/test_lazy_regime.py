"""Chapter 03 (ntk.chapters.lazy_regime): the experiment functions."""

import torch

from ntk.chapters import lazy_regime as lr

F64 = torch.float64


def test_gd_prediction_is_gradient_descent_on_the_linear_model():
    n, m, eta, steps = 6, 4, 0.3, 7
    a = torch.randn(n + m, n + m, dtype=F64)
    theta = a @ a.T + 0.1 * torch.eye(n + m, dtype=F64)
    theta = theta * (1.5 * n / torch.linalg.eigvalsh(theta[:n, :n]).max())  # eta lam / N < 1
    y, f0 = torch.randn(n, 1, dtype=F64), torch.randn(n + m, 1, dtype=F64)
    got = lr.gd_prediction(theta[:n, :n], theta[n:, :n], y, f0[:n], f0[n:], eta, steps)
    f = f0.clone()
    for _ in range(steps):  # GD on 0.5 mean((f - y)^2) of f = f0 + J (w - w0), J J^T = theta
        f = f - (eta / n) * theta[:, :n] @ (f[:n] - y)
    torch.testing.assert_close(got, f[n:])


def test_overlap_of_random_weights_is_one_over_d():
    w = torch.randn(20_000, 16, generator=torch.Generator().manual_seed(0))
    u = torch.zeros(16)
    u[3] = 1.0
    assert abs(lr.overlap(w, u) - 1 / 16) < 0.005
    assert lr.overlap(torch.outer(torch.ones(5), u), u) == 1.0


def test_lazy_regime_measures_and_shrinks_with_width():
    lazy = lr.run_lazy_regime((32, 512), steps=30, n_train=16, n_test=16, dim=8)
    t = lazy.table
    assert set(lr.LABELS) <= set(t.columns)
    assert set(lazy.slopes) == set(lr.LABELS)
    w = t.set_index("width")
    assert w["weight_change_hidden.0"][512] < w["weight_change_hidden.0"][32] / 2
    assert w.ntk_distance[512] < w.ntk_distance[32]
    assert lazy.zero_mse > 0 and lazy.dim == 8
    assert (t.overlap_init > 0).all() and (t.overlap_init < 1).all()
