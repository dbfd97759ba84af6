"""Fast tests of the chapter 01-02 experiment code: the MLP ensemble, the experiment functions
of `ntk.gaussian_process_demo` and `ntk.ntk_properties`, and their scripts' command lines."""

import math

import numpy as np
import pytest
import torch

from ntk import gaussian_process_demo as gpd
from ntk import ntk_properties as ntp
from ntk.ensemble import MLPEnsemble
from ntk.kernels import MLPKernel
from ntk.predict import gp_posterior, gradient_descent_mse
from ntk.training import train

F64 = torch.float64


# ----------------------------------------------------------------------------- ensemble


@pytest.mark.parametrize("parametrization", ["ntk", "standard"])
def test_ensemble_members_are_wide_mlps(parametrization):
    ens = MLPEnsemble(3, 4, 16, out_features=2, depth=2, activation="erf", weight_std=1.3,
                      bias_std=0.4, parametrization=parametrization, dtype=F64)  # fmt: skip
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
    post = gp_posterior(k[:4, :4], k[4:, :4], y, k[4:, 4:], diag_reg=0.1,
                        diag_reg_absolute_scale=True)  # fmt: skip
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


# ----------------------------------------------------------------------------- chapter 01


def test_fit_power_law():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    fit = gpd.fit_power_law(x, 3.0 * x**-0.5)
    assert fit.exponent == pytest.approx(-0.5) and fit.prefactor == pytest.approx(3.0)
    assert fit(16.0) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="positive"):
        gpd.fit_power_law(x, -x)


def test_kurtosis_matches_one_layer_theory():
    assert gpd.one_layer_excess_kurtosis(10) == pytest.approx(1.5, rel=1e-6)  # 15 / n for ReLU
    net = dict(activation="erf", weight_std=1.2, bias_std=0.3)
    samples = gpd.sample_outputs([4, 64], n_members=4000, depth=1, seed=2, **net)
    kurt = gpd.kurtosis_vs_width(samples, depth=1, **net)
    np.testing.assert_allclose(kurt.excess_kurtosis, kurt.theory, rtol=0.15)
    assert samples.kernel_var == pytest.approx(float(MLPKernel(1, **net).nngp_diag(samples.x)[0]))


def test_nngp_error_shrinks_with_width():
    errs = gpd.nngp_error_vs_width([16, 1024], n_networks=2, depth=1, seed=0)
    mean = errs.groupby("width").rel_error.mean()
    assert mean[1024] < mean[16] / 4  # theory: / 8


def test_kernel_vs_angle():
    df = gpd.kernel_vs_angle("relu", [1, 3], weight_std=math.sqrt(2), n_angles=7, width=512)
    assert np.allclose(df[df.angle == 0].correlation, 1.0)
    rho = df.pivot(index="angle", columns="depth", values="correlation")
    assert (rho[3] >= rho[1] - 1e-12).all()  # ReLU kernels flatten with depth
    assert (df.empirical - df.correlation).abs().max() < 0.15


def test_analytic_kernel_matches_neural_tangents():
    cfg = dict(depth=2, activation="relu", weight_std=1.3, bias_std=0.2, parametrization="ntk")
    df = gpd.compare_with_neural_tangents([cfg], n_inputs=4)
    assert df.nngp_rel_err.max() < 1e-10 and df.ntk_rel_err.max() < 1e-10


# ----------------------------------------------------------------------------- chapter 02


def test_discrete_gd_kernels_reproduce_gradient_descent():
    n, m, lr = 5, 3, 0.7
    a = torch.randn(n + m, n + m, dtype=F64)
    theta = a @ a.T + 0.5 * torch.eye(n + m, dtype=F64)  # a PSD kernel on train + test
    theta = theta * (n / torch.linalg.eigvalsh(theta[:n, :n]).max())  # lr * lam_max / N = lr
    y, f0 = torch.randn(n, dtype=F64), torch.randn(n + m, dtype=F64)
    tilde, tilde_tx = ntp.discrete_gd_kernels(theta[:n, :n], theta[n:, :n], lr)
    got = gradient_descent_mse(tilde, tilde_tx, y, f0[:n], f0[n:], t=torch.tensor([0.0, 3.0]),
                               learning_rate=lr)  # fmt: skip
    # explicit GD of the linear model f = f0 + J (w - w0) with J J^T = theta
    f = f0.clone()
    for _ in range(3):
        f = f - (lr / n) * theta[:, :n] @ (f[:n] - y)
    torch.testing.assert_close(got[0], f0[n:])
    torch.testing.assert_close(got[1], f[n:])
    with pytest.raises(ValueError, match="learning_rate"):
        ntp.discrete_gd_kernels(theta[:n, :n], None, 2.0)


def test_ntk_error_and_change_shrink_with_width():
    init = ntp.ntk_error_vs_width([32, 2048], n_networks=2, n_inputs=8)
    mean = init.groupby("width").rel_error.mean()
    assert mean[2048] < mean[32] / 3  # theory: / 8
    change = ntp.ntk_change_vs_width([32, 1024], net=ntp.CHANGE_NETS["erf"], steps=50,
                                     n_networks=3, n_train=8)  # fmt: skip
    mean = change.groupby("width").ntk_change.mean()
    assert mean[1024] < mean[32] / 8  # theory: / 32
    assert (change.train_loss < change.initial_loss).all()


def test_training_trajectories_follow_the_ntk():
    traj = ntp.training_trajectories(512, n_train=8, n_test=8, steps=[0, 4, 32])
    assert traj.network.shape == traj.linearized.shape == traj.ntk_flow.shape == (3, 16)
    errs = ntp.trajectory_errors(traj)
    assert errs.flow_vs_network.iloc[0] == 0 and errs.train_loss.is_monotonic_decreasing
    assert (errs.linearized_vs_network.iloc[1:] < errs.flow_vs_network.iloc[1:]).all()
    torch.testing.assert_close(traj.ensemble_mean[0], torch.zeros(16, dtype=F64))
    gaps = ntp.eigendirection_errors(ntp.residual_eigendirections(traj), top=4)
    assert gaps.max_gap.max() < 0.05


@pytest.mark.parametrize("module", [gpd, ntp])
def test_scripts_have_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "--widths" in capsys.readouterr().out


def test_fit_loglog_slope_skips_unusable_points():
    from ntk.fitting import fit_loglog_slope

    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    y = 5.0 * x**-1.0
    y[2] = np.nan  # a diverged run: left out, not propagated
    assert abs(fit_loglog_slope(x, y) + 1.0) < 1e-12
    with pytest.raises(ValueError, match="at least two"):
        fit_loglog_slope([1.0, 2.0], [1.0, 0.0])
