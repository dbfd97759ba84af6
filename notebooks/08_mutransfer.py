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
# # 08 - muTransfer: tune the learning rate narrow, use it wide
#
# Under muP the optimal hyperparameters of a network converge as its width grows, so the
# learning rate tuned on a narrow proxy is (close to) optimal for the wide model, and at that
# learning rate the wide model is better (Yang et al. 2022, *Tensor Programs V: Tuning Large
# Neural Networks via Zero-Shot Hyperparameter Transfer*, arXiv:2203.03466). Under the standard
# parametrization (SP) the optimum drifts: with Adam every one of the n inputs of a hidden or
# readout unit moves by about the learning rate, so the unit's change grows like n · lr and the
# best lr shrinks like 1/n (notebook 06 derives this, notebook 07 measures it).
#
# We sweep the Adam learning rate on a log2 grid for a depth-2 MLP on the 8×8 digits at widths
# 32 … 1024 (a 32× range), in SP and in muP (the `mup` package, base width 32), with three
# seeds, and reproduce the classic two-panel figure. Then the payoff: the muP model of width
# 1024 trained at the learning rate tuned at width 32, against the SP model of width 1024 at
# the learning rate tuned *at width 1024*. A second sweep repeats everything with plain SGD (SP)
# against `mup.MuSGD` (muP).
#
# The sweeps spread their 720 training runs over two worker processes; see the README for the
# time on a 2-core CPU.

# %%
import sys

if "google.colab" in sys.modules:  # install only what Colab lacks (it has torch)
    import subprocess

    # set in one place, .ci/colab.py, which writes this cell; brings mup and the rest
    package = "ntk-lab @ git+https://github.com/ntk-lab/ntk"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)

# %%
# %matplotlib inline
import functools
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ntk import lr_sweep, optima, plot_transfer
from ntk.chapters.mutransfer import (
    at_transferred_lr,
    largest_stable_lr,
    payoff,
    train_mlp,
    width_slope,
)
from ntk.scaling.sweep import lr_drift, summarize

pd.set_option("display.width", 130)

# %% [markdown]
# ## The experiment
#
# One training run: a depth-2 ReLU MLP (He init), 30 Adam steps on mini-batches of 128 of the
# 1347 training digits with the learning rate decayed linearly to 0, scored by its final
# cross-entropy on the whole training set (the muTransfer papers compare training losses: the
# question is how well the optimizer does at each width). SP is `WideMLP` with `torch.optim.Adam`;
# muP is `WideMLP_MuP` (a `MuReadout`) with `mup.MuAdam`, drawn from the same random numbers. At
# the base width 32 the two are then the same network with the same optimizer: the width-32
# runs of the two parametrizations are identical (checked below), and any difference at larger
# widths is the parametrization's doing. (`mup` recommends starting the readout at zero; we keep
# it random so that the base-width runs coincide.) A run whose loss becomes NaN or infinite
# counts as diverged (loss inf). That run is `train_mlp` in `ntk/chapters/mutransfer.py`.

# %%
WIDTHS = [32, 64, 128, 256, 512, 1024]
LOG2_LRS = [float(a) for a in range(-12, -1)]  # 2^-12 ... 2^-2, one octave apart
SEEDS = [0, 1, 2]

# %% [markdown]
# `lr_sweep` runs every (parametrization, width, log2 lr, seed) cell, two processes at a time.
# Given `cache=` (a file) it also stores each result as it finishes, so an interrupted or
# extended sweep trains only the missing cells; here everything stays in memory.

# %%
# NBVAL_IGNORE_OUTPUT
grid = dict(log2_lrs=LOG2_LRS, widths=WIDTHS, seeds=SEEDS, parametrizations=["sp", "mup"])
results = lr_sweep(train_mlp, **grid, workers=2, progress=False)
print(f"{len(results)} runs, {int(np.isinf(results['loss']).sum())} diverged")
summary = summarize(results)
table = summary.pivot_table(index="log2_lr", columns=["parametrization", "width"], values="mean")
print(table.round(3).to_string())

# %% [markdown]
# ## The classic figure
#
# Training loss against log2 learning rate, one curve per width (dark = narrow, light = wide),
# seed mean ± standard error, stars at each width's optimum.

# %%
fig = plot_transfer(results, ["sp", "mup"], titles=["SP (Adam)", "muP (MuAdam)"])
for ax in fig.axes:
    ax.set_yscale("log")
    ax.set_ylim(0.01, 3.0)
    ax.set_xlabel("log2 learning rate")
fig.axes[0].set_ylabel("final training loss (cross-entropy)")
plt.show()

