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
# # 04 - From lazy to rich: one knob between the kernel regime and feature learning
#
# Chapters 02 and 03 showed wide NTK-parametrized networks training lazily: their tangent
# kernel (chapter 02, section 3), weights and features (chapter 03) barely move, and training
# is kernel regression (chapter 03). Chizat, Oyallon & Bach (2019)
# made laziness a knob. For any model $f(x; w)$ and a scale $\alpha > 0$, train the centered,
# rescaled model
#
# $$f_\alpha(x; w) = \alpha\,\big(f(x; w) - f(x; w_0)\big) \quad\text{on}\quad
#   L_\alpha(w) = \frac{1}{\alpha^2}\,\frac{1}{2N}\sum_{i=1}^N \big(f_\alpha(x_i; w) - y_i\big)^2$$
#
# by gradient descent $w \leftarrow w - \eta\,\nabla_w L_\alpha$. The gradient is
# $\nabla_w L_\alpha = \frac{1}{\alpha N} J^\top (f_\alpha - y)$ with $J = \partial f / \partial w$,
# so in function space one step changes the outputs by
# $\Delta f_\alpha \approx \alpha J \Delta w = -\frac{\eta}{N}\,\Theta_w\,(f_\alpha - y)$, with
# $\Theta_w = J J^\top$ the tangent kernel of $f$: **the same step for every $\alpha$**, made
# with weight changes $\Delta w \propto 1/\alpha$. Large $\alpha$: weights, features and
# $\Theta_w$ move $\propto 1/\alpha$, and training is kernel regression with $\Theta_{w_0}$ (the
# lazy regime). Small $\alpha$: the weights must travel far, the features and the kernel change
# (the rich regime).
#
# Our $f$ is a two-layer GELU network in NTK parametrization,
# $f(x) = n^{-1/2}\sum_{i=1}^n a_i\,\mathrm{gelu}(\langle w_i, x\rangle/\sqrt d)$, whose own
# weights move by $\sim n^{-1/2}$ (chapter 03). The laziness scale is then $\alpha\sqrt n$:
# lazy when $\alpha\sqrt n \gg 1$, rich when $\alpha\sqrt n \lesssim 1$ (Geiger et al. 2020
# introduced this width-dependent scale; Woodworth et al. 2020 study the same kernel-to-rich
# transition as a function of the initialization scale). The task is single-index:
# $y = \mathrm{He}_2(\langle u, x\rangle)/\sqrt 2$, $x$ uniform on the sphere of radius
# $\sqrt d$ in $d = 32$, 256 training points, no noise; a network that learns features turns
# its first-layer weights toward $u$. We measure, at widths
# 16 to 1024 and $\alpha$ from 1/16 to 64 (full-batch gradient descent, $\eta = 1$, 300 steps,
# float64), the held-out loss, the **feature movement**
# $\|h(T) - h(0)\|_F / \|h(0)\|_F$ of the hidden layer and the **kernel movement**
# $\|\Theta(T) - \Theta(0)\|_F / \|\Theta(0)\|_F$ on 64 training inputs.
#
# The code is in `ntk/chapters/lazy_to_rich.py` (also a script:
# `python -m ntk.chapters.lazy_to_rich --out figures`).

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
import torch

from ntk.chapters import lazy_to_rich as lr
from ntk.fitting import fit_loglog_slope

torch.set_num_threads(1)  # small matrices: one thread is faster on a busy 2-core machine
setup = lr.Setup()
print(setup)

# %% [markdown]
# ## 1. One step: the same function-space step for every $\alpha$
#
# At $w_0$ we have $f_\alpha = 0$, so the first step is exactly
# $\Delta w = \frac{\eta}{\alpha N} J^\top y$: $\alpha\,\|\Delta w\|$ does not depend on
# $\alpha$, and the output change $\Delta f_\alpha = \alpha\,(f(w_0 + \Delta w) - f(w_0))$ tends
# to the kernel step $\frac{\eta}{N}\Theta_{w_0}\,y$ with an $O(1/\alpha)$ correction (the
# curvature of $f$ along $\Delta w$). Computed directly on a width-256 network:

