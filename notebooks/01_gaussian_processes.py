# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 - Networks at initialization are Gaussian processes
#
# Draw the weights of a fully-connected network at random and look at its output f(x) across
# many such draws. As the hidden width n grows, f becomes a Gaussian process whose covariance
# is the **NNGP kernel** K(x, x') (Neal 1996; Lee et al. 2018; Matthews et al. 2018). In this
# chapter we watch that happen:
#
# 1. the recursion that defines K, with the ReLU and erf closed forms, written out in a few
#    lines and checked against the package's `MLPKernel`;
# 2. the output at one input becomes N(0, K(x, x));
# 3. its excess kurtosis is exactly 3[(1 + 5/n)^L - 1] for a bias-free ReLU network of depth L;
# 4. the kernel of a *single* network (its last-layer features) converges to K as n^{-1/2};
# 5. K as a function of the angle between inputs, and what depth does to it;
# 6. Bayesian regression with K next to an ensemble of wide networks whose random readout is
#    replaced by an exact posterior draw: as the width grows, the ensemble's mean and
#    uncertainty approach the GP's;
# 7. our analytic kernel equals neural-tangents' `kernel_fn`.
#
# The experiment code lives in `ntk/chapters/gaussian_processes.py` (also a script:
# `python ntk/gaussian_process_demo.py --out figures`). Runs in about 21 s on an idle
# 2-core CPU.

# %%
import sys

if "google.colab" in sys.modules:  # install only what Colab lacks (it has torch)
    import subprocess

    # set in one place, .ci/colab.py, which writes this cell; brings mup and the rest
    package = "ntk-lab @ git+https://github.com/ntk-lab/ntk"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from ntk import MLPKernel
from ntk.chapters import gaussian_processes as gpd
from ntk.chapters._plots import plot_error_vs_width
from ntk.fitting import fit_power_law

WIDTHS = [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
SEED = 0

# %% [markdown]
# ## 1. The NNGP recursion
#
# A network with L hidden layers, z^{l+1} = σ_w W^{l+1} φ(z^l) / √n + σ_b b^{l+1} (every weight
# and bias N(0, 1); the first layer reads the input x ∈ R^d with 1/√d), has at infinite width
# Gaussian pre-activations in every layer, with covariance K^l(x, x') computed layer by layer:
#
# $$K^1(x, x') = \sigma_w^2 \frac{x \cdot x'}{d} + \sigma_b^2, \qquad
# K^{l+1}(x, x') = \sigma_w^2\, \mathbb E_{(u, v) \sim N(0, \Lambda^l)}[\phi(u)\phi(v)]
# + \sigma_b^2, \qquad
# \Lambda^l = \begin{pmatrix} K^l(x, x) & K^l(x, x') \\ K^l(x, x') & K^l(x', x')\end{pmatrix}.$$
#
# The output's kernel (the **NNGP kernel**) is K = K^{L+1}. The expectation is over a 2 x 2
# Gaussian; for two activations it has a closed form. With
# cos θ = Λ_12 / √(Λ_11 Λ_22):
#
# * ReLU (the arc-cosine kernel of degree 1, Cho & Saul 2009):
#   E[φ(u)φ(v)] = √(Λ_11 Λ_22) (sin θ + (π − θ) cos θ) / (2π);
# * erf (Williams 1997): E[φ(u)φ(v)] = (2/π) arcsin(2Λ_12 / √((1 + 2Λ_11)(1 + 2Λ_22))).
#
# The whole recursion in numpy, against `ntk.kernels.MLPKernel` (float64):


# %%
def relu_expectation(s11, s12, s22):
    """E[relu(u) relu(v)] for (u, v) ~ N(0, [[s11, s12], [s12, s22]]) (Cho & Saul 2009)."""
    norm = np.sqrt(s11 * s22)
    theta = np.arccos(np.clip(s12 / norm, -1.0, 1.0))
    return norm * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)


