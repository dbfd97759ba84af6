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
# # 03 - The lazy regime: wide NTK networks freeze and become kernel regression
#
# In the NTK parametrization every weight is N(0, 1) and each layer multiplies its input by
# $\sigma_w/\sqrt{\text{fan\_in}}$. Gradient descent then moves each layer's weights by $O(1)$ in
# Frobenius norm, spread over $n$ (or $n^2$) entries, so as the width $n \to \infty$ the
# network barely moves from its initialization and becomes its own linearization
# (Jacot et al. 2018; Lee et al. 2019; "lazy training", Chizat et al. 2019). Its hidden
# features are frozen, training is *kernel regression with the NTK*, and the network cannot
# turn its features towards the direction its target depends on.
#
# We train depth-2 networks of widths 64 to 1024 on the same data and measure
# 1. how much weights and hidden features change (fitted log-log slopes against the theory);
# 2. whether the first layer turns towards the target direction u;
# 3. the distance of the trained network to its linearization and to kernel regression with
#    the analytic NTK, both trained by the same gradient descent.
#
# The experiment code lives in `ntk/chapters/lazy_regime.py` (also a script:
# `python ntk/feature_learning_limitations.py`). Runs in about 13 s on an idle 2-core CPU.

# %%
import sys

if "google.colab" in sys.modules:  # install only what Colab lacks (it has torch)
    import subprocess

    # set in one place, .ci/colab.py, which writes this cell; brings mup and the rest
    package = "ntk-lab @ git+https://github.com/ntk-lab/ntk"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)

# %%
import matplotlib.pyplot as plt
import torch

from ntk.chapters.lazy_regime import LABELS, plot_lazy_regime, run_lazy_regime
from ntk.fitting import fit_loglog_slope

torch.set_num_threads(1)  # small matrices: one thread is as fast and reproducible

# %% [markdown]
# ## 1. Weights and features freeze as the width grows
#
# Depth-2 ReLU networks ($\sigma_w = \sqrt 2$, no biases) in NTK parametrization, all trained
# by full-batch gradient descent (learning rate 1, 200 steps, loss
# $\tfrac12\,\mathrm{mean}(f-y)^2$) on the same 64 points from the same seed. The task
# (`ntk.data.make_low_dim_task`): $x$ uniform on the sphere of radius $\sqrt{16}$ in
# $\mathbb R^{16}$, $y = \mathrm{He}_2(\langle u, x\rangle)/\sqrt 2$ for a hidden unit vector
# $u$. For each layer the gradient has Frobenius norm $O(1)$, so after a fixed training time
#
# * input and readout weights ($n \times d$ and $1 \times n$, norm $\sim\sqrt n$) change by a
#   relative $O(n^{-1/2})$;
# * the hidden $n \times n$ matrix (norm $\sim n$) changes by a relative $O(n^{-1})$ in
#   Frobenius norm;
# * every hidden feature $h_l(x)$ moves by $O(n^{-1/2})$ relative to its size.
#
# **Can the network find u?** A network that learned this target would turn its first-layer
# weights $W_1$ towards $u$. We measure the share of their energy along $u$,
# $\|W_1 u\|^2 / \|W_1\|_F^2$, which is $1/d = 0.0625$ for random weights. Each unit's input
# weights move by $O(n^{-1/2})$ relative, but the first-order change of $\|W_1 u\|^2$ is a sum
# over units of terms whose signs are set by the units' random readout weights, so it cancels
# like a random walk (as the NTK's first-order change does in chapter 02), leaving a relative
# change of order $n^{-1}$: the lazy network keeps the features it was born with. Being a
# random walk, this change is noisy: from one seed it is not even monotone in the width
# (below), so what we check, at this seed, is that it falls faster than the weights' own
# $n^{-1/2}$ (see the checks), which is consistent with, but does not measure, the $n^{-1}$.

# %%
# NBVAL_IGNORE_OUTPUT
# Float32 training: the last digits depend on the machine
lazy = run_lazy_regime((64, 128, 256, 512, 1024), steps=200, lr=1.0, seed=0)
t = lazy.table
print(
    t.drop(columns=["train_loss", "test_mse", "ntk_test_mse"]).to_string(
        index=False, float_format=lambda v: f"{v:.3g}"
    )
)
print("\nfitted log-log slopes against the width:")
for name, slope in lazy.slopes.items():
    print(f"  {LABELS[name]:38s} {slope:+.2f}")
overlap_slope_128 = fit_loglog_slope(t.width[1:], t.overlap_change[1:])
print(f"  overlap with u, widths 128-1024 only    {overlap_slope_128:+.2f}")