# %%
task = setup.task()
x, y = task.x_train, task.y_train
one_step = []
for alpha in (0.01, 0.1, 1.0, 10.0, 100.0):
    net = setup.network(256)
    model = lr.AlphaScaled(net, alpha)
    loss = 0.5 * (model(x) - y).pow(2).mean() / alpha**2  # L_alpha
    grads = torch.autograd.grad(loss, list(net.parameters()))
    with torch.no_grad():
        for p, g in zip(net.parameters(), grads, strict=True):
            p -= setup.lr * g  # one gradient step
        step = math.sqrt(sum(float(g.pow(2).sum()) for g in grads)) * setup.lr
        df = model(x)  # f_alpha after the step (it was 0 before)
    one_step.append({"alpha": alpha, "alpha_times_dw": alpha * step, "df": df})
kernel_step = one_step[-1]["df"]  # alpha = 100 as the reference for the kernel step
for r in one_step:
    r["df_vs_kernel_step"] = float((r["df"] - kernel_step).norm() / kernel_step.norm())

# %%
# NBVAL_IGNORE_OUTPUT
for r in one_step:
    print(
        f"alpha {r['alpha']:6g}: alpha * |dw| = {r['alpha_times_dw']:.6f}, "
        f"|df_alpha - df_100| / |df_100| = {r['df_vs_kernel_step']:.2e}"
    )

# %%
scaled = [r["alpha_times_dw"] for r in one_step]
assert max(scaled) - min(scaled) < 1e-9 * max(scaled)  # alpha |dw| is one number
gaps = [r["df_vs_kernel_step"] for r in one_step[:-1]]  # alpha = 0.01 ... 10
ratios = [a / b for a, b in zip(gaps[:-1], gaps[1:], strict=True)]  # x10 in alpha each
assert all(5 < q < 20 for q in ratios[1:]), ratios  # ~ 1/alpha once the step is small
print("PASS: alpha |dw| is independent of alpha; df_alpha -> kernel step as 1/alpha")

# %% [markdown]
# ## 2. The phase diagram over width and $\alpha$
#
# One initialization per width (the same $w_0$ for every $\alpha$), 24 trainings.

# %%
# NBVAL_IGNORE_OUTPUT
grid = lr.run_grid(lr.WIDTHS, lr.ALPHAS, setup)
print(lr.summary(grid))
print(f"training time per run (s): {grid.table.seconds.round(1).tolist()}")

# %%
fig = lr.plot_phase_diagram(grid)
plt.show()

# %% [markdown]
# Read each panel from top (lazy) to bottom (rich). With large $\alpha\sqrt n$ kernel
# regression lowers the training loss (to between 0.1 and 0.2 at
# $\alpha = 64$, the `train_loss` grid) but not the held-out loss, which stays within 0.06 of
# that of predicting 0 (printed above): in 300 steps the kernel does not find $u$. Below the
# line $\alpha\sqrt n \approx 1$ the networks move their features by $O(1)$, their tangent
# kernel changes by more than its own size, and the held-out loss drops to about a third of
# the lazy one (smallest over largest $\alpha$: between 0.28 and 0.35 at the four widths).
# Along a row the wider network is lazier, and the boundary follows $\alpha \propto n^{-1/2}$.

# %%
fig = lr.plot_movement(grid)
plt.show()

