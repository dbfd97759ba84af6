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
# # 06 - The parametrization zoo: SP, NTK, muP and mean-field as abc-rules
#
# A width-n network is *parametrized* by three exponents per layer: a multiplier $n^{-a_l}$
# in the forward pass, an initialization std $\propto n^{-b_l}$ and a learning rate
# $\propto n^{-c_l}$ (Yang & Hu 2021; Everett et al. 2024). Standard (SP), NTK, maximal-update
# (muP) and mean-field (MFP) parametrizations are four points of this space, and for each
# optimizer there is a largest stable learning rate per layer. `ntk.scaling.abc_rules` derives
# these exponents from the paper's constraints; `ntk.scaling.Parametrization` applies them to
# any PyTorch model as ordinary optimizer param groups. The training plumbing is in
# `ntk/chapters/parametrization_zoo.py`. This chapter prints the rules, checks
# the abc-symmetry that makes NTK a disguised SP and MFP a disguised muP, watches each
# parametrization across widths, and sweeps learning rates: under muP the optimum stays put
# as the width grows 16x, under SP with one global learning rate it moves.
#
# Runs in about 1-2 minutes on a 2-core CPU.

# %%
import sys

if "google.colab" in sys.modules:  # install only what Colab lacks
    import subprocess

    packages = ["ntk @ git+https://github.com/ntk-lab/ntk"]  # brings mup; Colab has torch
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ntk.chapters.parametrization_zoo import (
    SP_GLOBAL_LR,
    adam_losses,
    config,
    probe_scales,
    slopes_by_parametrization,
    sweep_cell,
)
from ntk.scaling.abc_rules import (
    ALIGNMENT_EXPONENTS,
    PARAMETRIZATIONS,
    abc_shift,
    abc_table,
    role_exponents,
    stability_violations,
    table_frame,
    update_exponents,
)
from ntk.scaling.sweep import lr_drift, lr_sweep, optima, plot_transfer

pd.set_option("display.width", 120)
_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. The rules
#
# Layer $l$ computes $z_l = n^{-a_l} W_l x_{l-1}$, with $W_l$ drawn with std $\propto n^{-b_l}$
# and trained with learning rate $\propto n^{-c_l}$. The width $n$ is the dimension that grows:
# the fan-out of the embedding (input) layer, the fan-in of hidden and readout layers; finite
# dimensions (input size, number of classes) only change constants such as $1/\sqrt{d}$.
# The four named parametrizations fix $(a, b)$; the learning-rate exponents $c$ follow from the
# optimizer and from how aligned weights and activations are assumed to become during
# training ("full": $\Delta W\,x$ sums $n$ coherent terms; "no": only $\sqrt{n}$).

# %%
frame = table_frame()
for opt in ("adam", "sgd"):
    wide = frame[frame.optimizer == opt].pivot_table(
        index=["parametrization", "role"], columns="alignment", values=["a", "b", "c"]
    )
    wide = wide[[("a", "full"), ("b", "full"), ("c", "full"), ("c", "no")]]
    wide.columns = ["a", "b", "c (full alignment)", "c (no alignment)"]
    print(f"--- {opt} ---")
    print(wide.reindex(PARAMETRIZATIONS, level=0).to_string(float_format=lambda x: f"{x:g}"))

# %% [markdown]
# **Where c comes from.** After one step the pre-activations of layer $l$ move by
# $n^{-r_l}$. Writing $e_l$ for the exponent of the per-entry change of the effective weight
# $n^{-a_l}W_l$ (Adam: $e_l = a_l + c_l$, because Adam's update is $O(1)$ per entry whatever the
# gradient; SGD: $e_l = 2a_l + c_l + g_l$ with $g_l = a_{L+1} + b_{L+1}$ the scale of the
# backpropagated gradient), Everett et al. give
#
# $$r_1 = e_1,\qquad r_l = \min(e_l - \alpha,\; e_l + r_{l-1} - u,\; a_l + b_l + r_{l-1} - \omega),$$
#
# with the same form at the readout, and alignment exponents $(\alpha, \omega, u) = (1, 1/2, 1)$
# (full) or $(1/2, 1/2, 1/2)$ (none). Stability is $r_l \ge 0$; the table's $c_l$ is the
# smallest (largest learning rate) that keeps it. At initialization, stability needs
# $a_1 + b_1 = 0$, $a_l + b_l = 1/2$ for hidden layers and $a_{L+1} + b_{L+1} \ge 1/2$.
# Every row passes both checks, and the $r$'s are 0: every layer moves by $\Theta(1)$.

# %%
chain = ["embedding", "hidden", "hidden", "readout"]
rows = []
for p in PARAMETRIZATIONS:
    for opt in ("adam", "sgd"):
        abcs = abc_table(p, opt, "full", chain)
        a, b, c = zip(*abcs, strict=True)
        rows.append(
            dict(
                parametrization=p,
                optimizer=opt,
                init_violations=len(stability_violations(abcs, chain)),
                r=update_exponents(a, b, c, chain, opt, "full"),
            )
        )
