"""Chapter 01 experiments: randomly initialized networks are Gaussian processes.

Each function runs one experiment and returns data (a DataFrame or a dataclass); the notebook
`notebooks/01_gaussian_processes.py` and `main()` only plot and summarize them.

    python ntk/gaussian_process_demo.py --out figures          # writes figures/01_*.png

Theory in brief. A readout f(x) = sigma_w / sqrt(n) sum_i v_i phi_i(x) + sigma_b c with Gaussian
v, c is, given the hidden layers, exactly Gaussian with variance K_hat(x, x), the network's
empirical NNGP kernel. Over random hidden layers K_hat(x, x') is an average of n i.i.d. terms
per layer, so it converges to the NNGP kernel K with fluctuations O(n^{-1/2}) (central limit
theorem), and the output is a Gaussian scale mixture whose excess kurtosis is

    kappa = 3 Var[K_hat(x, x)] / E[K_hat(x, x)]^2 = O(1/n)

(Neal 1996; Yaida 2020, arXiv:1910.00019; Roberts, Yaida & Hanin 2022, "The Principles of Deep
Learning Theory", ch. 4-5). For one hidden layer it is exact at every width:
kappa = 3 sigma_w^4 Var[phi(z)^2] / (n (sigma_w^2 E[phi(z)^2] + sigma_b^2)^2), z ~ N(0, K^1(x, x)),
which is 15 / n for ReLU without biases. For L hidden layers of bias-free ReLU at one input the
same argument is exact layer by layer: given layer l, the n pre-activations of layer l + 1 are
i.i.d. N(0, K_hat^l), so K_hat^{l+1} = K_hat^l * sigma_w^2 X_{l+1} with X = (1/n) sum_i relu(g_i)^2,
g_i ~ N(0, 1) independent across layers. E[relu(g)^2] = 1/2 and Var[relu(g)^2] = 5/4 give
E[X^2] / E[X]^2 = 1 + 5/n, hence

    kappa_L = 3 [(1 + 5/n)^L - 1] = 15 L / n + O(L^2 / n^2)

at every width (`relu_excess_kurtosis`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ntk._checks import check_positive_int
from ntk.activations import get_activation
from ntk.chapters import _cli
from ntk.chapters._plots import plot_error_vs_width
from ntk.data import point_on_sphere, toy_regression_task
from ntk.fitting import PowerLaw, fit_mean_power_law, fit_power_law
from ntk.kernels.analytic import MLPKernel
from ntk.kernels.predict import gp_posterior
from ntk.models.ensemble import MLPEnsemble

# neural-tangents' names for our parametrizations.
NT_SPELLING = {"ntk": "ntk", "sp": "standard"}

# Element budget of one ensemble chunk's hidden weights (E * width^2 floats, about 256 MB).
_CHUNK_ELEMENTS = 2**26


# ----------------------------------------------------------------------------- helpers


def _chunks(n_members: int, width: int, depth: int) -> list[int]:
    """Split an ensemble so each chunk's hidden-to-hidden weights stay within the budget."""
    per_member = max(1, width * width * max(depth - 1, 0) + width * 8)
    size = max(1, min(n_members, _CHUNK_ELEMENTS // per_member))
    return [min(size, n_members - start) for start in range(0, n_members, size)]


def _ensemble_map(fn, n_members: int, width: int, depth: int, seed: int, **net) -> torch.Tensor:
    """Concatenate fn(ensemble) over chunks of independent networks (member axis first)."""
    out = []
    for i, size in enumerate(_chunks(n_members, width, depth)):
        ens = MLPEnsemble(size, width=width, depth=depth, seed=seed * 7919 + i, **net)
        out.append(fn(ens))
    return torch.cat(out)


# ----------------------------------------------------------------------------- experiments


@dataclass
class OutputSamples:
    """Outputs f(x) of `n_members` random networks at one input, per width."""

    x: torch.Tensor  # (1, d)
    kernel_var: float  # K(x, x), infinite width
    outputs: dict[int, np.ndarray]  # width -> (E,) outputs
    conditional_var: dict[int, np.ndarray]  # width -> (E,) K_hat(x, x) per network


def sample_outputs(
    widths: list[int],
    *,
    n_members: int = 4000,
    depth: int = 1,
    activation: str = "relu",
    weight_std: float = 1.0,
    bias_std: float = 0.0,
    in_features: int = 3,
    seed: int = 0,
) -> OutputSamples:
    """Sample n_members independent networks per width and evaluate them at one input."""
    x = point_on_sphere(in_features, seed)
    net = dict(
        in_features=in_features,
        activation=activation,
        weight_std=weight_std,
        bias_std=bias_std,
    )

    def outputs_and_var(ens: MLPEnsemble) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([ens(x)[:, 0, 0], ens.conditional_variance(x)[:, 0]], dim=1)

    outputs, cond = {}, {}
    for width in widths:
        both = _ensemble_map(outputs_and_var, n_members, width, depth, seed + width, **net)
        outputs[width] = both[:, 0].double().numpy()
        cond[width] = both[:, 1].double().numpy()
    kernel = MLPKernel(depth, activation, weight_std, bias_std)
    return OutputSamples(x, float(kernel.nngp_diag(x)[0]), outputs, cond)


def one_layer_excess_kurtosis(
    width: int,
    activation: str = "relu",
    weight_std: float = 1.0,
    bias_std: float = 0.0,
    q: float | None = None,
) -> float:
    """Exact excess kurtosis of a one-hidden-layer network's output (module docstring).

    q is the first-layer pre-activation variance K^1(x, x) (default weight_std^2 + bias_std^2,
    an input with |x|^2 = d). Moments of phi(z) by 200-point Gauss-Hermite quadrature.
    """
    check_positive_int("width", width)
    q = weight_std**2 + bias_std**2 if q is None else q
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)  # weight exp(-z^2 / 2)
    weights = weights / weights.sum()
    phi = get_activation(activation)(torch.as_tensor(math.sqrt(q) * nodes)).numpy()
    m2, m4 = weights @ phi**2, weights @ phi**4
    return 3 * weight_std**4 * (m4 - m2**2) / (width * (weight_std**2 * m2 + bias_std**2) ** 2)


def relu_excess_kurtosis(width: int, depth: int) -> float:
    """Exact excess kurtosis 3 [(1 + 5/n)^L - 1] of a bias-free ReLU network's output at one
    input, n = `width`, L = `depth` hidden layers (module docstring); any sigma_w."""
    check_positive_int("width", width)
    check_positive_int("depth", depth)
    return 3 * ((1 + 5 / width) ** depth - 1)


def _kurtosis_estimate(v: np.ndarray) -> float:
    return float(3 * v.var(ddof=1) / v.mean() ** 2)


def bootstrap_se(v: np.ndarray, n_boot: int = 400, seed: int = 0) -> float:
    """Bootstrap standard error of 3 Var[v] / E[v]^2 over the entries of `v`."""
    rng = np.random.default_rng(seed)
    boots = [_kurtosis_estimate(v[rng.integers(0, len(v), len(v))]) for _ in range(n_boot)]
    return float(np.std(boots, ddof=1))


def kurtosis_vs_width(samples: OutputSamples, depth: int, n_boot: int = 400, **net) -> pd.DataFrame:
    """Excess kurtosis of the output at one point, two estimators, per width.

    * `excess_kurtosis`: 3 Var[K_hat(x, x)] / E[K_hat(x, x)]^2 over the networks. Exact in expectation
      (the output is N(0, K_hat(x, x)) given the hidden layers) and with far less Monte Carlo
      noise than the sample kurtosis, so it is the one we fit.
    * `sample_kurtosis` (+ `sample_se`, its standard error sqrt(24 / E)): the plain estimator
      from the outputs themselves, for comparison.
    * `excess_kurtosis_se`: its Monte Carlo standard error, by bootstrap over the networks
      (`n_boot` resamples, a fixed generator).
    * `theory`: the exact value, `one_layer_excess_kurtosis` for one hidden layer and
      `relu_excess_kurtosis` for deeper bias-free ReLU networks (NaN otherwise).
    * `leading_order`: 15 L / n, the first term of the 1/n expansion (the rival of the exact
      product form at narrow widths; ReLU).
    """
    deep_relu = net.get("activation", "relu") == "relu" and not net.get("bias_std", 0.0)
    rows = []
    for width, out in samples.outputs.items():
        v = samples.conditional_var[width]
        rows.append(
            dict(
                width=width,
                depth=depth,
                excess_kurtosis=_kurtosis_estimate(v),
                excess_kurtosis_se=bootstrap_se(v, n_boot),
                sample_kurtosis=float(stats.kurtosis(out)),
                sample_se=math.sqrt(24 / len(out)),
                theory=(
                    one_layer_excess_kurtosis(width, **net)
                    if depth == 1
                    else relu_excess_kurtosis(width, depth)
                    if deep_relu
                    else math.nan
                ),
                leading_order=15 * depth / width,
            )
        )
    return pd.DataFrame(rows)


def nngp_error_vs_width(
    widths: list[int],
    *,
    n_inputs: int = 16,
    in_features: int = 4,
    n_networks: int = 4,
    depth: int = 2,
    activation: str = "relu",
    weight_std: float = 1.4,
    bias_std: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """Relative Frobenius error ||K_hat - K||_F / ||K||_F of single networks' empirical NNGP.

    K_hat(x, x') = sigma_w^2 phi(x) . phi(x') / n + sigma_b^2 from the readout's input features
    of one network; K is `MLPKernel.nngp`. `n_networks` independent networks per width (rows).
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_inputs, in_features, generator=gen, dtype=torch.float64)
    kernel = MLPKernel(depth, activation, weight_std, bias_std).nngp(x)
    net = dict(
        in_features=in_features,
        activation=activation,
        weight_std=weight_std,
        bias_std=bias_std,
        dtype=torch.float64,
    )
    rows = []
    for width in widths:
        k_hat = _ensemble_map(lambda e: e.empirical_nngp(x), n_networks, width, depth, seed, **net)
        err = torch.linalg.matrix_norm(k_hat - kernel) / torch.linalg.matrix_norm(kernel)
        rows += [dict(width=width, network=i, rel_error=float(e)) for i, e in enumerate(err)]
    return pd.DataFrame(rows)


def kernel_vs_angle(
    activation: str,
    depths: list[int],
    *,
    weight_std: float,
    bias_std: float = 0.0,
    n_angles: int = 91,
    width: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """NNGP correlation K(x0, x_t) / sqrt(K(x0, x0) K(x_t, x_t)) between unit-circle inputs
    x0 = sqrt(2) (1, 0) and x_t = sqrt(2) (cos t, sin t), t in [0, pi], per depth.

    With `width`, one random network of that width per depth adds the empirical correlation
    (column `empirical`), to show a single wide network lands on the curve.
    """
    angles = torch.linspace(0, math.pi, n_angles, dtype=torch.float64)
    x = math.sqrt(2) * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (A, 2)
    frames = []
    for depth in depths:
        k = MLPKernel(depth, activation, weight_std, bias_std).nngp(x[:1], x)[0]  # (A,)
        kd = MLPKernel(depth, activation, weight_std, bias_std).nngp_diag(x)
        df = pd.DataFrame(
            dict(
                activation=activation,
                depth=depth,
                angle=angles.numpy(),
                correlation=(k / (kd[0] * kd).sqrt()).numpy(),
            )
        )
        if width is not None:
            ens = MLPEnsemble(
                1,
                2,
                width,
                depth=depth,
                activation=activation,
                weight_std=weight_std,
                bias_std=bias_std,
                seed=seed + depth,
                dtype=torch.float64,
            )
            ke = ens.empirical_nngp(x)[0]
            df["empirical"] = (ke[0] / (ke[0, 0] * ke.diagonal()).sqrt()).numpy()
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@dataclass
class RegressionComparison:
    """GP posterior with the NNGP kernel vs wide networks whose readout is an exact posterior draw."""

    x_train: torch.Tensor  # (N, 1)
    y_train: torch.Tensor  # (N,)
    x_test: torch.Tensor  # (M, 1)
    gp_mean: np.ndarray  # (M,)
    gp_std: np.ndarray  # (M,)
    ens_mean: np.ndarray  # (M,)
    ens_std: np.ndarray  # (M,)
    ens_samples: np.ndarray  # (S, M): a few members, for plotting
    width: int
    n_members: int
    noise_var: float


def gp_vs_readout_ensemble(
    *,
    width: int = 2048,
    n_members: int = 512,
    depth: int = 1,
    activation: str = "relu",
    weight_std: float = 1.5,
    bias_std: float = 1.0,
    noise_var: float = 0.01,
    n_train: int = 10,
    n_test: int = 101,
    seed: int = 0,
) -> RegressionComparison:
    """GP regression with the NNGP kernel next to the readout-posterior ensemble.

    The GP: latent posterior N(mean, cov) of `ntk.kernels.predict.gp_posterior` with noise variance
    `noise_var`. The networks: each member's hidden layers are a fresh random draw; its readout
    is replaced by an exact Bayesian posterior draw under the same prior (the one the network
    was initialized from) and noise (`MLPEnsemble.sample_readout_posterior`). Each member is
    thus a posterior sample of a GP with its own empirical NNGP kernel; as the width grows,
    those kernels concentrate on K and the ensemble's mean and spread become the GP's.
    """
    x_train, y_train, x_test = toy_regression_task(n_train, n_test, seed=seed)
    kernel = MLPKernel(depth, activation, weight_std, bias_std)
    post = gp_posterior(
        kernel.nngp(x_train),
        kernel.nngp(x_test, x_train),
        y_train,
        kernel.nngp(x_test),
        diag_reg=noise_var,
        diag_reg_absolute_scale=True,
    )
    net = dict(in_features=1, activation=activation, weight_std=weight_std, bias_std=bias_std)

    def posterior_draw(ens: MLPEnsemble) -> torch.Tensor:
        ens.sample_readout_posterior(x_train, y_train, noise_var)
        with torch.no_grad():
            return ens(x_test)[..., 0]  # (E, M)

    draws = _ensemble_map(posterior_draw, n_members, width, depth, seed, **net).double()
    return RegressionComparison(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        gp_mean=post.mean.numpy(),
        gp_std=post.cov.diagonal().clamp_min(0).sqrt().numpy(),
        ens_mean=draws.mean(0).numpy(),
        ens_std=draws.std(0).numpy(),
        ens_samples=draws[:8].numpy(),
        width=width,
        n_members=n_members,
        noise_var=noise_var,
    )


def compare_with_neural_tangents(
    configs: list[dict] | None = None, *, n_inputs: int = 8, in_features: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Max relative error of `MLPKernel` vs neural-tangents' `kernel_fn` on the same inputs.

    configs: dicts of MLPKernel arguments (default: ReLU and erf, depths 1 and 3, with and
    without bias, both parametrizations). Returns one row per config with the NNGP and NTK
    errors max|ours - nt| / max|nt|.
    """
    from ntk.reference import load_neural_tangents

    nt = load_neural_tangents()
    stax = nt.stax
    if configs is None:
        configs = [
            dict(depth=d, activation=a, weight_std=w, bias_std=b, parametrization=p, width=512)
            for d in (1, 3)
            for a, w, b in (("relu", 1.4, 0.1), ("erf", 1.2, 0.5))
            for p in ("ntk", "sp")
        ]
    layers = {"relu": stax.Relu, "erf": stax.Erf}
    x = torch.randn(n_inputs, in_features, generator=torch.Generator().manual_seed(seed))
    x = x.double()
    rows = []
    for cfg in configs:
        w, b, p = cfg["weight_std"], cfg["bias_std"], cfg.get("parametrization", "ntk")
        p = NT_SPELLING.get(p, p)
        width = cfg.get("width", 512)

        def dense(n, w=w, b=b, p=p):
            return stax.Dense(n, W_std=w, b_std=b, parameterization=p)

        act = layers[cfg["activation"]]
        _, _, kernel_fn = stax.serial(*[dense(width), act()] * cfg["depth"], dense(1))
        ref = kernel_fn(x.numpy(), None, ("nngp", "ntk"))
        ours = MLPKernel(**cfg).kernels(x)
        row = {k: v for k, v in cfg.items() if k != "width"}
        for name in ("nngp", "ntk"):
            r = torch.from_numpy(np.array(getattr(ref, name), dtype=np.float64))
            row[f"{name}_rel_err"] = float((getattr(ours, name) - r).abs().max() / r.abs().max())
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- script


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Chapter 01 as a script: figures 01_*.png and a printed summary; returns the results."""
    parser = _cli.parser("Chapter 01: wide random networks are Gaussian processes.")
    widths = [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    _cli.add_int_list(parser, "--widths", widths, "hidden widths of ensembles and single nets")
    parser.add_argument("--members", type=int, default=4000, help="networks per width")
    args = parser.parse_args(argv)
    start = _cli.start(args)
    import matplotlib.pyplot as plt

    widths = sorted(args.widths)
    net = dict(activation="relu", weight_std=1.0, bias_std=0.0)
    samples = sample_outputs(widths, n_members=args.members, depth=1, seed=args.seed, **net)
    kurt = kurtosis_vs_width(samples, depth=1, **net)
    fit_k = fit_power_law(kurt.width, kurt.excess_kurtosis)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    plot_output_histograms(samples, [widths[0], widths[len(widths) // 2], widths[-1]], axes[0])
    plot_kurtosis(kurt, fit_k, axes[1])
    names = [_cli.save(fig, args.out, "01_output_distribution.png").name]

    errs = nngp_error_vs_width(widths, seed=args.seed)
    fit_e = fit_mean_power_law(errs, "rel_error")
    fig, ax = plt.subplots(figsize=(5, 4))
    plot_error_vs_width(errs, fit_e, ax, label=r"relative error $\|\hat K - K\|_F / \|K\|_F$")
    names.append(_cli.save(fig, args.out, "01_nngp_error_vs_width.png").name)

    reg = gp_vs_readout_ensemble(seed=args.seed)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    plot_regression(reg, axes)
    names.append(_cli.save(fig, args.out, "01_gp_regression.png").name)

    print(f"excess kurtosis vs width: slope {fit_k.exponent:.3f} (theory -1)")
    print(f"empirical NNGP error vs width: slope {fit_e.exponent:.3f} (theory -1/2)")
    gap = np.abs(reg.ens_mean - reg.gp_mean).max() / reg.gp_std.max()
    print(f"GP vs readout ensemble: max |mean gap| / max GP std = {gap:.3f}")
    _cli.finish(args.out, names, start)
    return {"samples": samples, "kurtosis": kurt, "nngp_errors": errs, "regression": reg}


# ----------------------------------------------------------------------------- plots


def plot_output_histograms(samples: OutputSamples, widths: list[int], ax) -> None:
    """Histograms of f(x) over networks at a few widths against the density of N(0, K(x, x))."""
    sd = math.sqrt(samples.kernel_var)
    grid = np.linspace(-4 * sd, 4 * sd, 200)
    bins = np.linspace(-4 * sd, 4 * sd, 61)
    for width in widths:
        ax.hist(
            samples.outputs[width],
            bins=bins,
            density=True,
            histtype="step",
            lw=1.5,
            label=f"width {width}",
        )
    ax.plot(grid, stats.norm.pdf(grid, scale=sd), "k--", lw=1.5, label=r"$N(0, K(x,x))$")
    ax.set(xlabel="f(x)", ylabel="density", title="output at one input over random networks")
    ax.legend(fontsize=8)


def plot_kurtosis(kurt: pd.DataFrame, fit: PowerLaw, ax) -> None:
    """Excess kurtosis vs width on log-log axes with the fitted power law."""
    ax.loglog(
        kurt.width, kurt.excess_kurtosis, "o", label="from the spread of K̂(x, x) over networks"
    )
    pos = kurt.sample_kurtosis > 0
    ax.errorbar(
        kurt.width[pos],
        kurt.sample_kurtosis[pos],
        yerr=kurt.sample_se[pos],
        fmt="s",
        ms=3,
        alpha=0.6,
        label="sample kurtosis of f(x) (± 1 s.e.; > 0 only)",
    )
    if kurt.theory.notna().all():
        ax.loglog(kurt.width, kurt.theory, "k:", label="exact value (formula in the text)")
    ax.loglog(kurt.width, fit(kurt.width), "-", label=f"fit: slope {fit.exponent:.3f}")
    ax.set(xlabel="width n", ylabel="excess kurtosis of f(x)", title="non-Gaussianity ~ 1/width")
    from matplotlib.ticker import NullLocator

    ticks = list(kurt.width)[:: 2 if len(kurt) > 6 else 1]
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(ticks, [str(w) for w in ticks])
    ax.legend(fontsize=8)


def plot_regression(reg: RegressionComparison, axes) -> None:
    """Two panels: GP posterior (mean +- 2 std) and the readout-posterior network ensemble."""
    x = reg.x_test[:, 0].numpy()
    panels = [
        (axes[0], reg.gp_mean, reg.gp_std, "GP with the NNGP kernel"),
        (axes[1], reg.ens_mean, reg.ens_std, f"{reg.n_members} nets of width {reg.width}"),
    ]
    for ax, mean, std, title in panels:
        ax.fill_between(x, mean - 2 * std, mean + 2 * std, alpha=0.25, label="mean +- 2 std")
        ax.plot(x, mean, lw=2, label="posterior mean")
        ax.plot(reg.x_train[:, 0], reg.y_train, "ko", ms=4, label="training data")
        ax.set(xlabel="x", title=title)
    for sample in reg.ens_samples[:5]:
        axes[1].plot(x, sample, lw=0.7, alpha=0.7, color="0.4")
    axes[1].plot(x, reg.gp_mean, "k--", lw=1, label="GP mean")
    axes[0].set_ylabel("f(x)")
    axes[0].legend(fontsize=8)
    axes[1].plot([], [], lw=0.7, color="0.4", label="five members")
    axes[1].legend(fontsize=8)


if __name__ == "__main__":  # python -m ntk.chapters.gaussian_processes
    _cli.run(main)
