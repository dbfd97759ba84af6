"""MLPEnsemble: many independent MLPs at once, against WideMLP, the analytic NNGP and GD."""

import math

import numpy as np
import pytest
import torch

from ntk.chapters import gaussian_processes as gpd
from ntk.kernels import MLPKernel, gp_posterior
from ntk.models import MLPEnsemble
from ntk.training import train

F64 = torch.float64


@pytest.mark.parametrize("parametrization", ["ntk", "sp", "standard"])
def test_ensemble_members_are_wide_mlps(parametrization):
    ens = MLPEnsemble(
        3,
        4,
        16,
        out_features=2,
        depth=2,
        activation="erf",
        weight_std=1.3,
        bias_std=0.4,
        parametrization=parametrization,
        dtype=F64,
    )
    x = torch.randn(5, 4, dtype=F64)
    out = ens(x)
    assert out.shape == (3, 5, 2)
    for i in range(3):
        torch.testing.assert_close(ens.member(i)(x), out[i].detach())
    # per-member inputs (E, N, d) give the same result as shared inputs
    torch.testing.assert_close(ens(x.expand(3, -1, -1)), out)


def test_ensemble_nngp_matches_analytic_kernel():
    # One hidden layer: E[K_hat] = K exactly; the mean over 2000 networks is within ~1%.
    ens = MLPEnsemble(2000, 3, 128, depth=1, weight_std=1.5, bias_std=0.3, dtype=F64, seed=1)
    x = torch.randn(4, 3, dtype=F64)
    k = MLPKernel(1, "relu", 1.5, 0.3).nngp(x)
    torch.testing.assert_close(ens.empirical_nngp(x).mean(0), k, rtol=0.02, atol=0.02)
    torch.testing.assert_close(ens.conditional_variance(x).mean(0), k.diagonal(), rtol=0.02, atol=0)
    # the outputs' covariance over networks is the same kernel (Monte Carlo: looser)
    out = ens(x)[..., 0].detach()
    torch.testing.assert_close(out.T @ out / 2000, k, rtol=0.15, atol=0.1)


def test_readout_posterior_interpolates_and_is_the_gradient_descent_limit():
    # five points spread on the circle: a well-conditioned feature Gram, so 20k GD steps converge
    angle = torch.arange(5, dtype=F64) * (2 * math.pi / 5)
    x = torch.stack([angle.cos(), angle.sin()], dim=1)
    y = torch.randn(5, dtype=F64, generator=torch.Generator().manual_seed(0))
    ens = MLPEnsemble(4, 2, 64, depth=1, bias_std=0.5, dtype=F64, seed=3)
    ens_gd = MLPEnsemble(4, 2, 64, depth=1, bias_std=0.5, dtype=F64, seed=3)  # same draw
    ens.sample_readout_posterior(x, y, noise_var=0.0, jitter=0.0)
    torch.testing.assert_close(ens(x)[..., 0].detach(), y.expand(4, -1), atol=1e-8, rtol=0)
    losses = ens_gd.train_readout(x, y, learning_rate=2.0, steps=20_000)
    assert losses[-1] < 1e-12 < losses[0]
    x_new = torch.randn(7, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ens_gd(x_new), ens(x_new), atol=1e-5, rtol=1e-5)


def test_readout_posterior_ensemble_matches_gp_posterior():
    reg = gpd.gp_vs_readout_ensemble(width=512, n_members=256, n_train=6, n_test=21, seed=1)
    assert np.all(np.abs(reg.ens_mean - reg.gp_mean) < 0.35 * reg.gp_std + 1e-3)
    assert np.all(np.abs(reg.ens_std / reg.gp_std - 1) < 0.3)


def test_readout_posterior_with_noise_is_a_posterior_draw():
    # Many draws for the *same* hidden layers: their mean is the GP posterior mean with K_hat.
    x, y = torch.randn(4, 2, dtype=F64), torch.randn(4, dtype=F64)
    base = MLPEnsemble(1, 2, 32, depth=1, bias_std=0.2, dtype=F64, seed=0)
    ens = MLPEnsemble(4000, 2, 32, depth=1, bias_std=0.2, dtype=F64, seed=1)
    with torch.no_grad():  # copy the hidden layer to every member; readouts stay independent
        ens.weights[0].copy_(base.weights[0].expand_as(ens.weights[0]))
        ens.biases[0].copy_(base.biases[0].expand_as(ens.biases[0]))
    x_test = torch.randn(3, 2, dtype=F64)
    k = base.empirical_nngp(torch.cat([x, x_test]))[0]
    post = gp_posterior(
        k[:4, :4], k[4:, :4], y, k[4:, 4:], diag_reg=0.1, diag_reg_absolute_scale=True
    )
    draws = ens.sample_readout_posterior(x, y, noise_var=0.1)(x_test)[..., 0].detach()
    sd = post.cov.diagonal().sqrt()
    assert torch.all((draws.mean(0) - post.mean).abs() < 5 * sd / math.sqrt(4000))
    assert torch.all((draws.std(0) / sd - 1).abs() < 0.1)


def test_train_gd_matches_training_loop():
    x, y = torch.randn(6, 3, dtype=F64), torch.randn(6, dtype=F64)
    ens = MLPEnsemble(2, 3, 32, depth=2, activation="tanh", dtype=F64, seed=4)
    net = ens.member(1)
    losses = ens.train_gd(x, y, learning_rate=0.5, steps=30)
    hist = train(net, x, y, steps=30, lr=0.5, log_every=30, track_features=False, progress=False)
    assert losses.shape == (31, 2)
    assert hist.train_loss[-1] == pytest.approx(float(losses[-1, 1]), rel=1e-10)
    torch.testing.assert_close(net(x), ens(x)[1].detach())


def test_ensemble_bad_arguments():
    with pytest.raises(ValueError, match="n_members"):
        MLPEnsemble(0, 2, 8)
    with pytest.raises(ValueError, match="parametrization"):
        MLPEnsemble(2, 2, 8, parametrization="mup")
    with pytest.raises(TypeError, match="width"):
        MLPEnsemble(2, 2, 8.0)
    ens = MLPEnsemble(2, 2, 8)
    with pytest.raises(ValueError, match="x must have 2 features"):
        ens(torch.randn(3, 5))
    with pytest.raises(ValueError, match="x must have shape"):
        ens(torch.randn(3, 4, 2))
    with pytest.raises(ValueError, match="noise_var"):
        ens.sample_readout_posterior(torch.randn(3, 2), torch.randn(3), noise_var=-1.0)
    with pytest.raises(ValueError, match="y_train"):
        ens.sample_readout_posterior(torch.randn(3, 2), torch.randn(4))
    with pytest.raises(ValueError, match="index"):
        ens.member(2)