# %% [markdown]
# ## Optima and their drift
#
# Per width, the optimum is the grid point with the lowest seed-mean loss; `log2_lr_std` is its
# spread over 200 bootstrap resamplings of the seeds (0: the same grid point wins every time).
# The drift is the range of the optimal log2 learning rate over the widths: 1.0 is a factor 2,
# one step of this grid. Its direction is the slope of the optimal log2 learning rate against
# log2(width), fitted by least squares: octaves per doubling of the width (the 1/n law: −1).

# %%
# NBVAL_IGNORE_OUTPUT
opt = optima(results, n_boot=200, seed=0)
print(opt.round(4).to_string(index=False))
drift = lr_drift(opt)
print("\ndrift of the optimal log2 lr over widths 32-1024:", drift.round(2).to_dict())
slope = width_slope(opt, "log2_lr_opt")
print("slope of the optimal log2 lr against log2 width:", slope.round(2).to_dict())

# %% [markdown]
# Under SP the optimum moves left by several grid steps over the 32× range of widths (the 1/n
# law predicts five), with a fitted slope close to that law's −1 octave per doubling (the check
# asserts a slope between −1.6 and −0.6 and at least four grid steps from width 32 to width
# 1024); under muP it stays within one grid step of where width 32 put it (in this run, at the
# same grid point). At the learning rate tuned on the narrowest model (the
# *transferred* learning rate) the muP loss improves with width, from width 32 to width 1024 by
# many standard errors; the later doublings gain little on this small dataset, but none makes
# it worse by more than two standard errors.
#
# ## The payoff
#
# Three ways to choose the learning rate of a wide model: muP with the rate tuned at width 32
# (one cheap sweep), SP with the rate tuned at width 32 (what transfer looks like without muP),
# and SP with the rate tuned at every width (a full sweep at the expensive width; its minimum
# over the grid, on the same seeds, even flatters it slightly).

# %%
# NBVAL_IGNORE_OUTPUT
transferred, at_transfer = at_transferred_lr(summary, opt)
pay = payoff(summary, opt)
print(f"transferred log2 lr: {transferred:g}")
print(pay.round(4).to_string())


# %%
def plot_payoff(pay: pd.DataFrame, title: str):
    """Loss against width for the three ways to choose the learning rate."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    styles = {
        "mup, lr tuned at the narrowest width": dict(marker="o", color="C2"),
        "sp, lr tuned at the narrowest width": dict(marker="v", color="C3", linestyle=":"),
        "sp, lr tuned at every width": dict(marker="s", color="C0", linestyle="--"),
    }
    for rule, style in styles.items():
        s = pay[rule]
        ax.errorbar(s.index, s["mean"], yerr=s["stderr"], capsize=3, label=rule, **style)
        for w in s.index[~np.isfinite(s["mean"])]:  # a diverged seed: no point to draw
            ax.annotate(
                "diverged",
                (w, 0.97),
                xycoords=("data", "axes fraction"),
                ha="center",
                va="top",
                fontsize=7,
                color=style["color"],
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(WIDTHS, [str(w) for w in WIDTHS])
    ax.set(xlabel="width", ylabel="final training loss (cross-entropy)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


plot_payoff(pay, "Adam: seed mean ± standard error")
plt.show()

# %% [markdown]
# At width 1024 the muP model trained at the width-32 learning rate reaches a lower loss than
# the SP model trained at the learning rate tuned for width 1024 itself, by many standard
# errors: muTransfer saves the wide sweep *and* gives the better model. SP does improve with
# width when its learning rate is retuned (its width-1024 optimum is below its width-32 one;
# the best SP loss is at an intermediate width), but much less than muP; and SP reusing the
# width-32 learning rate at width 1024 is many times worse than at its own optimum (about ten
# times here; the check asserts more than five).
#
# ## Checks

# %%
grid_step = float(np.diff(LOG2_LRS).max())
loss_at = results.set_index(["parametrization", "width", "log2_lr", "seed"])["loss"]
same_at_base = (loss_at["mup"].loc[WIDTHS[0]] == loss_at["sp"].loc[WIDTHS[0]]).all()
assert same_at_base  # at the base width muP and SP are the same runs, bit for bit
mup_drift, sp_drift = float(drift["mup"]), float(drift["sp"])
assert not opt["at_edge"].any(), opt  # every optimum lies inside the grid
assert max(WIDTHS) / min(WIDTHS) >= 32
assert mup_drift <= 1 * grid_step, mup_drift
assert sp_drift >= 4 * grid_step, sp_drift  # the 1/n law predicts 5 over a 32x range
# the direction: leftwards, about one octave per doubling (one optimum moving by one grid step
# changes the slope by at most 0.15)
sp_opt = opt[opt["parametrization"] == "sp"].set_index("width")["log2_lr_opt"]
assert sp_opt[min(WIDTHS)] - sp_opt[max(WIDTHS)] >= 4 * grid_step, sp_opt
assert -1.6 < float(slope["sp"]) < -0.6, slope
print("PASS: muP and SP width-32 runs identical")
print("PASS: muP drift <= 1 grid step, SP drift >= 4 grid steps, no optimum at the grid edge")
print("PASS: the SP optimum moves left, slope between -1.6 and -0.6 octaves per doubling")

# %%
# wider is better at the transferred learning rate: the widest model beats the narrowest by
# more than 2 combined standard errors, and no doubling of the width makes it worse by more
# than 2 standard errors (the later doublings gain little on this small dataset)
loss, err = at_transfer["mean"].to_numpy(), at_transfer["stderr"].to_numpy()
gain = loss[0] - loss[-1]
gain_err = math.hypot(err[0], err[-1])
worst_step = float(np.max((loss[1:] - loss[:-1]) / np.hypot(err[1:], err[:-1])))
assert gain > 2 * gain_err, (gain, gain_err)
assert worst_step < 2.0, worst_step
print("PASS: at the transferred lr the widest muP model beats the narrowest by > 2 s.e.")


# %%
def check_payoff(pay: pd.DataFrame) -> None:
    """muP at the transferred lr beats SP at its own optimum at the widest width (> 2 s.e.);
    SP's own optimum improves on width 32."""
    wide, narrow = pay.loc[max(WIDTHS)], pay.loc[min(WIDTHS)]
    mup, sp_own = wide["mup, lr tuned at the narrowest width"], wide["sp, lr tuned at every width"]
    margin = sp_own["mean"] - mup["mean"]
    assert margin > 2 * math.hypot(sp_own["stderr"], mup["stderr"]), (mup, sp_own)
    assert sp_own["mean"] < narrow["sp, lr tuned at every width"]["mean"], pay


