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
# # 02 - The neural tangent kernel
#
# Gradient descent moves a network's parameters; what does it do to the *function*? For the
# MSE loss L = (1/2N) Σ_i (f(x_i) - y_i)² and gradient flow dθ/dt = -η ∇L, the chain rule gives
#
# $$\frac{d f_t(x)}{dt} = -\frac{\eta}{N} \sum_{i} \hat\Theta_t(x, x_i)\,(f_t(x_i) - y_i),
# \qquad \hat\Theta_t(x, x') = \sum_p \frac{\partial f_t(x)}{\partial \theta_p}
# \frac{\partial f_t(x')}{\partial \theta_p},$$
#
# with Θ̂ the **empirical neural tangent kernel** (Jacot et al. 2018). In the NTK
# parametrization and as the width n → ∞, Θ̂ becomes a deterministic kernel Θ at
# initialization *and stays there during training*, so training is linear, solvable kernel
# regression (Lee et al. 2019). In this chapter:
#
# 1. the recursion that defines Θ, written out in a few lines and checked against `MLPKernel`;
# 2. Θ̂ at initialization converges to the analytic Θ as n^{-1/2};
# 3. how much Θ̂ moves during training, vs width: as 1/n for the smooth erf, as n^{-3/4} for ReLU;
# 4. a wide trained network against the infinite-width prediction and its own linearization,
#    and how the gap between them shrinks with width;
# 5. the NTK eigenspectrum: each eigendirection of the residual decays at its own rate.
#
# The experiment code lives in `ntk/chapters/neural_tangent_kernel.py` (also a script:
# `python ntk/ntk_properties.py --out figures`). Runs in about 16 s on an idle 2-core
# CPU.

# %%
import sys

if "google.colab" in sys.modules:  # install only what Colab lacks (it has torch)
    import subprocess

    # set in one place, .ci/colab.py, which writes this cell; brings mup and the rest
    package = "ntk-lab @ git+https://github.com/ntk-lab/ntk"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)

# %%
import matplotlib.pyplot as plt
import numpy as np

from ntk import MLPKernel
from ntk.chapters import neural_tangent_kernel as ntp
from ntk.chapters._plots import plot_error_vs_width
from ntk.fitting import fit_mean_power_law

SEED = 0

# %% [markdown]
# ## 1. The NTK recursion
#
# In the NTK parametrization, z^{l+1} = σ_w W^{l+1} φ(z^l)/√n + σ_b b^{l+1} with every
# parameter N(0, 1), the infinite-width NTK is built layer by layer next to the NNGP kernel
# K^l of chapter 01 (Jacot et al. 2018; Arora et al. 2019, eqs. 9-11):
#
# $$\Theta^1 = K^1 = \sigma_w^2 \frac{x\cdot x'}{d} + \sigma_b^2, \qquad
# \Theta^{l+1} = K^{l+1} + \sigma_w^2\, \dot K^{l+1}\, \Theta^l, \qquad
# \dot K^{l+1}(x, x') = \mathbb E_{(u, v)\sim N(0, \Lambda^l)}[\phi'(u)\phi'(v)].$$
#
# The first term is the gradient with respect to layer l+1's own weights (its inputs' kernel);
# the second carries the gradients of all earlier layers through the layer's derivative.
# With cos θ = Λ_12/√(Λ_11Λ_22), the derivative kernel is (π − θ)/(2π) for ReLU (Cho & Saul
# 2009) and (4/π)/√((1 + 2Λ_11)(1 + 2Λ_22) − 4Λ_12²) for erf. The NTK of the output is
# Θ = Θ^{L+1}. In numpy, against `ntk.kernels.MLPKernel` (float64):


# %%
def relu_expectations(s11, s12, s22):
    """E[relu(u) relu(v)] and E[relu'(u) relu'(v)], (u, v) ~ N(0, [[s11, s12], [s12, s22]])."""
    norm = np.sqrt(s11 * s22)
    theta = np.arccos(np.clip(s12 / norm, -1.0, 1.0))
    k = norm * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    return k, (np.pi - theta) / (2 * np.pi)