# SP as most people run it: one global Adam learning rate, c = 0 everywhere
r_global = update_exponents([0, 0, 0, 0], [0, 0.5, 0.5, 0.5], [0, 0, 0, 0], chain, "adam", "full")
rows.append(dict(parametrization="sp, global lr", optimizer="adam", init_violations=0, r=r_global))
print(pd.DataFrame(rows).to_string(index=False))
print("alignment exponents (alpha, omega, u):", dict(ALIGNMENT_EXPONENTS))

# %% [markdown]
# The last row is SP with a single learning rate for all layers (what `torch.optim.Adam(model.parameters())`
# does): its hidden and readout updates grow like $n^{1}$ under full alignment, so its best
# learning rate has to shrink with width. That is the drift muP removes (section 4).
#
# ## 2. The abc-symmetry
#
# Multiplying a layer's multiplier by $n^{-t}$ and its weights by $n^{t}$ changes nothing in
# the forward pass; the weight gradient shrinks by $n^{-t}$, so SGD needs $n^{2t}$ more learning
# rate, Adam (scale-invariant) $n^{t}$ more:
# $(a, b, c) \to (a + t, b - t, c - t)$ for Adam, $(a + t, b - t, c - 2t)$ for SGD.
# NTK is SP shifted by $t = 1/2$ in hidden and readout layers; MFP is muP shifted by $t = 1/2$
# everywhere.

# %%
for opt in ("adam", "sgd"):
    for src, dst in (("sp", "ntk"), ("mup", "mfp")):
        x, y = role_exponents(src, opt), role_exponents(dst, opt)
        shifted = {role: abc_shift(x[role], y[role].a - x[role].a, opt) for role in x}
        print(f"{opt}: {src} shifted == {dst}: {shifted == y}")

# %% [markdown]
# The symmetry is exact in training too, except for Adam's $\epsilon$: Adam divides by
# $\sqrt{v} + \epsilon$ and $\sqrt{v}$ carries the multiplier. `ParametrizationConfig(adam_eps=...)`
# scales $\epsilon$ per layer as $n^{-a_l}$ (it is then measured against the gradient of the
# effective weight), which makes equivalent parametrizations train identically; with one
# global $\epsilon$ they differ slightly. Below, SP and NTK (and muP and MFP) with Adam, at a
# width 16 times the base width, in float64.

# %%
symmetry_gap = {}
for src, dst in (("sp", "ntk"), ("mup", "mfp")):
    for scaled in (True, False):
        gap = np.abs(adam_losses(src, 512, scaled) - adam_losses(dst, 512, scaled)).max()
        symmetry_gap[(src, dst, scaled)] = gap
        print(
            f"{src} vs {dst}, eps scaled per layer: {scaled!s:5}  max |loss difference| < 1e-12: {gap < 1e-12}"
        )

# %% [markdown]
# ## 3. At initialization and after a few steps, across widths
#
# Each parametrization (Adam, full-alignment exponents, `base_width=64`, one learning-rate
# prefactor for all) on widths 64 to 512: the output scale at initialization, and after one
# Adam step the relative change of the last hidden features and the size of the change of the
# output. Predicted slopes against $\log n$: output at init $1/2 - (a_{L+1} + b_{L+1})$
# (0 for SP/NTK, $-1/2$ for muP/MFP); feature and output changes $-r_L = -r_{L+1} = 0$ for the
# four tables; SP with a global learning rate, positive (its hidden updates grow like $n$).