def erf_expectation(s11, s12, s22):
    """E[erf(u) erf(v)] for the same Gaussian (Williams 1997)."""
    return 2 / np.pi * np.arcsin(2 * s12 / np.sqrt((1 + 2 * s11) * (1 + 2 * s22)))


def nngp_from_scratch(x, depth, expectation, weight_std, bias_std):
    """K^{L+1} on the rows of x by the recursion above."""
    k = weight_std**2 * x @ x.T / x.shape[1] + bias_std**2  # K^1
    for _ in range(depth):
        q = np.diag(k)  # K^l(x, x) of every input
        k = weight_std**2 * expectation(q[:, None], k, q[None, :]) + bias_std**2
    return k


x_demo = np.random.default_rng(SEED).standard_normal((6, 3))
for name, expectation in [("relu", relu_expectation), ("erf", erf_expectation)]:
    for depth in (1, 3):
        ours = nngp_from_scratch(x_demo, depth, expectation, weight_std=1.4, bias_std=0.3)
        ref = MLPKernel(depth, name, weight_std=1.4, bias_std=0.3).nngp(x_demo).numpy()
        assert np.abs(ours - ref).max() <= 1e-12 * np.abs(ref).max(), (name, depth)
print(
    "PASS: the ten-line recursion equals MLPKernel's NNGP kernel to 1e-12 (ReLU, erf; depth 1, 3)"
)

# %% [markdown]
# ## 2. The output at one input
#
# Take one hidden layer of width n, f(x) = (σ_w / √n) Σ_i v_i φ(z_i(x)) + σ_b c, with every
# weight N(0, 1) (NTK parametrization; SP gives the same distribution). Given
# the hidden layer, f(x) is *exactly* Gaussian, because v and c are, with variance
#
# $$\hat K(x, x) = \frac{\sigma_w^2}{n} \sum_{i=1}^n \phi(z_i(x))^2 + \sigma_b^2 ,$$
#
# the network's **empirical NNGP kernel**. It is an average of n i.i.d. terms, so it tends to
# K(x, x) = σ_w² E[φ(z)²] + σ_b² (law of large numbers): f(x) is a Gaussian *scale mixture*
# whose scales concentrate, and the mixture becomes N(0, K(x, x)). Deeper networks repeat the
# argument layer by layer.
#
# `MLPEnsemble` holds thousands of independent networks as stacked weight tensors
# (E, fan_in, fan_out) and evaluates them with one batched matmul per layer.

# %%
net = dict(activation="relu", weight_std=1.0, bias_std=0.0)
samples = gpd.sample_outputs(WIDTHS, n_members=4000, depth=1, seed=SEED, **net)
print(f"K(x, x) = {samples.kernel_var:.4g}, {len(samples.outputs[4])} networks per width")

# %%
shown = [4, 64, 4096]
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
gpd.plot_output_histograms(samples, shown, axes[0])
sd = math.sqrt(samples.kernel_var)
for width in shown:
    (osm, osr), _ = stats.probplot(samples.outputs[width] / sd, dist="norm")
    axes[1].plot(osm, osr, ".", ms=2, label=f"width {width}")