def erf_expectations(s11, s12, s22):
    """The same two expectations for erf (Williams 1997)."""
    a = (1 + 2 * s11) * (1 + 2 * s22)
    return 2 / np.pi * np.arcsin(2 * s12 / np.sqrt(a)), 4 / np.pi / np.sqrt(a - 4 * s12**2)


def ntk_from_scratch(x, depth, expectations, weight_std, bias_std):
    """(K, Θ) of the output on the rows of x by the recursions above."""
    k = weight_std**2 * x @ x.T / x.shape[1] + bias_std**2  # K^1
    theta = k  # Θ^1
    for _ in range(depth):
        q = np.diag(k)
        k_act, k_dot = expectations(q[:, None], k, q[None, :])
        k = weight_std**2 * k_act + bias_std**2  # K^{l+1}
        theta = k + weight_std**2 * k_dot * theta  # Θ^{l+1}
    return k, theta


x_demo = np.random.default_rng(SEED).standard_normal((6, 3))
for name, expectations in [("relu", relu_expectations), ("erf", erf_expectations)]:
    for depth in (1, 3):
        _, ours = ntk_from_scratch(x_demo, depth, expectations, weight_std=1.4, bias_std=0.3)
        ref = MLPKernel(depth, name, weight_std=1.4, bias_std=0.3).ntk(x_demo).numpy()
        assert np.abs(ours - ref).max() <= 1e-12 * np.abs(ref).max(), (name, depth)
print("PASS: the NTK recursion equals MLPKernel's NTK to 1e-12 (ReLU, erf; depth 1, 3)")

# %% [markdown]
# ## 2. The empirical NTK at initialization
#
# Θ̂ is a sum over parameters; grouped by hidden unit it is an average of n weakly dependent
# terms per layer, so it concentrates on the analytic Θ (`ntk.kernels.MLPKernel.ntk`) with
# O(n^{-1/2}) fluctuations (Jacot et al. 2018; Hanin & Nica 2019 compute the variance for
# ReLU). **Theory: slope -1/2.** Depth 2, ReLU, σ_w = √2, NTK parametrization, 16 inputs on
# the sphere, 3 networks per width; Θ̂ from `ntk.kernels.empirical_ntk`.

# %%
# NBVAL_IGNORE_OUTPUT
# Float32 training and random networks: the last digits depend on the machine
WIDTHS = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
init = ntp.ntk_error_vs_width(WIDTHS, net=ntp.Net(depth=2), n_networks=3, seed=SEED)
fit_init = fit_mean_power_law(init, "rel_error")
print(init.groupby("width").rel_error.mean().round(4).to_string())
print(f"fitted slope {fit_init.exponent:.3f}")

fig, ax = plt.subplots(figsize=(5.5, 4))
plot_error_vs_width(
    init, fit_init, ax, r"relative error $\|\hat\Theta_0 - \Theta\|_F / \|\Theta\|_F$"
)
ax.set_title("empirical NTK at initialization (depth 2)")
plt.show()