# %% [markdown]
# ## 3. Checks
#
# * **Kernel and feature movement fall like $1/\alpha$** in the lazy corner: fitted slope over
#   the two largest $\alpha$ (16 and 64, $\alpha\sqrt n \ge 64$) within 0.1 of $-1$, at every
#   width.
# * **Feature learning disappears as $\alpha$ grows**: at every width the feature movement
#   falls at every step of $\alpha$, and the first-layer alignment with $u$,
#   $\|W u\|^2 / \|W\|_F^2$ (about $1/d$ at initialization), is at least 4 times its initial
#   value at the smallest $\alpha$ and within 10% of it at the largest.
# * **$\alpha\sqrt n$ alone sets the feature movement**: runs with equal $\alpha\sqrt n$ at
#   widths 16 and 256, or 64 and 1024, agree within a factor 1.25; at a fixed $\alpha$ the
#   wider network moves its features less.
# * **Lazy and rich corners**: at the largest $\alpha$ the training loss falls to 0.1-0.2 while
#   the held-out loss stays within 0.06 of predicting 0; at the smallest $\alpha$ the kernel
#   movement exceeds 1.
# * **Rich beats lazy on held-out loss**: at every width the smallest $\alpha$ has between 0.25
#   and 0.42 times the held-out loss of the largest (about a third).
# * **The lazy corner is kernel regression, in function space.** A held-out *loss* cannot show
#   this here: NTK regression scores 0.509 and predicting 0 scores 0.542, so any predictor near
#   0 looks "close to kernel regression". We compare functions instead, on the 1024 held-out
#   inputs: $d = \|f_\alpha - f_K\| / \|f_K\|$, where $f_K$ is kernel regression at the same
#   training time and the zero predictor has $d = 1$. Against regression with the network's
#   **own initial kernel** $\Theta_{w_0}$ (the $\alpha \to \infty$ limit at fixed width,
#   Chizat et al. 2019) the distance at $\alpha = 64$ is below 0.02 at every width, and it falls
#   like $1/\alpha$ (the curvature correction of section 1): fitted slope between
#   $\alpha = 4$ and 16 within 0.15 of $-1$ at every width (the rivals, no approach or
#   $\alpha^{-1/2}$, are 0.5 away or more). Against the **analytic** NTK (the further
#   $n \to \infty$ limit) the lazy networks sit at a distance that falls with width like
#   $n^{-1/2}$, the size of the finite-width kernel's fluctuation: fitted slope over the four
#   widths between $-0.75$ and $-0.25$ (one initialization per width, so the points scatter;
#   the theorem is Jacot et al. 2018, checked in chapter 03). The tables below print both.

# %%
# NBVAL_IGNORE_OUTPUT
own, analytic = grid.distance_table("own"), grid.distance_table("analytic")
print("||f_alpha - f_K|| / ||f_K|| against regression with the network's own initial kernel:")
print(own.round(4).to_string())
print("\n... and with the analytic NTK (zero predictor: 1):")
print(analytic.round(4).to_string())

# %%
t = grid.table
zero = grid.zero_loss  # held-out loss of predicting 0
assert abs(zero - 0.5 * task.y_test.pow(2).mean().item()) < 1e-12
for w in lr.WIDTHS:
    for column in ("feature_change", "kernel_change"):
        slope = grid.alpha_slope(column, w)
        assert abs(slope + 1) < 0.1, (w, column, slope)
    rows = t[t.width == w].sort_values("alpha")
    assert (rows.feature_change.diff().iloc[1:] < 0).all(), w
    align, align0 = rows.alignment.to_numpy(), rows.alignment_init.to_numpy()
    assert align[0] >= 4 * align0[0] and abs(align[-1] / align0[-1] - 1) < 0.1, w
    assert 0.25 < rows.test_loss.iloc[0] / rows.test_loss.iloc[-1] < 0.42, w  # about a third
    assert 0.1 < rows.train_loss.iloc[-1] < 0.2 and abs(rows.test_loss.iloc[-1] - zero) < 0.06, w
    assert rows.kernel_change.iloc[0] > 1, w
    # function space: lazy = regression with the own initial kernel, distance ~ 1/alpha
    assert own.loc[max(lr.ALPHAS), w] < 0.02, (w, own[w])
    assert abs(fit_loglog_slope([4.0, 16.0], own.loc[[4.0, 16.0], w]) + 1) < 0.15, (w, own[w])