check_payoff(pay)
# SP at the width-32 lr trains at width 1024 (finite loss) but > 5x worse than at its optimum
sp_transfer = pay.loc[max(WIDTHS), ("sp, lr tuned at the narrowest width", "mean")]
sp_own = pay.loc[max(WIDTHS), ("sp, lr tuned at every width", "mean")]
assert math.isfinite(sp_transfer) and sp_transfer > 5 * sp_own, (sp_transfer, sp_own)
sp_best_width = pay["sp, lr tuned at every width"]["mean"].idxmin()
assert min(WIDTHS) < sp_best_width < max(WIDTHS), sp_best_width  # SP's best: in between
print("PASS: muP-1024 at the width-32 lr beats SP-1024 at its own optimum by > 2 s.e.")
print("PASS: SP's own optimum improves with width, best in between; at the width-32 lr > 5x worse")


# %% [markdown]
# ## The same experiment with SGD
#
# With SGD the argument is about gradients rather than signs: in SP the readout and the
# hidden-to-hidden weights each add a term growing like the width n to the network's tangent
# kernel, so the largest stable learning rate, and with it the optimum, shrinks towards 1/n;
# `mup.MuSGD` rescales the per-layer learning rates so that every layer's update stays O(1).
# The input layer adds a width-independent term (64 pixels) that does not grow, so the
# growing terms weigh more in a deeper network: we use a depth-3 MLP here (one more
# hidden-to-hidden layer). Same data,
# batches, schedule, widths and seeds. With SGD the best learning rate sits close to the edge
# of divergence, so the grid is finer (half an octave) and reaches past that edge.

# %%
SGD_DEPTH = 3
SGD_LOG2_LRS = [float(a) / 2 for a in range(-6, 3)]  # 2^-3 ... 2^1, half an octave apart
train_mlp_sgd = functools.partial(train_mlp, optimizer="sgd", depth=SGD_DEPTH)

# %%
# NBVAL_IGNORE_OUTPUT
sgd_grid = dict(log2_lrs=SGD_LOG2_LRS, widths=WIDTHS, seeds=SEEDS, parametrizations=["sp", "mup"])
sgd_results = lr_sweep(train_mlp_sgd, **sgd_grid, workers=2, progress=False)
print(f"{len(sgd_results)} runs, {int(np.isinf(sgd_results['loss']).sum())} diverged")
sgd_summary = summarize(sgd_results)
sgd_table = sgd_summary.pivot_table(
    index="log2_lr", columns=["parametrization", "width"], values="mean"
)
print(sgd_table.round(3).to_string())

# %%
fig = plot_transfer(sgd_results, ["sp", "mup"], titles=["SP (SGD)", "muP (MuSGD)"])
for ax in fig.axes:
    ax.set_yscale("log")
    ax.set_ylim(0.03, 3.0)
    ax.set_xlabel("log2 learning rate")