# %% [markdown]
# ## 3. How much does the kernel move during training?
#
# Train networks of one hidden layer with full-batch gradient descent (η = 1, 200 steps, 16
# points, MSE: the mean loss falls by more than an order of magnitude for erf and by three to
# four orders for ReLU, between 500x and 20000x at every width, more at width 2048 than at
# 64) and measure
# ‖Θ̂_T − Θ̂_0‖_F / ‖Θ̂_0‖_F on the training set. Six networks per width train at once as an
# `MLPEnsemble` (independent members, batched matmuls).
#
# *What theory says.* Each parameter moves by O(n^{-1/2}). Lee et al. (2019, Thm 2.1) bound
# the kernel's change by O(n^{-1/2}). The actual rate is faster for smooth activations: the
# first-order changes of the n unit terms carry the random sign of the unit's readout weight
# and cancel, and what survives is O(1/n) (Dyer & Gur-Ari 2020, arXiv:1909.11304; Huang & Yau
# 2020, arXiv:1909.08156; the "dNTK" of Roberts, Yaida & Hanin 2022, ch. 11).
# **Theory for erf: slope -1.** ReLU is not smooth: about √n units flip the sign of their
# pre-activation on some input during training, each changing its term abruptly, which adds a
# slower-decaying part. A scaling argument gives its rate: each pre-activation z_i(x) moves
# by O(n^{-1/2}), so a fraction O(n^{-1/2}) of the (unit, input) pairs, those with
# |z_i(x)| = O(n^{-1/2}), flip sign (the count Du et al. 2019, arXiv:1810.02054, use to
# bound the kernel's change by O(n^{-1/2})). Each flip changes one of the n terms of Θ̂ by
# O(1/n), with a sign set by the unit's random readout weight, so the ~n^{1/2} flips add up
# like a random walk: n^{1/4} / n = **n^{-3/4} for ReLU**, slower than erf's n^{-1}. This is our
# heuristic, not a cited theorem; we check both of its steps: the flip fraction falls as
# n^{-1/2}, and the kernel change as n^{-3/4}.

# %%
# NBVAL_IGNORE_OUTPUT
# Float32 training and random networks: the last digits depend on the machine
TRAIN_WIDTHS = [64, 128, 256, 512, 1024, 2048]
change = {
    name: ntp.ntk_change_vs_width(TRAIN_WIDTHS, net=net, seed=SEED)
    for name, net in ntp.CHANGE_NETS.items()
}
fits = {name: fit_mean_power_law(df, "ntk_change") for name, df in change.items()}
fit_flips = fit_mean_power_law(change["relu"], "flip_fraction")
for name, df in change.items():
    cols = ["ntk_change", "flip_fraction", "initial_loss", "train_loss"]
    summary = df.groupby("width")[cols].mean()
    print(f"{name}:\n{summary.to_string(float_format=lambda v: f'{v:.3g}')}")
    print(f"{name}: fitted slope {fits[name].exponent:.3f}\n")