lazy_analytic = analytic.loc[max(lr.ALPHAS)]
assert -0.75 < fit_loglog_slope(lazy_analytic.index, lazy_analytic) < -0.25, lazy_analytic
for alpha in lr.ALPHAS:
    along_row = t[t.alpha == alpha].sort_values("width").feature_change
    assert (along_row.diff().iloc[1:] < 0).all(), alpha
collapse = grid.collapse("feature_change")
assert len(collapse) >= 8 and collapse.ratio.between(0.8, 1.25).all(), collapse
print("PASS: movements ~ 1/alpha, set by alpha sqrt(n); rich beats lazy (held-out loss ratio")
print("      0.25-0.42); lazy held-out loss within 0.06 of predicting 0")
print("PASS: lazy (alpha = 64) within 2% of its own kernel's regression in function space at")
print("      every width, distance ~ 1/alpha; distance to the analytic NTK ~ width^-1/2")

# %% [markdown]
# ## 4. What the neurons do
#
# Each first-layer weight vector $w_i$ drawn as a point: its component along the target
# direction, $\langle w_i, u\rangle$, against the norm of the rest. Grey: initialization;
# blue: after training. Pick a width and $\alpha$ with the sliders (in Jupyter or Colab, with
# `ipywidgets`); the static figure below shows width 64 at three values of $\alpha$. In the lazy
# corner ($\alpha = 64$) the points do not visibly move: at every width no neuron moves by
# more than 1% of the mean neuron length. In the rich corner ($\alpha = 1/16$) they travel,
# the farthest by more than the mean neuron length: a minority of the neurons (between 1% and
# 40% at every width) end with $|\langle w_i, u\rangle|$ above twice its largest initial value,
# and carry the learned target; many also grow in the other directions, by more than 10%
# (more than half of them at width 64, at least a fifth at every width; with
# $\alpha\sqrt n < 1$ the weights must change a lot to make $f_\alpha$ of order one). The
# table (`neuron_table`, also in the summary above) and the next cell check this.

# %%
# NBVAL_IGNORE_OUTPUT
neurons = grid.neuron_table()
print(neurons.to_string(index=False, float_format=lambda v: f"{v:.3g}"))

# %%
lazy = neurons[neurons.alpha == max(lr.ALPHAS)]
rich = neurons[neurons.alpha == min(lr.ALPHAS)]
assert (lazy.largest_move < 0.01).all() and (lazy.grown_along == 0).all(), lazy
assert (lazy.grown_across == 0).all(), lazy
assert (rich.largest_move > 1).all() and rich.grown_along.between(0.01, 0.4).all(), rich
assert (rich.grown_across > 0.2).all() and rich.set_index("width").grown_across[64] > 0.5, rich
print("PASS: lazy neurons move < 1% at every width; rich ones travel: a minority grows along u")
print("      (> 2x the largest initial component), many grow across (> 10%)")

# %%
try:
    import ipywidgets as widgets
except ImportError:  # plain Python, or a Jupyter without widgets: the static figure only
    widgets = None


def show(width: int, alpha: float) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    lr.draw_neurons(axes[0], grid, width, alpha)
    for a, style in ((alpha, "-"), (min(lr.ALPHAS), ":"), (max(lr.ALPHAS), "--")):
        h = grid.histories.get((width, a))
        if h is not None:
            axes[1].semilogy(h.step, h.test_loss, style, label=f"α = {a:g}: held-out")
    axes[1].set(xlabel="gradient-descent step", ylabel="loss (0.5 MSE)", title="held-out loss")
    axes[1].legend(fontsize=8)
    plt.show()


# %%
# NBVAL_IGNORE_OUTPUT
if widgets is not None:
    widgets.interact(
        show,
        width=widgets.SelectionSlider(options=list(lr.WIDTHS), value=64, description="width"),
        alpha=widgets.SelectionSlider(
            options=[(f"{a:g}", a) for a in lr.ALPHAS], value=1.0, description="alpha"
        ),
    )