# %% [markdown]
# ## 2. The trained network is kernel regression with the NTK
#
# Two references, each trained by the *same* full-batch gradient descent as the network:
#
# * its linearization $f_{\rm lin}(x;\theta) = f_0(x) + J_0(x)(\theta - \theta_0)$
#   (`ntk.kernels.LinearizedModel`);
# * kernel regression with the analytic NTK Θ (`ntk.kernels.MLPKernel`) from the network's own
#   initial outputs, whose residual after t steps is exactly
#   $(I - \eta\Theta/N)^t (f_0(X) - Y)$ on the training set, so that at a test point
#   $f_t = f_0 - \Theta_{*X}\Theta^{-1}\big(I - (I - \eta\Theta/N)^t\big)(f_0(X) - Y)$
#   (Lee et al. 2019, eq. 11, with the discrete step in place of $e^{-\eta\Theta t/N}$).
#
# The distance to the linearization contains only the kernel's motion during training, which
# for ReLU shrinks as $n^{-3/4}$ (chapter 02); the distance to the analytic-NTK prediction also
# contains the $O(n^{-1/2})$ difference between the network's NTK at initialization and Θ
# (chapter 02), so it shrinks as $n^{-1/2}$.
#
# **Why the test MSE is about 1 at every width.** Always predicting 0 scores the target's mean
# square, about 0.83 on these test points. With 64 samples in $d = 16$ a rotation-invariant
# kernel cannot fit a degree-2 polynomial of $\langle u, x\rangle$: it needs of order
# $d^2 = 256$ samples (Ghorbani et al. 2021). So kernel regression with the NTK learns nothing
# that transfers off the training points, and it starts from the network's random initial
# function $f_0$, which it removes only at those points; its test MSE is about 1, worse than
# predicting 0. The lazy network, which *is* that kernel regression, interpolates the 64
# training points (training loss below $10^{-3}$) and has the same test MSE, the more exactly
# the wider it is.

# %%
# NBVAL_IGNORE_OUTPUT
# Float32 training: the last digits depend on the machine
print(
    t[["width", "train_loss", "test_mse", "ntk_test_mse"]].to_string(
        index=False, float_format=lambda v: f"{v:.3g}"
    )
)
print(f"test MSE of predicting 0: {lazy.zero_mse:.3f}")
mse_gap = (t.test_mse - t.ntk_test_mse).abs()
fit_mse_gap = fit_loglog_slope(t.width, mse_gap)
print(f"|test MSE of the network - of NTK regression|: {mse_gap.round(3).tolist()}")
print(f"fitted slope against the width: {fit_mse_gap:+.2f}")

# %%
fig = plot_lazy_regime(lazy)
plt.show()

# %% [markdown]
# ## Checks
#
# The slopes are fitted over a 16x range of widths from one seed. For the weights, features
# and distances we allow 0.15 to 0.25 around the theoretical exponents. The overlap change is
# a sum of random-sign terms and, from one seed, not monotone in the width, and its fit over
# all widths leans on width 64; so for it we assert only that the slope lies in (−1.5, −0.7),
# fitted both over all widths and over 128-1024, and that the change is below 2% at width
# 1024. That says the change is small and, at this seed, falls faster than the $n^{-1/2}$ of
# the weights; it is not a measurement of the exponent (a single seed's slope scatters
# widely, and other seeds can land outside this window), and the $n^{-1}$ rests on the
# argument in section 1. Each check would fail if its claim were false.

# %%
s = lazy.slopes
for name in (
    "feature_change_hidden.0",
    "feature_change_hidden.1",
    "weight_change_hidden.0",
    "weight_change_readout",
):
    assert -0.75 < s[name] < -0.3, (name, s[name])
print("PASS: features, input and readout weights change ~ width^-1/2 (slopes in (-0.75, -0.3))")
assert -1.25 < s["weight_change_hidden.1"] < -0.8
print("PASS: the hidden n x n matrix changes ~ width^-1 (slope in (-1.25, -0.8))")

# the overlap with u stays at its random level 1/d, ever more exactly
widest = t.iloc[-1]
assert -1.5 < s["overlap_change"] < -0.7 and -1.5 < overlap_slope_128 < -0.7
assert widest.overlap_change < 0.02 and abs(widest.overlap_final * lazy.dim - 1) < 0.1
print("PASS: at this seed the overlap change with u falls faster than width^-1/2: slope in")
print("      (-1.5, -0.7) over widths 64-1024 and over 128-1024; < 2% at width 1024")

# convergence to kernel regression: both distances shrink at their predicted rates
assert -0.75 < s["ntk_distance"] < -0.35 and -0.95 < s["lin_distance"] < -0.55
assert t.ntk_distance.is_monotonic_decreasing and t.lin_distance.is_monotonic_decreasing
assert (t.lin_distance < t.ntk_distance).all()
print("PASS: distance to NTK regression ~ width^-1/2, to the linearization ~ width^-3/4")

# test MSE about 1: the network memorizes, predicts no better than 0, like NTK regression,
# and its test MSE converges to NTK regression's
assert (t.train_loss < 1e-3).all() and 0.75 < lazy.zero_mse < 0.9
assert (t.test_mse > lazy.zero_mse).all() and (t.ntk_test_mse > lazy.zero_mse).all()
assert (t.test_mse.between(0.85, 1.2)).all()
print("PASS: training loss < 1e-3; network and NTK regression both worse than predicting 0")
assert fit_mse_gap < -0.5 and mse_gap.iloc[-1] < 0.03
print("PASS: the network's test MSE converges to NTK regression's (gap slope < -0.5)")

# %% [markdown]
# Chapter 04 moves a network continuously from this lazy regime to the rich one by scaling its
# output, and chapter 05 derives muP, the parametrization in which wide networks keep learning
# features.