print(f"ReLU sign-flip fraction: fitted slope {fit_flips.exponent:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ntp.plot_ntk_change(change, fits, axes[0])
flips = change["relu"].groupby("width").flip_fraction.mean()
axes[1].loglog(flips.index, flips.values, "o", label="ReLU networks (mean of 6)")
axes[1].loglog(
    flips.index, fit_flips(flips.index), "-", label=f"fit: slope {fit_flips.exponent:.2f}"
)
axes[1].set(
    xlabel="width",
    ylabel="share of (input, unit) pairs that flipped sign",
    title="ReLU pre-activations that changed sign in training",
)
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. A wide network against the infinite-width prediction
#
# If Θ̂ = Θ throughout, the outputs follow in closed form (Lee et al. 2019, eqs. 9-11):
# f_t = f_0 − Θ_{*X} Θ⁻¹ (I − e^{−ηΘt/N}) (f_0(X) − y). We train one ReLU network of width
# 2048 (one hidden layer, η = 0.5) and compare its test outputs with
#
# * the **infinite-width prediction** from its own f_0 with the analytic Θ
#   (`ntk.kernels.gradient_descent_mse`), and the infinite ensemble's mean ± 2 std
#   (`gradient_descent_mse_ensemble`, the band: what other random networks would do);
# * its **linearization** f_lin(x; θ) = f_0(x) + J_0(x)(θ − θ_0) (`ntk.kernels.LinearizedModel`),
#   trained by the same gradient descent.
#
# Gradient *descent* with a finite step multiplies each residual eigencomponent by
# (1 − ηλ/N) per step rather than e^{−ηλ/N}; `ntp.discrete_gd_kernels` turns Θ into the kernel
# whose gradient flow is exactly that, so the comparison carries no discretization error.

# %%
# NBVAL_IGNORE_OUTPUT
# Float32 training and random networks: the last digits depend on the machine
traj = ntp.training_trajectories(2048, learning_rate=0.5, seed=SEED)
errs = ntp.trajectory_errors(traj)
print(errs.to_string(index=False, float_format=lambda v: f"{v:.3g}"))

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ntp.plot_trajectories(traj, axes)
fig.tight_layout()
plt.show()

# %% [markdown]
# At width 2048 the relative gap between the network's test outputs and the infinite-width
# prediction grows during training, to about 0.16 at the end: training reaches the
# small-eigenvalue directions, where the O(n^{-1/2}) difference between Θ̂_0 and Θ matters
# most (Θ⁻¹ amplifies it). Its own linearization, which shares Θ̂_0 and differs only by the
# kernel's motion from section 3, stays closer at every time.
#
# **How the gap shrinks with width.** The gap comes from Θ̂_0 − Θ = O(n^{-1/2}), so it should
# shrink as n^{-1/2}. One network per width is noisy (the gap depends on how its Θ̂_0 happens
# to miss Θ), so we train three networks (three seeds, data and initialization) at each width
# and fit the mean of the final gap. **Theory: slope −1/2.**

# %%
# NBVAL_IGNORE_OUTPUT
# Float32 training and random networks: the last digits depend on the machine
GAP_WIDTHS = [256, 512, 1024, 2048, 4096]
gap = ntp.trajectory_gap_vs_width(GAP_WIDTHS, n_networks=3, seed=SEED)
fit_gap = fit_mean_power_law(gap, "final_gap")
fit_floor = fit_mean_power_law(gap, "floor")  # section 5
print(gap.groupby("width")[["final_gap", "max_gap"]].mean().round(3).to_string())
print(f"fitted slope of the mean final gap: {fit_gap.exponent:.3f}")

fig, ax = plt.subplots(figsize=(5.5, 4))
plot_error_vs_width(
    gap.rename(columns={"final_gap": "rel_error"}),
    fit_gap,
    ax,
    "test-output gap, network vs NTK prediction",
)
ax.set_title("trained network vs infinite-width prediction")
plt.show()

# %% [markdown]
# ## 5. The NTK spectrum: what is learned first
#
# Write Θ = Σ_i λ_i u_i u_iᵀ on the training inputs. Linear dynamics decouple along the
# eigenvectors: the residual component u_i·(f_t − y) decays as (1 − ηλ_i/N)^t per gradient
# step (e^{−ηλ_i t/N} in gradient flow), so directions with large eigenvalues are learned first
# and the small-λ tail last (the spectral bias of kernel regression; Arora et al. 2019,
# Bordelon et al. 2020).
#
# Below: the spectra of the analytic Θ and of the network's own NTK at init Θ̂_0 (they differ
# by a few percent), then the width-2048 network's residual along the top eigenvectors of each
# (dots) against the prediction from its initial residual (lines). In the network's own basis
# every top-8 direction follows its prediction to within about 1% of its initial component at
# all times (asserted: 2%). In the analytic basis the directions holding at least 2% of the
# initial residual follow to within 10% of their start; a direction holding less (here
# direction 7, under 1%) is swamped by what leaks into it from the others (below) and does not
# follow. Once a direction's residual has decayed, its dots stop falling and sit orders of
# magnitude above the lines, *in both bases*: at the last step the gaps of the directions
# holding at least 2% of the residual are between 1e-6 and 2e-3 of their start (the analytic
# direction 7 about 1e-2). The reason: the slow directions still hold residual after the fast
# ones are done, and the kernel that drives the network is neither Θ (it misses it by
# O(n^{-1/2})) nor fixed (it moves by O(n^{-3/4}), section 3), so its eigenvectors are
# slightly rotated relative to either basis and leak a small share of the slow residual into
# every fast direction. The linearized network, whose kernel is exactly Θ̂_0 and fixed,
# follows the prediction in the Θ̂_0 basis down to float32 round-off, while the network floors
# far above it: the two differ only in the kernel's motion.
#
# **How the floor scales with width.** If the floor is the kernel's motion, it should shrink
# with width at the motion's rate, n^{-3/4} for ReLU (section 3). On the three networks per
# width of section 4 we measure `ntp.residual_floor`: the largest departure, over steps
# t ≥ 32 and the top 8 eigenvectors of the network's own Θ̂_0, of its train residual from
# that kernel's linear dynamics, relative to the whole initial residual ‖f_0(X) − y‖ (not to
# each direction's own start, which can be tiny and makes single directions noisy). Its mean
# falls with width, with a fitted slope near −3/4, the kernel's motion. What three networks
# per width can and cannot say: the slope's standard error (from the fit's residuals) is about
# 0.13, so the floor falls (the slope is more than 2 standard errors below 0) and agrees with
# −3/4 within 2 standard errors; but −1/2, the rate of the initial kernel's own fluctuation,
# is inside that interval too, so this measurement does **not** tell the two rates apart (with
# 12 networks per width the standard error is still 0.09). The direct evidence that the floor
# is the kernel's motion is the comparison above: the linearized network, whose kernel cannot
# move, has no floor.

# %%
# NBVAL_IGNORE_OUTPUT
# Float32 training and random networks: the last digits depend on the machine
eig = ntp.residual_eigendirections(traj)
gaps = ntp.eigendirection_errors(eig, top=8)
print(gaps.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
print("\nresidual floor (own basis, t >= 32, relative to the initial residual), mean of 3:")
print(gap.groupby("width").floor.mean().to_string(float_format=lambda v: f"{v:.2g}"))
print(f"fitted slope: {fit_floor.exponent:.3f} (standard error {fit_floor.stderr:.3f})")

fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
ntp.plot_eigendirections(eig, axes)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Claims, checked
#
# Fitted exponents must be within ±0.15 of the theory values quoted above (±0.1 for the ReLU
# scaling argument, ±0.2 for the three-network gap, 2 standard errors of its own fit for the
# residual floor). The first cell
# shows the measured values (their last digits depend on the machine); the second asserts the
# claims and prints only verdicts.

# %%
# NBVAL_IGNORE_OUTPUT
# Measured values: the last digits depend on the machine
print(f"empirical NTK at init, error slope: {fit_init.exponent:.3f} (theory -1/2, CLT)")
print(f"NTK change in training, erf: slope {fits['erf'].exponent:.3f} (theory -1)")
print(f"NTK change in training, ReLU: slope {fits['relu'].exponent:.3f} (argument above: -3/4)")
print(f"ReLU sign-flip fraction: slope {fit_flips.exponent:.3f} (argument above: -1/2)")
late = errs.iloc[1:]
print(
    f"width 2048: network vs infinite-width prediction, final gap {late.flow_vs_network.iloc[-1]:.3g}"
)
print(f"test-output gap vs width: slope {fit_gap.exponent:.3f} (theory -1/2)")
print(f"residual floor vs width: slope {fit_floor.exponent:.3f} (kernel motion: -3/4)")
c0 = np.abs(eig.own_measured[0, :8])
lin_err = (np.abs(eig.own_linearized[:, :8] - eig.own_predicted[:, :8]) / c0).max()
late_steps = eig.steps >= 32
net_floor = (
    np.abs(eig.own_measured[late_steps, :8] - eig.own_predicted[late_steps, :8]) / c0
).max()
print(
    f"own-NTK basis, top 8: linearized net misses its prediction by <= {lin_err:.2g}, "
    f"the network by up to {net_floor:.2g} of the initial component (t >= 32)"
)
# learned first: after 8 steps, the larger lambda_i, the smaller the remaining fraction
# |u_i . (f_t - y)| / |u_i . (f_0 - y)| (directions with a non-negligible initial component)
step = list(eig.steps).index(8)
keep = np.abs(eig.measured[0]) > 0.05 * np.linalg.norm(eig.measured[0])
remaining = np.abs(eig.measured[step, keep] / eig.measured[0, keep])
print("eigenvalues:", np.round(eig.eigenvalues[keep], 3))
print("fraction left after 8 steps:", np.round(remaining, 3))

# %%
assert abs(fit_init.exponent + 0.5) <= 0.15
print("PASS: empirical NTK at init misses the analytic one by ~ width^-1/2")
assert abs(fits["erf"].exponent + 1) <= 0.15
print("PASS: erf NTK change in training ~ 1/width (slope within 0.15 of -1)")
assert abs(fits["relu"].exponent + 0.75) <= 0.1 and abs(fit_flips.exponent + 0.5) <= 0.1
print("PASS: ReLU NTK change ~ width^-3/4 and sign flips ~ width^-1/2 (slopes within 0.1)")
ratio = {
    n: df.groupby("width").train_loss.mean() / df.groupby("width").initial_loss.mean()
    for n, df in change.items()
}
assert (ratio["erf"] < 0.1).all() and ratio["relu"].between(5e-5, 2e-3).all()
assert ratio["relu"].iloc[-1] < ratio["relu"].iloc[0]
print("PASS: mean training loss fell by > 10x (erf) and by 500x-20000x (ReLU) at every width,")
print("      for ReLU more at width 2048 than at width 64")
assert (late.linearized_vs_network < late.flow_vs_network).all()
assert late.flow_vs_network.is_monotonic_increasing
assert 0.1 < late.flow_vs_network.iloc[-1] < 0.25
print("PASS: at width 2048 the gap to the NTK prediction grows in training to 0.1-0.25,")
print("      and the network stays closer to its linearization at every time")
assert abs(fit_gap.exponent + 0.5) <= 0.2
print("PASS: test-output gap to the NTK prediction ~ width^-1/2 (slope within 0.2)")
big = gaps.initial.abs() >= 0.02  # directions holding at least 2% of the initial residual
own, analytic = gaps.basis == "own", gaps.basis == "analytic"
assert gaps[own].max_gap.max() < 0.02
print("PASS: in its own NTK's basis each top-8 direction follows its prediction within 2%")
assert gaps[big & analytic].max_gap.max() < 0.1
assert (~big & analytic).any() and (gaps[~big & analytic].max_gap > 0.1).all()
print("PASS: in the analytic basis those holding >= 2% of the residual follow within 10%,")
print("      and those holding less do not")
assert gaps[big].late_gap.between(1e-6, 2e-3).all() and gaps.late_gap.max() < 0.05
print("PASS: at the last step the gaps are 1e-6 to 2e-3 of the start (>= 2% directions)")
spectra = np.abs(eig.own_eigenvalues[:8] / eig.eigenvalues[:8] - 1)
assert spectra.max() < 0.1
print("PASS: the top-8 eigenvalues of the network's NTK at init are within 10% of the analytic")
stuck = [
    np.abs(m[-1, :8]) > 100 * np.abs(p[-1, :8])
    for m, p in [(eig.measured, eig.predicted), (eig.own_measured, eig.own_predicted)]
]
assert np.all(stuck)
print("PASS: at the last step every top-8 direction sits > 100x above its prediction (both bases)")
assert lin_err < 1e-4 and net_floor > 100 * lin_err
print("PASS: the linearized net follows its own NTK's prediction; the network floors far above")
# window from the fit's own standard error (3 networks per width), not a fixed width
assert fit_floor.exponent + 2 * fit_floor.stderr < 0  # the floor falls with width
assert abs(fit_floor.exponent + 0.75) < 2 * fit_floor.stderr  # consistent with -3/4
print("PASS: the network's residual floor falls with width, consistent with the kernel's")
print("      motion (-3/4) within 2 standard errors; -1/2 is not excluded")
assert np.all(np.diff(remaining) > 0)  # eigenvalues are in descending order
print("PASS: the larger the eigenvalue, the smaller the fraction left after 8 steps")
