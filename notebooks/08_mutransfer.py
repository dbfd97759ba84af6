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
# best lr shrinks like 1/n (notebook 07 measured that growth directly).
#
# We sweep the Adam learning rate on a log2 grid for a depth-2 MLP on the 8×8 digits at widths
# 32 … 1024 (a 32× range), in SP and in muP (the `mup` package, base width 32), with three
# seeds, and reproduce the classic two-panel figure.
#
# A second sweep repeats the experiment with plain SGD (SP) against `mup.MuSGD` (muP).
#
# Runs in about 1-2 minutes on a 2-core CPU (the sweeps spread their 576 training runs over two
# worker processes).

# %%
import sys

if "google.colab" in sys.modules:  # install only what Colab lacks
    import subprocess

    packages = ["ntk @ git+https://github.com/ntk-lab/ntk"]  # brings mup; Colab has torch
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)

# %%
# %matplotlib inline
import functools
import math
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ntk.chapters.mutransfer import at_transferred_lr, train_mlp
from ntk.scaling.sweep import lr_drift, lr_sweep, optima, plot_transfer, summarize

# %% [markdown]
# ## The experiment
#
# One training run: a depth-2 ReLU MLP (He init), 30 Adam steps on mini-batches of 128 of the
# 1347 training digits with the learning rate decayed linearly to 0, scored by its final
# cross-entropy on the whole training set (the muTransfer papers compare training losses: the
# question is how well the optimizer does at each width). SP is `WideMLP` with `torch.optim.Adam`;
# muP is `WideMLP_MuP` (`MuReadout`, zero readout at init) with `mup.MuAdam`, which equals SP at
# the base width 32. A run whose loss becomes NaN or infinite counts as diverged (loss inf).
# That run is `train_mlp` in `ntk/chapters/mutransfer.py`.

# %%
WIDTHS = [32, 64, 128, 256, 512, 1024]
LOG2_LRS = [float(a) for a in range(-12, -1)]  # 2^-12 ... 2^-2
SEEDS = [0, 1, 2]
# %% [markdown]
# `lr_sweep` runs every (parametrization, width, log2 lr, seed) cell, two processes at a time,
# and appends each result to a CSV file as it finishes: run it again (after an interruption,
# or with more widths) and only the missing cells are trained.

# %%
# NBVAL_IGNORE_OUTPUT
cache = Path(tempfile.mkdtemp()) / "mutransfer.csv"
grid = dict(log2_lrs=LOG2_LRS, widths=WIDTHS, seeds=SEEDS, parametrizations=["sp", "mup"])
results = lr_sweep(train_mlp, **grid, cache=cache, workers=2)

# %%
# NBVAL_IGNORE_OUTPUT
resumed = lr_sweep(train_mlp, **grid, cache=cache, progress=False)  # every cell is cached
pd.testing.assert_frame_equal(resumed, results)
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
fig.axes[0].set_ylabel("final training loss")
plt.show()

# %% [markdown]
# ## Optima and their drift
#
# Per width, the optimum is the grid point with the lowest seed-mean loss; `log2_lr_std` is its
# spread over 200 bootstrap resamplings of the seeds (0: the same grid point wins every time).
# The drift is the range of the optimal log2 learning rate over the widths: 1.0 is a factor 2.

# %%
# NBVAL_IGNORE_OUTPUT
opt = optima(results, n_boot=200, seed=0)
print(opt.round(4).to_string(index=False))
drift = lr_drift(opt)
print("\ndrift of the optimal log2 lr over widths 32-1024:", drift.round(2).to_dict())

# %% [markdown]
# Under SP the optimum moves left by several grid steps over the 32× range of widths (the 1/n
# law predicts five), and the wide SP models are no better than the narrow ones at their own
# optimum. Under muP the optimum stays put, and at the learning rate tuned on the narrowest
# model (the *transferred* learning rate) the loss improves with width; beyond width ~256 the
# gains flatten on this small dataset.

# %%
# NBVAL_IGNORE_OUTPUT
transferred, at_transfer = at_transferred_lr(summary, opt)
print(f"transferred log2 lr: {transferred:g}")
print(at_transfer.round(4).to_string())

# %% [markdown]
# ## Checks

