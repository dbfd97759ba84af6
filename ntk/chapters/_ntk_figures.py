"""Figures of chapter 02 (`ntk.chapters.neural_tangent_kernel`): trajectories, residual
eigendirections and the NTK's change vs width."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ntk.fitting import PowerLaw

if TYPE_CHECKING:
    from ntk.chapters.neural_tangent_kernel import Eigendirections, Trajectories


def plot_trajectories(traj: Trajectories, axes, n_points: int = 3) -> None:
    """Left: test outputs over time, network (dots) vs analytic-NTK prediction (lines) vs the
    infinite-width ensemble band. Right: train loss of network, linearized network, NTK."""
    te = traj.n_train + np.arange(n_points)
    t = np.maximum(traj.steps, 0.5)
    for k, j in enumerate(te):
        color = f"C{k}"
        m, s = traj.ensemble_mean[:, j].numpy(), traj.ensemble_std[:, j].numpy()
        band = "infinite-width ensemble, mean ± 2 std" if k == 0 else None
        axes[0].fill_between(t, m - 2 * s, m + 2 * s, color=color, alpha=0.12, label=band)
        axes[0].plot(
            t,
            traj.ntk_flow[:, j],
            "-",
            color=color,
            label="analytic NTK from the net's f_0" if k == 0 else None,
        )
        axes[0].plot(
            t, traj.network[:, j], "o", color=color, ms=5, label="network" if k == 0 else None
        )
        axes[0].plot(
            t,
            traj.linearized[:, j],
            "x",
            color="k",
            ms=5,
            label="its linearization" if k == 0 else None,
        )
    axes[0].set(
        xscale="log",
        xlabel="gradient-descent step t (0 drawn at 0.5)",
        ylabel="output at 3 test inputs",
        title=f"width {traj.width}: outputs at test inputs",
    )
    axes[0].legend(fontsize=7)
    for name, f in [("network", traj.network), ("linearized network", traj.linearized)]:
        loss = 0.5 * (f[:, : traj.n_train] - traj.y_train).pow(2).mean(1)
        axes[1].loglog(t, loss, "o-" if name == "network" else "x--", label=name)
    flow_loss = 0.5 * (traj.ntk_flow[:, : traj.n_train] - traj.y_train).pow(2).mean(1)
    axes[1].loglog(t, flow_loss, "k:", label="analytic NTK")
    axes[1].set(
        xlabel="gradient-descent step t (0 drawn at 0.5)",
        ylabel="training loss",
        title="training loss",
    )
    axes[1].legend(fontsize=8)


def plot_eigendirections(eig: Eigendirections, axes, top: int = 8) -> None:
    """Left: NTK spectra. Middle and right: |residual| along the top eigendirections of the
    analytic NTK and of the network's own NTK at init, measured (dots) and predicted
    (1 - eta lam_i / N)^t (lines), each relative to its initial component."""
    index = np.arange(1, len(eig.eigenvalues) + 1)
    axes[0].semilogy(index, eig.eigenvalues, "o-", label="analytic NTK")
    axes[0].semilogy(index, eig.own_eigenvalues, "x--", label="the network's NTK at init")
    axes[0].set(xlabel="index i", ylabel="eigenvalue λ_i", title="NTK spectrum (training set)")
    axes[0].legend(fontsize=8)
    t = np.maximum(eig.steps, 0.5)
    panels = [
        (axes[1], eig.measured, eig.predicted, eig.eigenvalues, "the analytic NTK"),
        (
            axes[2],
            eig.own_measured,
            eig.own_predicted,
            eig.own_eigenvalues,
            "the net's NTK at init",
        ),
    ]
    for ax, measured, predicted, lam, title in panels:
        for i in range(top):
            c0 = abs(measured[0, i])
            ax.loglog(
                t,
                np.abs(predicted[:, i]) / c0,
                "-",
                color=f"C{i}",
                label=f"λ_{i + 1} = {lam[i]:.3g}",
            )
            ax.loglog(t, np.abs(measured[:, i]) / c0, "o", color=f"C{i}", ms=4)
        ax.plot([], [], "ko", ms=4, label="dots: measured")
        ax.plot([], [], "k-", label="lines: predicted")
        ax.set(
            xlabel="gradient-descent step t (0 drawn at 0.5)",
            ylabel="residual along u_i / its value at t = 0",
            title=f"residual along eigenvectors of {title}",
            ylim=(1e-6, 3),
        )
        ax.legend(fontsize=6, ncol=2)


def plot_ntk_change(change: dict[str, pd.DataFrame], fits: dict[str, PowerLaw], ax) -> None:
    """Relative NTK change vs width per activation, networks (dots), means and fits."""
    for k, (name, df) in enumerate(change.items()):
        mean = df.groupby("width").ntk_change.mean()
        ax.loglog(df.width, df.ntk_change, ".", color=f"C{k}", alpha=0.35)
        ax.loglog(mean.index, mean.values, "o", color=f"C{k}", label=f"{name}")
        ax.loglog(
            mean.index,
            fits[name](mean.index),
            "-",
            color=f"C{k}",
            label=f"{name} fit: slope {fits[name].exponent:.3f}",
        )
    ax.set(
        xlabel="width",
        ylabel=r"relative NTK change $\|\hat\Theta_T - \hat\Theta_0\|_F / \|\hat\Theta_0\|_F$",
        title="NTK change during training (depth 1)",
    )
    ax.legend(fontsize=8)
