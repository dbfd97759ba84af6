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
# # 05 - muP: feature learning at any width
#
# Notebook 03 showed that NTK-parametrized networks freeze their features as they get wider.
# The Maximal Update Parametrization (muP; Yang & Hu 2021) rescales the initialization, the
# layer multipliers and the per-layer learning rates with the width $n$ so that every layer's
# features move by $\Theta(1)$ at *any* width. Its infinite-width limit learns features, and
# one learning rate works at every width; at that learning rate, wider networks train better
# ("wider is better", Tensor Programs V, Yang et al. 2022). Under the standard parametrization
# (SP) with Adam the readout update grows like $n \cdot \mathrm{lr}$, so a learning rate that
# suits a narrow network over-shoots a wide one.
#
# We train MLPs of widths 10, 50, 200, 1000, 5000 and 10000 with **one** peak learning rate
# (Adam / `mup.optim.MuAdam`, cosine decay, mini-batches of 256, 1500 steps) on the
# low-dimensional task of notebook 03 with label noise (4096 training points), and compare:
# the final training loss (how much of the data a network fits in a fixed budget), the test
# loss, and the feature change $\|h(T) - h(0)\|_F / \|h(0)\|_F$. The muP networks are
# `ntk.models.WideMLP_MuP` (Microsoft's `mup`: `MuReadout`, `set_base_shapes`, base width
# 10, zero readout); the SP networks `ntk.models.WideMLP`. The code is in
# `ntk/chapters/mup_feature_learning.py` (also a script: `python ntk/feature_learning_mup.py`).
# Runs in about 2 minutes on a 2-core CPU.

# %%
import sys

if "google.colab" in sys.modules:  # install only what Colab lacks
    import subprocess

    # the package and its one dependency Colab lacks (mup); no neural-tangents needed here
    repo = "https://github.com/ntk-lab/ntk"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+{repo}"], check=True)

# %%
import math

import matplotlib.pyplot as plt

from ntk.chapters.mup_feature_learning import (
    WIDTHS,
    Setup,
    compare_mup_sp,
    plot_comparison,
    plot_width_sweep,
    run_depth2_features,
    run_mup_widths,
)

setup = Setup()  # lr 0.03, 1500 steps, batch 256, depth 1, seed 0
print(setup)

# %% [markdown]
# ## 1. One learning rate, six widths
#
# Both parametrizations coincide at the base width 10 (up to muP's zero readout). Widths up
# to 10000 are affordable on a CPU with one hidden layer ($32 \to n \to 1$).

# %%
# NBVAL_IGNORE_OUTPUT
sweep = run_mup_widths(WIDTHS, setup)
table = sweep.table.drop(columns=["seconds", "diverged_at"])
print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))

# %%
# NBVAL_IGNORE_OUTPUT
print(f"training time per run (s): {sweep.table.seconds.round(1).tolist()}")

# %% [markdown]
# ## 2. Hidden features in a depth-2 network
#
# With a single hidden layer SP moves its features by $O(1)$ as well: the input layer has a
# finite fan-in, and Adam's update does not depend on the scale of the gradient. SP goes wrong
# in a *hidden* $n \times n$ layer: Adam changes each of its $n^2$ weights by about lr, and
# these changes add up coherently over $n$ inputs, so the features move by $\sim n \cdot
# \mathrm{lr}$. `MuAdam` divides that layer's learning rate by $n / n_{\rm base}$. Depth-2
# networks of widths 50, 200, 1000 and 2000, 100 steps at the same learning rate:

# %%
# NBVAL_IGNORE_OUTPUT
depth2 = run_depth2_features(setup=Setup(depth=2, steps=100, batch_size=64, n_train=1024))
print(
    depth2.table.drop(columns=["seconds", "diverged_at"]).to_string(
        index=False, float_format=lambda v: f"{v:.3g}"
    )
)

# %%
fig = plot_width_sweep(sweep, depth2=depth2)
plt.show()

# %% [markdown]
# ## 3. muP vs SP at width 5000
#
# The same two runs as in the sweep, over training: muP fits the training set orders of
# magnitude further, and generalizes better, at the learning rate both share.

# %%
# NBVAL_IGNORE_OUTPUT
comparison = compare_mup_sp(5000, setup, sweep)
fig = plot_comparison(comparison, 5000)
plt.show()
mup_5000, sp_5000 = comparison["mup"].final(), comparison["sp"].final()
print(
    f"width 5000: muP train {mup_5000['train_loss']:.3g}, test {mup_5000['test_loss']:.3g}; "
    f"SP train {sp_5000['train_loss']:.3g}, test {sp_5000['test_loss']:.3g}"
)

# %% [markdown]
# ## Checks

# %%
# NBVAL_IGNORE_OUTPUT
mup_losses, sp_losses = sweep.losses("mup"), sweep.losses("sp")
slope_mup, slope_sp = sweep.feature_slope("mup"), sweep.feature_slope("sp")
slope2_mup, slope2_sp = depth2.feature_slope("mup"), depth2.feature_slope("sp")
print(f"muP train loss by width: {[f'{v:.3g}' for v in mup_losses]}")
print(f"SP  train loss by width: {[f'{v:.3g}' for v in sp_losses]}")
print(f"feature-change slope, depth 1: muP {slope_mup:+.2f}, SP {slope_sp:+.2f}")
print(f"feature-change slope, depth-2 hidden layer: muP {slope2_mup:+.2f}, SP {slope2_sp:+.2f}")

# %%
assert all(math.isfinite(v) for v in [*mup_losses, *sweep.table.test_loss])  # finite everywhere
assert sweep.is_monotone("mup")  # wider is better under muP
assert not sweep.is_monotone("sp")  # ... but not under SP at the same lr
assert abs(slope_mup) < 0.15 and abs(slope2_mup) < 0.15  # muP: feature change ~ width^0
assert slope2_sp > 0.2 and slope2_sp - slope2_mup > 0.2  # SP: hidden features move more with width
assert (
    mup_5000["train_loss"] < sp_5000["train_loss"] and mup_5000["test_loss"] < sp_5000["test_loss"]
)
print(
    "PASS: finite losses; muP train loss falls with width, SP's does not; muP feature change ~ width^0"
)
