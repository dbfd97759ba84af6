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
# # 03 - The lazy regime: why wide NTK networks stop learning features
#
# In the NTK parametrization every weight is N(0, 1) and each layer multiplies its input by
# $\sigma_w/\sqrt{\text{fan\_in}}$. Gradient descent then moves each layer's weights by $O(1)$ in
# Frobenius norm, spread over $n$ (or $n^2$) entries, so as the width $n \to \infty$ the
# network barely moves from its initialization and becomes its own linearization
# (Jacot et al. 2018; Lee et al. 2019). Its hidden features are frozen: training is *kernel
# regression with the NTK*, and a fixed kernel cannot discover that a target depends only on a
# low-dimensional projection of the input. muP networks (notebook 05) can.
#
# We measure, on the same data at growing width,
# 1. the relative change of weights and hidden features during training (fitted log-log slopes
#    against the theory),
# 2. the distance of the trained network to its linearization and to analytic NTK regression,
# 3. on the task $y = \mathrm{He}_2(\langle u, x\rangle)$ in $d = 32$: test errors of
#    infinite-width NNGP/NTK regression, of NTK-parametrized networks and of muP networks.
#
# The experiment code lives in `ntk/chapters/lazy_regime.py` (also a script:
# `python ntk/feature_learning_limitations.py`). Runs in about 1-2 minutes on a 2-core CPU.

# %%
import sys

if "google.colab" in sys.modules:  # install only what Colab lacks: ntk (and mup, its dependency)
    import subprocess

    repository = "https://github.com/ntk-lab/ntk"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+{repository}"], check=True)

# %%
import matplotlib.pyplot as plt
import pandas as pd

from ntk.chapters.lazy_regime import plot_lazy_regime, run_feature_task, run_lazy_regime

pd.set_option("display.precision", 3)

# %% [markdown]
# ## 1. Laziness grows with the width
#
# Depth-2 ReLU networks ($\sigma_w = \sqrt 2$) in NTK parametrization, widths 64 to 1024, all
# trained by full-batch gradient descent (learning rate 1, 200 steps, loss
# $\tfrac12\,\mathrm{mean}(f-y)^2$) on the same 64 points in $d = 16$ from the same seed.
# For each layer the gradient has Frobenius norm $O(1)$, so after a fixed training time
#
# * input and readout weights ($n \times d$ and $1 \times n$, norm $\sim\sqrt n$) change by a
#   relative $O(n^{-1/2})$;
# * the hidden $n \times n$ matrix (norm $\sim n$) changes by a relative $O(n^{-1})$ in
#   Frobenius norm (by $O(n^{-1/2})$ in operator norm: its change has rank at most the number
#   of training points);
# * every hidden feature $h_l(x)$ moves by $O(n^{-1/2})$ relative to its size.
#
# The network is also compared with its linearization $f_{\rm lin}$ (`ntk.kernels.LinearizedModel`,
# trained by the same loop) and with the analytic prediction of gradient flow with the
# infinite-width NTK from the network's own initial outputs
# $f_t = f_0 - \Theta_{*X}\Theta^{-1}(I - e^{-\eta\Theta t/N})(f_0(X) - Y)$
# (`ntk.kernels.gradient_descent_mse` with `ntk.kernels.MLPKernel`). The second distance
# contains the $O(n^{-1/2})$ fluctuation of the empirical NTK at initialization; the first only
# the change of the NTK during training, which is smaller (Lee et al. 2019 bound it by
# $O(n^{-1/2})$; it is $O(n^{-1})$ in perturbation theory, Dyer & Gur-Ari 2020).

# %%
# NBVAL_IGNORE_OUTPUT
# Float32 training: the last digits depend on the machine
lazy = run_lazy_regime((64, 128, 256, 512, 1024), steps=200, lr=1.0, seed=0)
print(lazy.table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))

# %%
# NBVAL_IGNORE_OUTPUT
# Float32 training: the last digits depend on the machine
print("fitted log-log slopes against the width:")
for name, slope in lazy.slopes.items():
    print(f"  {name:26s} {slope:+.2f}")

