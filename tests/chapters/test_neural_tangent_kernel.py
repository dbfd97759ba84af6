"""Chapter 02 (ntk.chapters.neural_tangent_kernel): the experiment functions."""

import dataclasses

import pytest
import torch

from ntk.chapters import neural_tangent_kernel as ntp
from ntk.kernels import gradient_descent_mse

F64 = torch.float64


def test_discrete_gd_kernels_reproduce_gradient_descent():
    n, m, lr = 5, 3, 0.7
    a = torch.randn(n + m, n + m, dtype=F64)
    theta = a @ a.T + 0.5 * torch.eye(n + m, dtype=F64)  # a PSD kernel on train + test
    theta = theta * (n / torch.linalg.eigvalsh(theta[:n, :n]).max())  # lr * lam_max / N = lr
    y, f0 = torch.randn(n, dtype=F64), torch.randn(n + m, dtype=F64)
    tilde, tilde_tx = ntp.discrete_gd_kernels(theta[:n, :n], theta[n:, :n], lr)
    got = gradient_descent_mse(
        tilde, tilde_tx, y, f0[:n], f0[n:], t=torch.tensor([0.0, 3.0]), learning_rate=lr
    )
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
    change = ntp.ntk_change_vs_width(
        [32, 1024], net=ntp.CHANGE_NETS["erf"], steps=50, n_networks=3, n_train=8
    )
    mean = change.groupby("width").ntk_change.mean()
    assert mean[1024] < mean[32] / 8  # theory: / 32
    assert (change.train_loss < change.initial_loss).all()
    assert change.flip_fraction.between(0, 1).all()


def test_training_trajectories_follow_the_ntk():
    traj = ntp.training_trajectories(512, n_train=8, n_test=8, steps=[0, 4, 32])
    assert traj.network.shape == traj.linearized.shape == traj.ntk_flow.shape == (3, 16)
    errs = ntp.trajectory_errors(traj)
    assert errs.flow_vs_network.iloc[0] == 0 and errs.train_loss.is_monotonic_decreasing
    assert (errs.linearized_vs_network.iloc[1:] < errs.flow_vs_network.iloc[1:]).all()
    torch.testing.assert_close(traj.ensemble_mean[0], torch.zeros(16, dtype=F64))
    eig = ntp.residual_eigendirections(traj)
    assert traj.ntk_init.shape == (8, 8)
    gaps = ntp.eigendirection_errors(eig, top=4)
    assert set(gaps.basis) == {"analytic", "own"}
    assert gaps[gaps.initial.abs() > 0.05].max_gap.max() < 0.3
    # the linearized network follows its own NTK's eigendirections exactly (float32)
    c0 = abs(eig.own_measured[0, :4])
    assert (abs(eig.own_linearized[:, :4] - eig.own_predicted[:, :4]) / c0).max() < 1e-3
    # the residual floor is the kernel's motion: the linearized network (fixed kernel) has none
    floor = ntp.residual_floor(traj, top=4, from_step=4)
    fixed = ntp.residual_floor(
        dataclasses.replace(traj, network=traj.linearized), top=4, from_step=4
    )
    assert fixed < 1e-5 < floor
    with pytest.raises(ValueError, match="from_step"):
        ntp.residual_floor(traj, from_step=64)


def test_trajectory_gap_vs_width():
    gap = ntp.trajectory_gap_vs_width([64, 1024], n_networks=2, n_train=8, n_test=8, steps=[0, 32])
    mean = gap.groupby("width")[["final_gap", "floor"]].mean()
    assert mean.final_gap[1024] < mean.final_gap[64]  # theory: / 4
    assert mean.floor[1024] < mean.floor[64]  # the kernel moves less: theory / 8