# %%
# NBVAL_IGNORE_OUTPUT
widths = [64, 128, 256, 512]
configs = {name: config(name, 2.0**-9, 64) for name in [*PARAMETRIZATIONS, SP_GLOBAL_LR]}
scales = pd.DataFrame(
    [
        dict(parametrization=name, width=w, **probe_scales(cfg, w))
        for name, cfg in configs.items()
        for w in widths
    ]
)
slopes = pd.DataFrame(
    {
        col: slopes_by_parametrization(scales, col)
        for col in ("out_init", "feature_change", "out_change")
    }
)
print(slopes.round(2).to_string())

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for ax, col, title in zip(
    axes,
    ("out_init", "feature_change", "out_change"),
    ("output RMS at init", "relative feature change, 1 step", "output change RMS, 1 step"),
    strict=True,
):
    for name, s in scales.groupby("parametrization", sort=False):
        ax.loglog(s.width, s[col], "o-", label=name)
    ax.set(xlabel="width n", title=title)
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# SP and NTK start with $O(1)$ outputs, muP and MFP with outputs shrinking like $n^{-1/2}$
# (their readout has $a + b = 1$). With the table's per-layer learning rates every
# parametrization keeps its feature updates width-independent, and equivalent pairs give
# identical numbers. SP with one global learning rate does not: its features move more the
# wider it is. One discrepancy with the table: SP's (and NTK's) *output* change grows with
# width even with per-layer rates. The blanket "full alignment" takes $\omega = 1/2$ for the
# readout's $W_0\,\Delta x$ term, but $\Delta x_L$ is built from backpropagated gradients
# that point along the readout weights, so at the readout $\omega$ is 1 and, with
# $a_{L+1} + b_{L+1} = 1/2$, the term grows like $n^{1/2}$ (Yang & Hu 2021's argument that SP
# cannot learn features stably). muP's readout, with $a + b = 1$, absorbs it.
#
# ## 4. Learning-rate transfer: SP vs muP, built with `Parametrization`
#
# A depth-2 MLP on the digits task (MSE on one-hot targets, Adam, 30 steps of batch 128;
# the score is the mean full-training-set loss at steps 10, 20, 30, so it rewards fast,
# stable progress), widths 32, 128, 512, `base_width=32` (at width 32 all parametrizations
# are the same network). "sp, global lr" is SP with one learning rate (c = 0), "sp" SP with
# Everett et al.'s per-layer learning rates, "mup" muP. The sweep runs on two worker processes.


# %% NBVAL_IGNORE_OUTPUT
sweep = lr_sweep(
    sweep_cell,
    log2_lrs=range(-10, -2),
    widths=(32, 128, 512),
    parametrizations=("sp, global lr", "sp", "mup"),
    workers=2,
    progress=False,
)

# %%
# NBVAL_IGNORE_OUTPUT
opt_table = optima(sweep)
print(
    opt_table[["parametrization", "width", "log2_lr_opt", "loss_opt", "at_edge"]]
    .round(4)
    .to_string(index=False)
)
drift = lr_drift(opt_table)
print(drift.to_string())
plot_transfer(sweep, ["sp, global lr", "sp", "mup"], ylim=(0, 0.06))
plt.show()

# %% [markdown]
# Under SP with a global learning rate the best learning rate falls as the width grows (the
# hidden and readout updates grow with $n$), and the edge of divergence moves with it; under
# muP the optimum stays where the width-32 proxy put it (within the grid's resolution), and
# wider is better at that learning rate. SP with the table's per-layer learning rates drifts
# less than with one global rate but still moves here: at this small scale and short horizon
# the readout effect of section 3 shows. (Everett et al. report that per-layer SP transfers
# well for Transformers at scale; we do not reproduce that claim in this toy setting.)
#
# ## 5. Checks

# %%
mup_adam = abc_table("mup", "adam", "full")
assert [tuple(x) for x in mup_adam] == [(-0.5, 0.5, 0.5), (0, 0.5, 1), (0.5, 0.5, 0.5)]
assert all(r["init_violations"] == 0 and min(r["r"]) >= 0 for r in rows[:-1])
assert min(r_global) < 0  # SP with one global Adam lr is unstable as n grows
for (src, dst, scaled), gap in symmetry_gap.items():
    assert (gap < 1e-12) if scaled else (gap > 0), (src, dst, scaled, gap)
for p in ("sp", "ntk"):
    assert abs(slopes.loc[p, "out_init"]) < 0.15
for p in ("mup", "mfp"):
    assert abs(slopes.loc[p, "out_init"] + 0.5) < 0.15
for p in PARAMETRIZATIONS:
    assert abs(slopes.loc[p, "feature_change"]) < 0.15, p
for p in ("mup", "mfp"):
    assert abs(slopes.loc[p, "out_change"]) < 0.25, p
for p in ("sp", "ntk"):  # the readout's aligned W0 dx term: about n^(1/2) more than muP
    assert (
        slopes.loc[p, "out_change"] > 0.2
        and slopes.loc[p, "out_change"] - slopes.loc["mup", "out_change"] > 0.35
    ), p
assert slopes.loc["sp, global lr", "feature_change"] > 0.3
opt_at = opt_table.set_index(["parametrization", "width"])["log2_lr_opt"]
assert not opt_table["at_edge"].any()
assert drift["mup"] <= 1, drift  # muP: the optimum stays put (within one octave)
assert opt_at[("sp, global lr", 512)] <= opt_at[("sp, global lr", 32)] - 2, opt_at  # SP: it moves
loss_opt = opt_table.set_index(["parametrization", "width"])["loss_opt"]
assert loss_opt[("mup", 512)] < loss_opt[("mup", 32)]  # wider is better under muP
print("muP Adam (a, b, c):", [tuple(x) for x in mup_adam])
print("PASS: init-output, feature-change and output-change slopes as predicted")
print("PASS: muP optimum within one octave; SP with one global lr drifts by >= 2 octaves")