# %% [markdown]
# ## 2. Features vs fixed kernels on a low-dimensional target
#
# `ntk.data.make_low_dim_task`: $x$ uniform on the sphere of radius $\sqrt{32}$ in
# $\mathbb R^{32}$, $y = \mathrm{He}_2(\langle u, x\rangle)/\sqrt 2$ for a hidden unit vector $u$,
# 512 training points. A rotation-invariant kernel needs $\sim d^2$ samples to fit a degree-2
# polynomial (Ghorbani et al. 2021); a network that finds $u$ needs far fewer.
#
# * infinite width: NNGP posterior mean and NTK regression (at the networks' training time and
#   at $t = \infty$);
# * NTK-parametrized networks, full-batch GD (lr 1, below the stability edge 2N/λ_max ≈ 1.4 of this kernel; 300 steps), *centered*: trained on
#   $y + f_0(x)$ and read out as $f - f_0$, which removes the random initial function $f_0$ and
#   makes their infinite-width limit exactly the NTK predictor;
# * muP networks (`WideMLP_MuP`, zero readout, base width 64) trained with `mup.optim.MuAdam`
#   (lr 0.03, full batch, 300 steps).

# %%
# NBVAL_IGNORE_OUTPUT
# Float32 training: the last digits depend on the machine
task = run_feature_task((64, 256, 1024), (64, 256, 1024), steps=300, ntk_lr=1.0, mup_lr=0.03)
for name, value in task.kernels.items():
    print(f"{name:24s} test MSE {value:.3f}")
print(task.table.round(3).to_string(index=False))

# %%
fig = plot_lazy_regime(lazy, task)
plt.show()

# %% [markdown]
# ## Checks
#
# The claims of this chapter, measured above. The slopes are fitted over a 16x range of
# widths from one seed, so we allow a margin of about 0.2 around the theoretical exponents.

# %%
# NBVAL_IGNORE_OUTPUT
# Measured values: the last digits depend on the machine
s = lazy.slopes
print(
    f"feature-change slopes {s['feature_change_hidden.0']:+.2f}, {s['feature_change_hidden.1']:+.2f} (theory -1/2)"
)
print(
    f"input / readout weight slopes {s['weight_change_hidden.0']:+.2f}, {s['weight_change_readout']:+.2f} (theory -1/2)"
)
print(f"hidden n x n weight slope {s['weight_change_hidden.1']:+.2f} (theory -1)")
print(
    f"distance slopes: to linearization {s['lin_distance']:+.2f}, to NTK prediction {s['ntk_distance']:+.2f}"
)
ntk_nets = task.table[task.table.model == "ntk"].set_index("width")
mup_nets = task.table[task.table.model == "mup"].set_index("width")
ntk_inf, ntk_t, nngp = (
    task.kernels["NTK (t=inf)"],
    task.kernels["NTK (t=steps)"],
    task.kernels["NNGP (Bayesian, t=inf)"],
)
widest = mup_nets.index.max()
print(f"NTK nets: distance to the NTK predictor {ntk_nets.ntk_distance.round(3).tolist()}")
print(f"NTK nets: test MSE {ntk_nets.test_mse.round(3).tolist()} vs NTK predictor {ntk_t:.3f}")
print(f"muP nets: test MSE {mup_nets.test_mse.round(3).tolist()}")
print(
    f"widest muP net ({widest}): {mup_nets.test_mse[widest]:.3f} vs NTK (t=inf) {ntk_inf:.3f}, NNGP {nngp:.3f}"
)

# %%
for name in (
    "feature_change_hidden.0",
    "feature_change_hidden.1",
    "weight_change_hidden.0",
    "weight_change_readout",
):
    assert -0.75 < s[name] < -0.3, (name, s[name])
print("PASS: feature, input-weight and readout-weight change slopes in (-0.75, -0.3)")
assert -1.25 < s["weight_change_hidden.1"] < -0.8
print("PASS: hidden n x n weight change slope in (-1.25, -0.8)")
assert s["ntk_distance"] < -0.35 and s["lin_distance"] < -0.35
assert (
    lazy.table.lin_distance.is_monotonic_decreasing
    and lazy.table.ntk_distance.is_monotonic_decreasing
)
print("PASS: distances to the linearization and to the NTK prediction shrink with width")
assert ntk_nets.ntk_distance.is_monotonic_decreasing
assert abs(ntk_nets.test_mse.iloc[-1] - ntk_t) < 0.15 * ntk_t  # close to the NTK predictor
print("PASS: centered NTK nets approach the NTK predictor")
assert mup_nets.test_mse[widest] < ntk_inf and mup_nets.test_mse[widest] < nngp
assert mup_nets.test_mse[widest] < 0.5 * min(ntk_inf, ntk_t, nngp)
assert mup_nets.test_mse.iloc[-1] < mup_nets.test_mse.iloc[0]
print("PASS: the widest muP net beats every kernel predictor by more than 2x")