axes[1].plot([-4, 4], [-4, 4], "k--", lw=1)
axes[1].set(
    xlabel="N(0, 1) quantiles", ylabel=r"quantiles of $f(x)/\sqrt{K(x,x)}$", title="QQ plot"
)
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Non-Gaussianity: exactly 3[(1 + 5/n)^L − 1]
#
# For a Gaussian scale mixture f | S ~ N(0, S) with S = K̂(x, x), E f⁴ = 3 E S², so the
# excess kurtosis is
#
# $$\kappa = \frac{E f^4}{(E f^2)^2} - 3 = 3\left(\frac{E S^2}{(E S)^2} - 1\right).$$
#
# For ReLU without biases at one input this is exact at every width and depth. Given layer l,
# the n pre-activations of layer l+1 are i.i.d. N(0, K̂^l), and ReLU is positively
# homogeneous, so K̂^{l+1} = K̂^l · σ_w² X_{l+1} with X = (1/n) Σ_i relu(g_i)², g_i ~ N(0, 1),
# independent across layers. With E relu(g)² = 1/2 and Var relu(g)² = 3/2 − 1/4 = 5/4,
# E X² / (E X)² = 1 + 5/n, and over L hidden layers
#
# $$\kappa_L = 3\left[\left(1 + \frac{5}{n}\right)^L - 1\right] = \frac{15 L}{n} + O(L^2/n^2).$$
#
# The 1/n coefficient grows linearly with depth: depth/width is the expansion parameter of
# finite-width effects. Roberts, Yaida & Hanin (*The Principles of Deep Learning Theory*, 2022,
# ch. 4-5; Yaida 2020, arXiv:1910.00019) derive that leading, linear-in-L term of the 1/n
# expansion; the exact product over layers, for ReLU at one input, is the moment computation of
# Hanin (2018, arXiv:1801.03744) and Noci et al. (2021, arXiv:2106.06615), which we re-derived
# above.
# **Theory: the exact values above**, whose log-log slope over the fitted widths is −1 at depth
# 1 and a little steeper at depths 2 and 3 (−1.05 and −1.10 over widths 16-256: the
# $O(L^2/n^2)$ terms still weigh at width 16); the leading-order 15L/n, slope −1 at every
# depth, is the rival we must be able to reject.
#
# We estimate κ as 3 Var[K̂(x, x)] / (E K̂(x, x))² over the networks, which is exact in
# expectation and far less noisy than the sample kurtosis of f itself (standard error
# √(24/E) ≈ 0.08 with E = 4000 networks, useless below κ ≈ 0.1); the sample kurtosis is shown
# for comparison. Depths 2 and 3 use E = 2000 networks at widths 16-256 (their n² weights per
# layer make larger ensembles slow on a CPU).

# %%
# NBVAL_IGNORE_OUTPUT
# Monte Carlo estimates in float32: the last digits depend on the machine
kurt = {1: gpd.kurtosis_vs_width(samples, depth=1, **net)}
for depth in (2, 3):
    deep = gpd.sample_outputs(WIDTHS[2:7], n_members=2000, depth=depth, seed=SEED, **net)
    kurt[depth] = gpd.kurtosis_vs_width(deep, depth=depth, **net)
