"""Chapter 02 experiments: the neural tangent kernel at initialization and during training.

Each function runs one experiment and returns data (a DataFrame or a dataclass); the notebook
`notebooks/02_neural_tangent_kernel.py` and `main()` only plot and summarize them.

    python ntk/ntk_properties.py --out figures          # writes figures/02_*.png

Theory in brief (Jacot et al. 2018, arXiv:1806.07572; Lee et al. 2019, arXiv:1902.06720).
In the NTK parametrization the empirical NTK Theta_hat(x, x') = sum_p df(x)/dtheta_p df(x')/dtheta_p
of a random network is a sum over the width of weakly dependent terms, so it concentrates on the
analytic NTK Theta with fluctuations O(n^{-1/2}). Under gradient flow on the MSE loss
L = 1/(2N) sum_i (f(x_i) - y_i)^2 the train outputs obey df/dt = -(eta/N) Theta_hat_t (f - y).
The kernel moves during training by O(1/n) (Dyer & Gur-Ari 2020, arXiv:1909.11304; Huang &
Yau 2020, arXiv:1909.08156; Roberts, Yaida & Hanin 2022, ch. 11, where dTheta/dt is the O(1/n)
"dNTK"): each parameter moves by O(n^{-1/2}), and the O(n^{-1/2}) first-order changes of the n
terms of Theta_hat cancel on average, leaving O(1/n). (Lee et al. 2019, Thm 2.1 bound the change
by O(n^{-1/2}); the bound holds, the measured rate is faster.) Hence, as n -> infinity, training
is kernel regression with the fixed Theta: with the eigendecomposition Theta = sum_i lam_i u_i u_i^T
the train residual decays as u_i . (f_t - y) = exp(-eta lam_i t / N) u_i . (f_0 - y), so
large-eigenvalue directions are learned first.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ntk.chapters import _cli
from ntk.chapters._ntk_figures import plot_eigendirections, plot_ntk_change, plot_trajectories
from ntk.chapters._plots import plot_error_vs_width
from ntk.data import sphere_task
from ntk.fitting import fit_mean_power_law
from ntk.kernels.analytic import MLPKernel
from ntk.kernels.empirical import empirical_ntk
from ntk.kernels.predict import (
    LinearizedModel,
    gradient_descent_mse,
    gradient_descent_mse_ensemble,
)
from ntk.models.ensemble import MLPEnsemble
from ntk.models.mlp import WideMLP
from ntk.training import OutputRecorder, train


@dataclass(frozen=True)
class Net:
    """Architecture shared by every experiment here (NTK parametrization, no biases so the
    structured empirical-NTK path applies: bias_std = 0 contributes nothing anyway)."""

    depth: int = 1
    activation: str = "relu"
    weight_std: float = math.sqrt(2.0)
    in_features: int = 4

    def model(self, width: int, seed: int, dtype: torch.dtype = torch.float32) -> WideMLP:
        torch.manual_seed(seed)
        return WideMLP(
            self.in_features,
            width,
            depth=self.depth,
            activation=self.activation,
            weight_std=self.weight_std,
            parametrization="ntk",
            bias=False,
        ).to(dtype)

    def kernel(self) -> MLPKernel:
        return MLPKernel(self.depth, self.activation, self.weight_std, None, "ntk")


# ----------------------------------------------------------------------------- experiments


def ntk_error_vs_width(
    widths: list[int],
    *,
    net: Net | None = None,
    n_inputs: int = 16,
    n_networks: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """||Theta_hat - Theta||_F / ||Theta||_F at initialization, `n_networks` per width."""
    net = net or Net()
    x, _, _ = sphere_task(n_inputs, 1, net.in_features, seed)
    theta = net.kernel().ntk(x)
    rows = []
    for width in widths:
        for i in range(n_networks):
            model = net.model(width, seed=seed * 100_003 + width * 101 + i)
            theta_hat = empirical_ntk(model, x.float()).double()
            err = torch.linalg.matrix_norm(theta_hat - theta) / torch.linalg.matrix_norm(theta)
            rows.append(dict(width=width, network=i, rel_error=float(err)))
    return pd.DataFrame(rows)


def ntk_change_vs_width(
    widths: list[int],
    *,
    net: Net | None = None,
    n_train: int = 16,
    learning_rate: float = 1.0,
    steps: int = 200,
    n_networks: int = 6,
    seed: int = 0,
) -> pd.DataFrame:
    """Relative change ||Theta_hat_T - Theta_hat_0||_F / ||Theta_hat_0||_F of the empirical NTK
    on the training set after `steps` of full-batch GD on the MSE loss, per network.

    `flip_fraction` is the share of (input, first-layer unit) pairs whose pre-activation changed
    sign during training: the units where a ReLU network's kernel jumps (chapter 02 text).
    The `n_networks` networks of a width train together as one `MLPEnsemble` (independent
    members, batched matmuls; the same updates as `ntk.training.train` with SGD on each alone);
    each member's NTK is `ntk.kernels.empirical.empirical_ntk` of `MLPEnsemble.member(i)`.
    """
    net = net or Net()
    x, y, _ = sphere_task(n_train, 1, net.in_features, seed)
    rows = []
    for width in widths:
        ens = MLPEnsemble(
            n_networks,
            net.in_features,
            width,
            depth=net.depth,
            activation=net.activation,
            weight_std=net.weight_std,
            parametrization="ntk",
            seed=seed * 100_003 + width,
        )
        ntk0 = [empirical_ntk(ens.member(i), x.float()) for i in range(n_networks)]
        signs0 = [_first_layer_signs(ens.member(i), x) for i in range(n_networks)]
        losses = ens.train_gd(x, y, learning_rate=learning_rate, steps=steps)
        for i in range(n_networks):
            member = ens.member(i)
            ntk_t = empirical_ntk(member, x.float())
            flips = (_first_layer_signs(member, x) != signs0[i]).double().mean()
            change = torch.linalg.matrix_norm(ntk_t - ntk0[i]) / torch.linalg.matrix_norm(ntk0[i])
            rows.append(
                dict(
                    width=width,
                    network=i,
                    ntk_change=float(change),
                    flip_fraction=float(flips),
                    train_loss=float(losses[-1, i]),
                    initial_loss=float(losses[0, i]),
                )
            )
    return pd.DataFrame(rows)


def _first_layer_signs(model: WideMLP, x: torch.Tensor) -> torch.Tensor:
    """Signs of the first hidden layer's pre-activations on x, (N, width)."""
    with torch.no_grad():
        return model.dense(model.hidden[0], x.to(model.hidden[0].weight.dtype)) > 0