else:
    print("ipywidgets is not installed: see the static figure below")

# %%
fig = lr.plot_neurons(grid, width=64)
plt.show()

# %% [markdown]
# ## 5. The bridge to chapter 05: $\alpha = n^{-1/2}$ is the mean-field network
#
# Put $\alpha = n^{-1/2}$ in the definitions above. The model becomes
#
# $$f_\alpha(x) = \frac{1}{n}\sum_{i=1}^n a_i\,\mathrm{gelu}(\langle w_i, x\rangle/\sqrt d)
#   \;-\; f_\alpha^{(0)}(x),$$
#
# an **average** over neurons instead of a $1/\sqrt n$-normalized sum, and the loss is
# $L_\alpha = n\cdot\frac{1}{2N}\sum_i (f_\alpha(x_i) - y_i)^2$, so gradient descent with rate
# $\eta$ on $L_\alpha$ is gradient descent with rate $\eta\,n$ on the plain squared loss. A
# $1/n$ readout with a learning rate $\propto n$ on $O(1)$ weights is the **mean-field**
# parametrization of two-layer networks (Mei, Montanari & Nguyen 2018; Chizat & Bach 2018;
# Rotskoff & Vanden-Eijnden 2018; Sirignano & Spiliopoulos 2020): each neuron is one particle
# $(a_i, w_i)$, the network is an integral against their empirical distribution, and as
# $n \to \infty$ training becomes a deterministic flow of that distribution (a Wasserstein
# gradient flow) in which every neuron moves by $\Theta(1)$: features learn at infinite width.
# It sits on the line $\alpha\sqrt n = 1$ of the phase diagram, at the edge of the rich side,
# at every width.
#
# Chapter 05 derives the same network from the other end (a $1/n$ readout multiplier and both
# learning rates $\eta\,n$, "muP"): for networks with one hidden layer muP *is* the mean-field
# parametrization (Yang & Hu 2021, who introduce muP as its extension to any depth). The one
# difference from the
# network here is the centering $-f^{(0)}_\alpha$, which muP does not need: its output at
# initialization is $O(n^{-1/2})$ and vanishes with a zero readout. Chapter 05 keeps the
# features moving at every width by this design: each update changes the features by
# $\Theta(1)$, independently of $n$.
#
# **References.** L. Chizat, E. Oyallon, F. Bach, "On Lazy Training in Differentiable
# Programming", NeurIPS 2019, arXiv:1812.07956. M. Geiger, S. Spigler, A. Jacot, M. Wyart,
# "Disentangling feature and lazy training in deep neural networks", J. Stat. Mech. 2020,
# arXiv:1906.08034. B. Woodworth et al., "Kernel and Rich Regimes in Overparametrized Models",
# COLT 2020, arXiv:2002.09277. A. Jacot, F. Gabriel, C. Hongler, "Neural Tangent Kernel:
# Convergence and Generalization in Neural Networks", NeurIPS 2018, arXiv:1806.07572.
# S. Mei, A. Montanari, P.-M. Nguyen, "A mean field view of the landscape of two-layer neural
# networks", PNAS 2018, arXiv:1804.06561. L. Chizat, F. Bach, "On the Global Convergence of
# Gradient Descent for Over-parameterized Models using Optimal Transport", NeurIPS 2018,
# arXiv:1805.09545. G. Rotskoff, E. Vanden-Eijnden, "Trainability and Accuracy of Neural
# Networks: An Interacting Particle System Approach", 2018, arXiv:1805.00915. J. Sirignano,
# K. Spiliopoulos, "Mean field analysis of neural networks: A law of large numbers", SIAM J.
# Appl. Math. 2020, arXiv:1805.01053. G. Yang, E. J. Hu, "Tensor Programs IV: Feature Learning
# in Infinite-Width Neural Networks", ICML 2021, arXiv:2011.14522.