# %%
grid_step = float(np.diff(LOG2_LRS).max())
mup_drift, sp_drift = float(drift["mup"]), float(drift["sp"])
assert not opt["at_edge"].any(), opt  # every optimum lies inside the grid
assert max(WIDTHS) / min(WIDTHS) >= 32
assert mup_drift <= 1 * grid_step
assert sp_drift >= 2 * grid_step
print("PASS: muP drift <= 1 grid step, SP drift >= 2 grid steps, no optimum at the grid edge")

# %%
# wider is better at the transferred learning rate: the widest model beats the narrowest by
# more than 2 combined standard errors, and no doubling of the width makes it worse by more
# than 2 standard errors (on this small dataset the loss plateaus beyond ~256)
loss, err = at_transfer["mean"].to_numpy(), at_transfer["stderr"].to_numpy()
gain = loss[0] - loss[-1]
gain_err = math.hypot(err[0], err[-1])
worst_step = float(np.max((loss[1:] - loss[:-1]) / np.hypot(err[1:], err[:-1])))
assert gain > 2 * gain_err
assert worst_step < 2.0
print("PASS: at the transferred lr the widest muP model beats the narrowest by > 2 s.e.")


# %% [markdown]
# ## The same experiment with SGD
#
# With SGD the argument is about gradients rather than signs: in SP the readout and the
# hidden-to-hidden weights each add a term growing like the width n to the network's tangent
# kernel, so the largest stable learning rate, and with it the optimum, shrinks towards 1/n;
# `mup.MuSGD` rescales the per-layer learning rates so that every layer's update stays O(1).
# The input layer adds a width-independent term (64 pixels), probably why at depth 2 the SP
# optimum moved by only 1-2 grid steps over widths 32-1024 in our trials, depending on the
# seeds; we therefore use a depth-3 MLP here (one more hidden-to-hidden layer), where it moved
# by two steps for each of the four seed sets we tried. Same data, batches, schedule, widths and seeds.

# %%
SGD_DEPTH = 3
SGD_LOG2_LRS = [float(a) for a in range(-3, 2)]  # 2^-3 ... 2^1


train_mlp_sgd = functools.partial(train_mlp, optimizer="sgd", depth=SGD_DEPTH)


# %%
# NBVAL_IGNORE_OUTPUT
sgd_grid = dict(log2_lrs=SGD_LOG2_LRS, widths=WIDTHS, seeds=SEEDS, parametrizations=["sp", "mup"])
sgd_results = lr_sweep(train_mlp_sgd, **sgd_grid, cache=cache.with_name("sgd.csv"), workers=2)

# %%
# NBVAL_IGNORE_OUTPUT
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
fig.axes[0].set_ylabel("final training loss")
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
sgd_opt = optima(sgd_results, n_boot=200, seed=0)
print(sgd_opt.round(4).to_string(index=False))
sgd_drift = lr_drift(sgd_opt)
print("\ndrift of the optimal log2 lr over widths 32-1024:", sgd_drift.round(2).to_dict())

# %% [markdown]
# Under SP the SGD optimum moves left by two grid steps (the largest stable learning rate at
# width 1024 is about 4× smaller than at width 32); under muP it does not move, and at that
# learning rate the widest model again beats the narrowest.

# %%
sgd_grid_step = float(np.diff(SGD_LOG2_LRS).max())
sgd_mup_drift, sgd_sp_drift = float(sgd_drift["mup"]), float(sgd_drift["sp"])
sgd_transferred, sgd_at_transfer = at_transferred_lr(sgd_summary, sgd_opt)
sgd_loss, sgd_err = sgd_at_transfer["mean"].to_numpy(), sgd_at_transfer["stderr"].to_numpy()
sgd_gain = sgd_loss[0] - sgd_loss[-1]
assert not sgd_opt["at_edge"].any(), sgd_opt  # every optimum lies inside the grid
assert sgd_mup_drift <= 1 * sgd_grid_step
assert sgd_sp_drift >= 2 * sgd_grid_step
assert sgd_gain > 2 * math.hypot(sgd_err[0], sgd_err[-1])
print("PASS: SGD muP drift <= 1 grid step, SP drift >= 2; widest muP beats narrowest by > 2 s.e.")