def discrete_gd_kernels(
    ntk_train: torch.Tensor, ntk_test_train: torch.Tensor | None, learning_rate: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Kernels whose gradient flow equals gradient *descent* with step eta on the NTK's model.

    On the train set one GD step multiplies the residual by (I - eta Theta / N), so k steps give
    (I - eta Theta / N)^k = exp(-eta Theta_tilde k / N) with
    Theta_tilde = -(N / eta) log(I - eta Theta / N) (same eigenvectors; needs eta lam_max / N < 1).
    Test outputs move by Theta_*X Theta^{-1} times the train change, so the flow's
    Theta_tilde_*X = Theta_*X Theta^{-1} Theta_tilde. Feeding these to `ntk.kernels.predict` gives the
    exact discrete-time dynamics of the linearized network; Theta_tilde -> Theta as eta -> 0.
    """
    n = ntk_train.shape[0]
    lam, u = torch.linalg.eigh(ntk_train)
    a = learning_rate * lam / n
    if a.max() >= 1 or a.min() <= 0:
        raise ValueError(
            f"need 0 < learning_rate * eigenvalue / N < 1 for every NTK eigenvalue, got "
            f"[{float(a.min()):.3g}, {float(a.max()):.3g}]; lower learning_rate"
        )
    lam_tilde = -(n / learning_rate) * torch.log1p(-a)  # (N,)
    tilde = (u * lam_tilde) @ u.T
    if ntk_test_train is None:
        return tilde, None
    return tilde, ntk_test_train @ ((u * (lam_tilde / lam)) @ u.T)


@dataclass
class Trajectories:
    """Outputs on train + test inputs at `steps` of GD (times t = steps), several predictors."""

    steps: np.ndarray  # (T,)
    x_train: torch.Tensor  # (N, d)
    y_train: torch.Tensor  # (N,)
    x_test: torch.Tensor  # (M, d)
    network: torch.Tensor  # (T, N + M) the real network
    linearized: torch.Tensor  # (T, N + M) its linearization trained by the same GD
    ntk_flow: torch.Tensor  # (T, N + M) gradient flow with the analytic NTK from its own f_0
    ensemble_mean: torch.Tensor  # (T, N + M) infinite-width ensemble (Lee et al. 2019 eq. 15)
    ensemble_std: torch.Tensor  # (T, N + M)
    ntk_init: torch.Tensor  # (N, N) the network's own empirical NTK at init on the train set
    width: int
    learning_rate: float

    @property
    def n_train(self) -> int:
        return len(self.x_train)


def training_trajectories(
    width: int = 2048,
    *,
    net: Net | None = None,
    n_train: int = 16,
    n_test: int = 64,
    learning_rate: float = 0.5,
    steps: list[int] | None = None,
    seed: int = 0,
    linearize: bool = True,
) -> Trajectories:
    """Train one wide network and its linearization with full-batch GD; compare with theory.

    Both train with `ntk.training.train` (SGD, full batch). The theory curves come from
    `ntk.kernels.predict` with the analytic NTK made exact for discrete steps by `discrete_gd_kernels`,
    so the only differences left are finite-width effects. With `linearize=False` the
    linearized network is skipped (its outputs are NaN).
    """
    net = net or Net()
    steps = sorted(steps or [0, 2, 8, 32, 128, 512])
    x_train, y_train, x_test = sphere_task(n_train, n_test, net.in_features, seed)
    x_all = torch.cat([x_train, x_test])  # (N + M, d)
    model = net.model(width, seed=seed)
    ntk_init = empirical_ntk(model, x_train.float()).double()
    modules = [("network", model)]
    if linearize:
        modules.append(("linearized", LinearizedModel(copy.deepcopy(model))))
    runs = {}
    for name, module in modules:
        rec = OutputRecorder(x_all.float(), steps)
        rec.record(module, 0)
        train(
            module,
            x_train.float(),
            y_train.float(),
            steps=max(steps),
            lr=learning_rate,
            log_every=max(steps),
            track_features=False,
            track_weights=False,
            progress=False,
            callbacks=[rec],
            seed=seed,
        )
        runs[name] = rec.stacked()  # (T, N + M)
    runs.setdefault("linearized", torch.full_like(runs["network"], math.nan))
    f0 = runs["network"][0]
    nngp, ntk = net.kernel().kernels(x_all)  # (N + M, N + M) each
    tr, te = slice(0, n_train), slice(n_train, None)
    theta, theta_tx = discrete_gd_kernels(ntk[tr, tr], ntk[te, tr], learning_rate)
    kw = dict(t=torch.as_tensor(steps, dtype=torch.float64), learning_rate=learning_rate)
    flow_train = gradient_descent_mse(theta, None, y_train, f0[tr], None, **kw)
    flow_test = gradient_descent_mse(theta, theta_tx, y_train, f0[tr], f0[te], **kw)
    ens_train = gradient_descent_mse_ensemble(theta, None, y_train, nngp_train=nngp[tr, tr], **kw)
    ens_test = gradient_descent_mse_ensemble(
        theta,
        theta_tx,
        y_train,
        nngp_train=nngp[tr, tr],
        nngp_test_train=nngp[te, tr],
        nngp_test=nngp[te, te],
        **kw,
    )

    def std(cov: torch.Tensor) -> torch.Tensor:
        return cov.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()

    return Trajectories(
        steps=np.array(steps),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        network=runs["network"],
        linearized=runs["linearized"],
        ntk_flow=torch.cat([flow_train, flow_test], dim=1),
        ensemble_mean=torch.cat([ens_train.mean, ens_test.mean], dim=1),
        ensemble_std=torch.cat([std(ens_train.cov), std(ens_test.cov)], dim=1),
        ntk_init=ntk_init,
        width=width,
        learning_rate=learning_rate,
    )


def trajectory_errors(traj: Trajectories) -> pd.DataFrame:
    """Per time: ||a - b|| / ||f_t|| on the test inputs, for (network vs analytic-NTK flow) and
    (network vs linearized network), with f_t the network's test outputs."""
    te = slice(traj.n_train, None)
    rows = []
    for i, step in enumerate(traj.steps):
        ref = traj.network[i, te]
        scale = ref.norm()
        rows.append(
            dict(
                step=int(step),
                flow_vs_network=float((traj.ntk_flow[i, te] - ref).norm() / scale),
                linearized_vs_network=float((traj.linearized[i, te] - ref).norm() / scale),
                train_loss=float(
                    0.5 * (traj.network[i, : traj.n_train] - traj.y_train).pow(2).mean()
                ),
            )
        )
    return pd.DataFrame(rows)


def trajectory_gap_vs_width(
    widths: list[int], *, n_networks: int = 3, learning_rate: float = 0.5, seed: int = 0, **kw
) -> pd.DataFrame:
    """Per width: the test-output gap ||f_net - f_NTK|| / ||f_net|| between one trained network
    and the analytic-NTK prediction from its own f_0 (`trajectory_errors`), at the last step
    (`final_gap`) and its maximum over the recorded steps (`max_gap`). Theory: both are set by
    the O(n^{-1/2}) difference between the network's NTK and the analytic one. Also the
    network's `residual_floor` (`floor`), set by the kernel's motion during training instead."""
    rows = []
    for width in widths:
        for i in range(n_networks):  # seeds seed, seed + 1, ...: data and initialization
            traj = training_trajectories(
                width, learning_rate=learning_rate, seed=seed + i, linearize=False, **kw
            )
            gap = trajectory_errors(traj).flow_vs_network
            rows.append(
                dict(
                    width=width,
                    network=i,
                    final_gap=gap.iloc[-1],
                    max_gap=gap.max(),
                    floor=residual_floor(traj),
                )
            )
    return pd.DataFrame(rows)


@dataclass
class Eigendirections:
    """Train residual f_t(X) - y along the NTK eigenvectors u_i, measured and predicted.

    predicted = (1 - eta lam_i / N)^t u_i . (f_0 - y), the discrete-step form of
    exp(-eta lam_i t / N) (they agree when eta lam_i / N << 1; `flow` holds the latter).
    The `own_*` fields do the same in the eigenbasis of the network's own empirical NTK at
    initialization, the kernel its early dynamics actually follow.
    """

    eigenvalues: np.ndarray  # (N,) descending
    steps: np.ndarray  # (T,)
    measured: np.ndarray  # (T, N) u_i . (f_t - y)
    predicted: np.ndarray  # (T, N) (1 - eta lam_i / N)^t u_i . (f_0 - y)
    flow: np.ndarray  # (T, N) exp(-eta lam_i t / N) u_i . (f_0 - y)
    own_eigenvalues: np.ndarray  # (N,) of the empirical NTK at init, descending
    own_measured: np.ndarray  # (T, N)
    own_predicted: np.ndarray  # (T, N)
    own_linearized: np.ndarray  # (T, N) the linearized network's residual in the same basis


def _project(theta: torch.Tensor, traj: Trajectories, outputs: torch.Tensor | None = None):
    lam, u = torch.linalg.eigh(theta)
    lam, u = lam.flip(0), u.flip(1)  # descending
    outputs = traj.network if outputs is None else outputs
    residual = outputs[:, : traj.n_train] - traj.y_train  # (T, N)
    measured = residual @ u  # (T, N)
    t = torch.as_tensor(traj.steps, dtype=torch.float64)[:, None]
    rate = traj.learning_rate * lam[None, :] / traj.n_train  # eta lam_i / N: (1, N)
    return lam, measured, measured[:1] * (1 - rate) ** t, measured[:1] * torch.exp(-rate * t)


def residual_floor(traj: Trajectories, top: int = 8, from_step: int = 32) -> float:
    """The largest departure of the network's train residual from the linear dynamics of its own
    NTK at initialization Θ̂_0, |u_i . (f_t - y) - (1 - eta lam_i / N)^t u_i . (f_0 - y)| over the
    `top` leading eigenvectors u_i of Θ̂_0 and the recorded steps t >= `from_step`, relative to
    ||f_0(X) - y||. A network whose kernel stayed Θ̂_0 (its linearization) has none but
    round-off, so this floor measures the kernel's motion during training."""
    late = torch.as_tensor(np.asarray(traj.steps) >= from_step)
    if not late.any():
        raise ValueError(f"from_step must be <= the last recorded step, got {from_step}")
    _, measured, predicted, _ = _project(traj.ntk_init, traj)
    gap = (measured[late, :top] - predicted[late, :top]).abs().max()
    return float(gap / measured[0].norm())


def residual_eigendirections(traj: Trajectories, net: Net | None = None) -> Eigendirections:
    """Project the trained network's train residuals on the eigenvectors of the analytic NTK
    and of the network's own empirical NTK at initialization."""
    net = net or Net()
    lam, measured, predicted, flow = _project(net.kernel().ntk(traj.x_train), traj)
    own_lam, own_measured, own_predicted, _ = _project(traj.ntk_init, traj)
    own_linearized = _project(traj.ntk_init, traj, traj.linearized)[1]
    return Eigendirections(
        lam.numpy(),
        traj.steps,
        measured.numpy(),
        predicted.numpy(),
        flow.numpy(),
        own_lam.numpy(),
        own_measured.numpy(),
        own_predicted.numpy(),
        own_linearized.numpy(),
    )


def eigendirection_errors(eig: Eigendirections, top: int = 6) -> pd.DataFrame:
    """Per top eigendirection i, for the analytic basis and the network's own: `initial`, the
    direction's share u_i . (f_0 - y) / ||f_0 - y||, and `max_gap`, the max over time of
    |measured - predicted| relative to the direction's own initial component |u_i . (f_0 - y)|
    (the scale of the lines and dots in the figure), and `late_gap`, the same at the last step."""
    rows = []
    for basis, measured, predicted, lam in [
        ("analytic", eig.measured, eig.predicted, eig.eigenvalues),
        ("own", eig.own_measured, eig.own_predicted, eig.own_eigenvalues),
    ]:
        r0 = np.linalg.norm(measured[0])
        for i in range(top):
            gap = np.abs(measured[:, i] - predicted[:, i]) / abs(measured[0, i])
            rows.append(
                dict(
                    basis=basis,
                    direction=i,
                    eigenvalue=lam[i],
                    initial=measured[0, i] / r0,
                    max_gap=gap.max(),
                    late_gap=gap[-1],
                )
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- script


# Activations of the training sweep: a smooth one (the O(1/n) theory applies) and ReLU.
CHANGE_NETS = {"erf": Net(activation="erf", weight_std=1.0), "relu": Net()}


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Chapter 02 as a script: figures 02_*.png and a printed summary; returns the results."""
    parser = _cli.parser("Chapter 02: the empirical vs analytic NTK, at init and in training.")
    widths = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
    _cli.add_int_list(parser, "--widths", widths, "widths of the NTK-at-initialization sweep")
    widths = [64, 128, 256, 512, 1024, 2048]
    _cli.add_int_list(parser, "--train-widths", widths, "widths of the NTK-change sweep")
    parser.add_argument("--width", type=int, default=2048, help="width of the trained network")
    args = parser.parse_args(argv)
    start = _cli.start(args)
    import matplotlib.pyplot as plt

    init = ntk_error_vs_width(sorted(args.widths), net=Net(depth=2), seed=args.seed)
    fit_init = fit_mean_power_law(init, "rel_error")
    change = {
        name: ntk_change_vs_width(sorted(args.train_widths), net=net, seed=args.seed)
        for name, net in CHANGE_NETS.items()
    }
    fits = {name: fit_mean_power_law(df, "ntk_change") for name, df in change.items()}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    plot_error_vs_width(
        init, fit_init, axes[0], r"relative error $\|\hat\Theta_0 - \Theta\|_F / \|\Theta\|_F$"
    )
    axes[0].set_title("empirical NTK at init (depth 2, ReLU)")
    plot_ntk_change(change, fits, axes[1])
    names = [_cli.save(fig, args.out, "02_ntk_vs_width.png").name]

    traj = training_trajectories(args.width, seed=args.seed)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    plot_trajectories(traj, axes)
    names.append(_cli.save(fig, args.out, "02_training_dynamics.png").name)

    eig = residual_eigendirections(traj)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    plot_eigendirections(eig, axes)
    names.append(_cli.save(fig, args.out, "02_eigendirections.png").name)

    errs = trajectory_errors(traj)
    print(f"empirical NTK at init vs width: slope {fit_init.exponent:.3f} (theory -1/2)")
    for name, fit in fits.items():
        print(f"NTK change in training vs width ({name}): slope {fit.exponent:.3f}")
    print("  (theory: -1 for smooth activations, -3/4 for ReLU from sign flips)")
    print(
        f"width {traj.width}: max rel. gap network vs NTK flow "
        f"{errs.flow_vs_network.max():.3g}, vs linearized {errs.linearized_vs_network.max():.3g}"
    )
    gaps = eigendirection_errors(eig).groupby("basis").max_gap.max()
    print("residual along the top-6 eigendirections, max |measured - predicted| relative to")
    print(f"  its initial component: analytic NTK {gaps['analytic']:.3g}, own {gaps['own']:.3g}")
    _cli.finish(args.out, names, start)
    return {"ntk_error": init, "ntk_change": change, "trajectories": traj, "eigendirections": eig}


if __name__ == "__main__":  # python -m ntk.chapters.neural_tangent_kernel
    _cli.run(main)