fig.axes[0].set_ylabel("final training loss (cross-entropy)")
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
sgd_opt = optima(sgd_results, n_boot=200, seed=0)
print(sgd_opt.round(4).to_string(index=False))
sgd_drift = lr_drift(sgd_opt)
print("\ndrift of the optimal log2 lr over widths 32-1024:", sgd_drift.round(2).to_dict())
sgd_slope = width_slope(sgd_opt, "log2_lr_opt")
print("slope of the optimal log2 lr against log2 width:", sgd_slope.round(2).to_dict())
stable = largest_stable_lr(sgd_summary)
stable_slope = width_slope(stable, "log2_lr_stable")
print("largest log2 lr with no diverged seed:")
print(stable.pivot(index="parametrization", columns="width", values="log2_lr_stable").to_string())
print("its slope against log2 width:", stable_slope.round(2).to_dict())
sgd_pay = payoff(sgd_summary, sgd_opt)
print(sgd_pay.round(4).to_string())

# %%
plot_payoff(sgd_pay, "SGD: seed mean ± standard error")
plt.show()

# %% [markdown]
# Under SP the SGD optimum moves left as the width grows, by two octaves here (a fitted slope
# of about −0.4 octave per doubling; the check asserts at least one octave from width 32 to
# width 1024 and a slope below −0.2). The largest learning rate at which SP trains shrinks with
# it: it never grows from one width to the next, and falls by about half an octave per doubling
# (asserted: a slope below −0.3; the wide-width argument above gives −1). Under muP
# the optimum moves by at most half an octave (in this run not at all), and it is not the last
# stable grid point: half an octave higher most widths still train, worse. At that learning
# rate the widest muP model beats the narrowest, and beats the widest SP model at its own
# optimum; SP at that learning rate diverges at every width from 256 on.

# %%
sgd_grid_step = float(np.diff(SGD_LOG2_LRS).max())
sgd_loss_at = sgd_results.set_index(["parametrization", "width", "log2_lr", "seed"])["loss"]
sgd_same = sgd_loss_at["mup"].loc[WIDTHS[0]].equals(sgd_loss_at["sp"].loc[WIDTHS[0]])
assert sgd_same  # identical at the base width, diverged runs included
sgd_mup_drift, sgd_sp_drift = float(sgd_drift["mup"]), float(sgd_drift["sp"])
sgd_transferred, sgd_at_transfer = at_transferred_lr(sgd_summary, sgd_opt)
sgd_loss, sgd_err = sgd_at_transfer["mean"].to_numpy(), sgd_at_transfer["stderr"].to_numpy()
sgd_gain = sgd_loss[0] - sgd_loss[-1]
mup_opt = sgd_opt[sgd_opt["parametrization"] == "mup"]
above = sgd_summary[
    (sgd_summary["parametrization"] == "mup")
    & (sgd_summary["log2_lr"] == sgd_transferred + sgd_grid_step)
]
assert not sgd_opt["at_edge"].any(), sgd_opt  # every optimum lies inside the grid
assert sgd_mup_drift <= sgd_grid_step, sgd_mup_drift  # at most half an octave
assert np.isfinite(above["mean"]).sum() > len(WIDTHS) / 2  # one step up most widths train ...
assert (above["mean"] > mup_opt["loss_opt"].to_numpy()).all()  # ... and is worse everywhere
assert sgd_sp_drift >= 2 * sgd_grid_step, sgd_sp_drift
sgd_sp_opt = sgd_opt[sgd_opt["parametrization"] == "sp"].set_index("width")["log2_lr_opt"]
assert sgd_sp_opt[min(WIDTHS)] - sgd_sp_opt[max(WIDTHS)] >= 2 * sgd_grid_step, sgd_sp_opt
assert float(sgd_slope["sp"]) < -0.2, sgd_slope  # leftwards (measured -0.39)
sp_stable = stable[stable["parametrization"] == "sp"].set_index("width")["log2_lr_stable"]
assert (np.diff(sp_stable.to_numpy()) <= 0).all(), sp_stable  # never grows with width
assert float(stable_slope["sp"]) < -0.3, stable_slope  # measured -0.5
assert sgd_gain > 2 * math.hypot(sgd_err[0], sgd_err[-1])
check_payoff(sgd_pay)
# SP at the width-32 lr: a seed diverges at every width from 256 on
sgd_sp_transfer = sgd_pay[("sp, lr tuned at the narrowest width", "mean")]
assert np.isinf(sgd_sp_transfer[sgd_sp_transfer.index >= 256]).all(), sgd_sp_transfer
print("PASS: SGD muP and SP width-32 runs identical")
print("PASS: SGD muP optimum within half an octave at every width, inside the stable range")
print("PASS: SGD SP optimum moves left by >= 2 grid steps, slope < -0.2 octaves per doubling")
print("PASS: SGD SP largest stable lr never grows with width, slope < -0.3")
print("PASS: SGD widest muP beats narrowest by > 2 s.e.")
print("PASS: SGD muP-1024 at the width-32 lr beats SP-1024 at its own optimum by > 2 s.e.")
print("PASS: SGD SP at the width-32 lr diverges at widths 256-1024")