fits_k = {depth: fit_power_law(df.width, df.excess_kurtosis) for depth, df in kurt.items()}
cols = ["width", "excess_kurtosis", "excess_kurtosis_se", "theory", "leading_order"]
for depth, df in kurt.items():
    print(f"depth {depth}: fitted slope {fits_k[depth].exponent:.3f}")
    print(df[cols].round(4).to_string(index=False))

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, (depth, df) in zip(axes, kurt.items(), strict=True):
    gpd.plot_kurtosis(df, fits_k[depth], ax)
    ax.set_title(f"{depth} hidden layer{'s' if depth > 1 else ''} (ReLU, no biases)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. One network's kernel converges to the NNGP kernel
#
# The empirical kernel K̂(x, x') = σ_w² φ(x)·φ(x')/n + σ_b² of a *single* network (φ the
# readout's input features) is an average over n hidden units, so by the central limit
# theorem it misses K by O(n^{-1/2}) (layer by layer for deep networks; the O(1/n) bias of
# its mean is smaller). **Theory: slope -1/2.** Depth 2, ReLU, σ_w = 1.4, σ_b = 0.1,
# 16 inputs, 6 networks per width; the analytic K is `ntk.kernels.MLPKernel`.

# %%
# NBVAL_IGNORE_OUTPUT
# Random networks: the last digits depend on the machine
errs = gpd.nngp_error_vs_width(WIDTHS[2:], n_networks=6, depth=2, seed=SEED)
mean_err = errs.groupby("width").rel_error.mean()
fit_nngp = fit_power_law(mean_err.index, mean_err.values)
print(mean_err.round(4).to_string())
print(f"fitted slope {fit_nngp.exponent:.3f}")

fig, ax = plt.subplots(figsize=(5.5, 4))
plot_error_vs_width(errs, fit_nngp, ax, r"relative error $\|\hat K - K\|_F / \|K\|_F$")
ax.set_title("empirical NNGP kernel of one network")
plt.show()

# %% [markdown]
# ## 5. The kernel vs the angle between inputs, and what depth does
#
# For inputs on a circle, K depends only on their angle. Each layer maps the correlation
# ρ = K(x, x')/√(K(x,x)K(x',x')) through a fixed function (Poole et al. 2016; Schoenholz et
# al. 2017), so depth iterates it:
#
# * **ReLU** (σ_w² = 2, σ_b = 0): the arc-cosine map (Cho & Saul 2009) pushes every ρ up
#   towards 1; deep ReLU kernels become flat, all inputs look alike.
# * **erf** with σ_w = 2, σ_b = 0 is in the *chaotic* phase: ρ = 0 attracts, so
#   distinct inputs decorrelate with depth (ρ(π) = −1 stays, erf being odd).
#
# Markers: one random network of width 1024 per depth (its empirical kernel). One network is
# one draw, so below we measure the largest miss over the angles for 3 independent networks
# per depth (the plotted one and two more). The ReLU networks miss the curve by less than 0.05
# on average at every depth. The chaotic erf networks miss by more at depths 4-16 than at
# depths 1-2 on average, and at depth 16 by more than three times as much as at depth 1,
# because the map amplifies small differences layer after layer. Three draws per depth are
# enough for these comparisons, not for a fine trend in depth. ρ(π) = −1 holds at every depth,
# for the curve and the plotted networks (to 1e-9).

# %%
DEPTHS = [1, 2, 4, 8, 16]
angle_relu = gpd.kernel_vs_angle("relu", DEPTHS, weight_std=math.sqrt(2), width=1024, seed=SEED)
angle_erf = gpd.kernel_vs_angle("erf", DEPTHS, weight_std=2.0, width=1024, seed=SEED)

fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, df, title in [
    (axes[0], angle_relu, "ReLU, σ_w² = 2"),
    (axes[1], angle_erf, "erf, σ_w = 2"),
]:
    for k, (depth, d) in enumerate(df.groupby("depth")):
        ax.plot(d.angle, d.correlation, color=f"C{k}", label=f"depth {depth}")
        ax.plot(d.angle[::6], d.empirical[::6], "o", color=f"C{k}", ms=3)
    ax.plot([], [], "ko", ms=3, label="one network of width 1024")
    ax.set(xlabel="angle between the two inputs (radians)", title=title)
    ax.legend(fontsize=8)
axes[0].set_ylabel("NNGP correlation ρ")
fig.tight_layout()
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
# Random networks: the last digits depend on the machine
ANGLE_NETS = 3


def angle_gaps(plotted, activation, weight_std):
    """Largest |empirical - analytic| correlation over the angles: one row per network
    (the plotted ones, then more width-1024 networks per depth), one column per depth."""
    frames = [plotted] + [
        gpd.kernel_vs_angle(activation, DEPTHS, weight_std=weight_std, width=1024, seed=SEED + k)
        for k in range(100, 100 * ANGLE_NETS, 100)
    ]
    rows = [(df.empirical - df.correlation).abs().groupby(df.depth).max() for df in frames]
    return pd.DataFrame(rows, index=range(ANGLE_NETS))


nets_gap = {
    "relu": angle_gaps(angle_relu, "relu", math.sqrt(2)),
    "erf": angle_gaps(angle_erf, "erf", 2.0),
}
for name, g in nets_gap.items():
    print(f"{name}, largest miss per depth over {ANGLE_NETS} networks of width 1024:")
    print(pd.DataFrame({"mean": g.mean(), "max": g.max()}).T.round(3).to_string())

# %% [markdown]
# ## 6. GP regression vs an ensemble of wide networks whose readout is a posterior draw
#
# Freeze the random hidden layers and keep only the readout θ (with the bias, in NTK scaling
# θ ~ N(0, I)) as unknown: f(x) = ψ(x)·θ is Bayesian linear regression whose prior is a GP
# with the network's empirical kernel K̂ = ψψᵀ. Its exact posterior draw, given noise σ², is
# Matheron's rule
#
# $$\theta^* = \theta_0 + \Psi^\top(\Psi\Psi^\top + \sigma^2 I)^{-1}(y - \varepsilon - \Psi\theta_0),
# \qquad \theta_0 \sim N(0, I),\ \varepsilon \sim N(0, \sigma^2 I),$$
#
# i.e. start from the network's own random readout and correct it in closed form. Nothing is
# trained by gradient descent here: each member's readout is an exact posterior draw (with
# σ² = 0 it is where gradient descent on the readout alone would converge from θ_0,
# "sample-then-optimize", Matthews et al. 2017).
# Each network is then a posterior sample of a GP with kernel K̂; as n → ∞, K̂ → K, so the
# ensemble of networks tends to the **NNGP posterior** (Lee et al. 2018). Here: 512 networks
# of width 2048, one hidden ReLU layer, σ_w = 1.5, σ_b = 1, noise σ² = 0.01; the GP posterior
# is `ntk.kernels.gp_posterior`.

# %%
# NBVAL_IGNORE_OUTPUT
# An ensemble in float32: the last digits depend on the machine
reg = gpd.gp_vs_readout_ensemble(width=2048, n_members=512, seed=SEED)
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
gpd.plot_regression(reg, axes)
fig.tight_layout()
plt.show()

mean_gap = np.abs(reg.ens_mean - reg.gp_mean) / reg.gp_std
std_ratio = reg.ens_std / reg.gp_std
print(f"max |ensemble mean - GP mean| / GP std: {mean_gap.max():.3f}")
print(f"ensemble std / GP std: min {std_ratio.min():.3f}, max {std_ratio.max():.3f}")

# %% [markdown]
# **The approach to the limit.** The same 512-network ensemble at widths 8 to 64 and 2048,
# measured by the mean over the test points of |ensemble mean − GP mean| / GP std and of
# |ensemble std / GP std − 1|. Both fall steadily from width 8 to 64, with fitted log-log
# slopes near −1 (asserted between −1.6 and −0.7), i.e. roughly as 1/n. By width 2048 they
# are at the level of the ensemble's own Monte Carlo error: with 512 networks the ensemble
# mean has standard error 1/√512 ≈ 0.044 GP std at each point, so its mean absolute error is
# about 0.035, and the ensemble std about 0.025 (asserted: both gaps within 3x of these).
# There the ensemble's mean lies within 0.25 GP std of the GP's at every test point and its
# std within 15% of the GP's; a larger ensemble would be needed to see the gap shrink further.

# %%
# NBVAL_IGNORE_OUTPUT
# Ensembles in float32: the last digits depend on the machine
GP_WIDTHS = [8, 16, 32, 64, 2048]


def ensemble_vs_gp(width):
    """Mean over test points of the ensemble's mean and std gaps to the GP posterior."""
    r = reg if width == reg.width else gpd.gp_vs_readout_ensemble(width=width, seed=SEED)
    return dict(
        width=width,
        mean_gap=np.mean(np.abs(r.ens_mean - r.gp_mean) / r.gp_std),
        std_gap=np.mean(np.abs(r.ens_std / r.gp_std - 1)),
    )


gp_trend = pd.DataFrame([ensemble_vs_gp(w) for w in GP_WIDTHS])
narrow = gp_trend[gp_trend.width <= 64]
fit_gp_mean = fit_power_law(narrow.width, narrow.mean_gap)
fit_gp_std = fit_power_law(narrow.width, narrow.std_gap)
print(gp_trend.round(3).to_string(index=False))
print(
    f"fitted slopes over widths 8-64: mean gap {fit_gp_mean.exponent:.2f}, "
    f"std gap {fit_gp_std.exponent:.2f}"
)

# %% [markdown]
# ## 7. The same kernel as neural-tangents
#
# `MLPKernel` against `neural_tangents.stax.serial(...)`'s `kernel_fn` (float64) on the same
# inputs, for ReLU and erf, depths 1 and 3, with biases, in both parametrizations (the
# SP ("sp") NTK depends on the width, 512 here).

# %%
# NBVAL_IGNORE_OUTPUT
# Round-off errors differ between machines; skipped without neural-tangents
import importlib.util

if importlib.util.find_spec("neural_tangents") is None:
    print("neural-tangents is not installed: comparison skipped")
else:
    nt_check = gpd.compare_with_neural_tangents()
    print(nt_check.to_string(index=False, float_format=lambda v: f"{v:.2g}"))
    nt_worst = max(nt_check.nngp_rel_err.max(), nt_check.ntk_rel_err.max())
    print(f"max relative error: {nt_worst:.1e}")
    assert nt_worst < 1e-12
    print("PASS: MLPKernel equals neural-tangents' kernel_fn to 1e-12")

# %% [markdown]
# ## Claims, checked
#
# Each fitted exponent must be within ±0.15 of the theory value quoted above (the
# GP-ensemble slopes, for which we derive no exact value, within (−1.6, −0.7)). The kurtosis
# is tested against its Monte Carlo error instead of a fixed window: per depth, the sum of
# squared deviations from the exact formula in units of each point's bootstrap standard error,
# $\chi^2 = \sum_w (\hat\kappa_w - \kappa_w)^2 / \mathrm{se}_w^2$, must stay below the 99.9%
# quantile of a $\chi^2$ with one degree of freedom per width, and the same statistic against
# the leading-order rival 15L/n, pooled over depths, must exceed its quantile. Each fitted slope
# must match the exact formula's own slope over the same widths within 3 standard errors of the
# fit. (The bootstrap standard error is about 3.5% of $\kappa$ here; repeating depth 2, width
# 256 with 8 seeds gave a spread of 6%, since $\hat K$'s tails are heavier than the bootstrap
# sees, so the 99.9% quantile leaves room for that.) The first cell
# shows the measured values (their last digits depend on the machine); the second asserts the
# claims and prints only verdicts.

# %%
# NBVAL_IGNORE_OUTPUT
# Measured values: the last digits depend on the machine
exact_slope = {d: fit_power_law(df.width, df.theory).exponent for d, df in kurt.items()}
for depth, fit in fits_k.items():
    print(
        f"excess kurtosis slope, depth {depth}: {fit.exponent:.3f} +- {fit.stderr:.3f} "
        f"(exact formula over the same widths {exact_slope[depth]:.3f})"
    )
worst = {d: (df.excess_kurtosis / df.theory - 1).abs().max() for d, df in kurt.items()}
print("largest relative deviation from 3[(1 + 5/n)^L - 1], per depth:", worst)
chi2 = {
    d: float((((df.excess_kurtosis - df.theory) / df.excess_kurtosis_se) ** 2).sum())
    for d, df in kurt.items()
}
all_k = pd.concat(kurt.values())
chi2_rival = float(
    (((all_k.excess_kurtosis - all_k.leading_order) / all_k.excess_kurtosis_se) ** 2).sum()
)
print("chi2 against the exact formula, per depth:", {d: round(c, 1) for d, c in chi2.items()})
print(f"chi2 against 15L/n, all depths ({len(all_k)} points): {chi2_rival:.0f}")
print(f"empirical NNGP error slope: {fit_nngp.exponent:.3f} (theory -1/2, CLT)")
gap_angle = {name: g.mean() for name, g in nets_gap.items()}
print(f"width-1024 networks vs analytic correlation, mean over {ANGLE_NETS} of the max gap:")
print(pd.DataFrame(gap_angle).round(3).T.to_string())
print(
    f"GP vs network ensemble: mean gap <= {mean_gap.max():.3f} std, std ratio in "
    f"[{std_ratio.min():.3f}, {std_ratio.max():.3f}]"
)

# %%
for depth, fit in fits_k.items():
    assert abs(fit.exponent - exact_slope[depth]) < 3 * fit.stderr, (depth, fit, exact_slope)
print("PASS: excess kurtosis slopes match the exact formula's at depths 1, 2 and 3")
print("      (within 3 standard errors of each fit)")
for depth, df in kurt.items():  # the 99.9% quantile of chi2 with one dof per width
    assert chi2[depth] < stats.chi2.ppf(0.999, len(df)), (depth, chi2[depth])
assert chi2_rival > stats.chi2.ppf(0.999, len(all_k)), chi2_rival
print("PASS: every depth matches 3[(1 + 5/n)^L - 1] within its Monte Carlo error (chi2 test);")
print("      the leading-order 15L/n is rejected by the same test")
# the 1/n coefficient grows with depth: at each common width, kappa increases with L
common = kurt[2].width
by_depth = [kurt[d].set_index("width").excess_kurtosis[common] for d in (1, 2, 3)]
assert (by_depth[0] < by_depth[1]).all() and (by_depth[1] < by_depth[2]).all()
print("PASS: at every width, deeper networks are further from Gaussian")
assert abs(fit_nngp.exponent + 0.5) <= 0.15
print("PASS: one network's NNGP kernel error ~ width^-1/2 (slope within 0.15 of -1/2)")

# depth makes ReLU kernels flatter (rho up) and chaotic erf kernels sharper (rho down)
rho = {
    name: df.pivot(index="angle", columns="depth", values="correlation")
    for name, df in [("relu", angle_relu), ("erf", angle_erf)]
}
inner = rho["relu"].index < 3.0  # away from the antipode, where erf's rho is pinned at -1
assert (rho["relu"].diff(axis=1).iloc[:, 1:] >= -1e-12).all().all()
assert (rho["erf"][inner].abs().diff(axis=1).iloc[:, 1:] <= 1e-12).all().all()
print("PASS: depth raises ReLU correlations and lowers |erf| correlations at every angle")
assert gap_angle["relu"].max() < 0.05 and nets_gap["relu"].max().max() < 0.1
print("PASS: ReLU networks miss by < 0.05 on average at every depth (each network by < 0.1)")
erf = gap_angle["erf"]
assert erf[[4, 8, 16]].min() > erf[[1, 2]].max() and erf[16] > 3 * erf[1]
print("PASS: erf networks miss by more at every depth 4-16 than at depths 1-2 (mean of 3),")
print("      and by > 3x more at depth 16 than at depth 1")
pi_rows = angle_erf[angle_erf.angle == angle_erf.angle.max()]
assert len(pi_rows) == len(DEPTHS)
assert np.abs(pi_rows.correlation + 1).max() < 1e-9 and np.abs(pi_rows.empirical + 1).max() < 1e-9
print("PASS: rho(pi) = -1 for erf at every depth, analytic and network (to 1e-9)")

# the ensemble approaches the GP posterior as the width grows, down to its Monte Carlo error
assert narrow.mean_gap.is_monotonic_decreasing and narrow.std_gap.is_monotonic_decreasing
assert -1.6 < fit_gp_mean.exponent < -0.7 and -1.6 < fit_gp_std.exponent < -0.7
print("PASS: widths 8-64: mean and std gaps to the GP fall, slopes in (-1.6, -0.7)")
# Monte Carlo level of 512 members: E|N(0, s^2)| = s sqrt(2/pi), s = 1/sqrt(E) for the mean,
# 1/sqrt(2E) for the std ratio
mc_mean, mc_std = math.sqrt(2 / math.pi / 512), math.sqrt(2 / math.pi / 1024)
assert gp_trend.mean_gap.iloc[-1] < 3 * mc_mean and gp_trend.std_gap.iloc[-1] < 3 * mc_std
print("PASS: width 2048: both gaps within 3x of the Monte Carlo error of 512 networks")
assert mean_gap.max() < 0.25 and 0.85 < std_ratio.min() and std_ratio.max() < 1.15
print(
    "PASS: width 2048: ensemble mean within 0.25 GP std of the GP mean, std ratio in (0.85, 1.15)"
)
