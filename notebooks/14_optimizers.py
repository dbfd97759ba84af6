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
# # 14 - Optimizers and muP: SGD, Adam and Muon
#
# muP is a statement about *updates*: every layer's pre-activations must move by
# $\Theta(1)$ per step at every width. How big an update a learning rate buys depends on the
# optimizer, so muP's learning-rate exponents are per optimizer. Chapters 05-09 derived them
# for SGD and Adam with the abc engine (Everett et al. 2024, arXiv:2407.05872). This chapter
# adds **Muon** (Jordan et al. 2024), which orthogonalizes the momentum of each hidden matrix
# (torch.optim.Muon), in the spectral view (Yang, Simon & Bernstein 2023, arXiv:2310.17813),
# and measures the three update-scale rules in use:
#
# 1. the exponents each optimizer needs, on one page, and what each Muon rule predicts;
# 2. coordinate checks under Muon (MLP and GPT): predicted exponents, then measured, rivals
#    failing;
# 3. learning-rate transfer of the three rules beside AdamW-muP, and Muon against AdamW at
#    equal tokens.
#
# **Scale.** The notebook runs in about 75 s on an idle 2-core CPU, so the grids
# are cut: MLP widths 64-512 (not 128-4096), GPT widths 32-128 (not 64-512), transfer widths
# 32-128 (not 32-256) with 5 learning rates and ONE seed (not 8+ and 3), 40 training steps;
# Muon against AdamW is read at the end of those runs (the tokens Muon needs to reach AdamW's
# final loss are not measured). `python -m ntk.chapters.optimizers --scale full` runs the
# issue's grid (not run for this page).

# %%
import sys

if "google.colab" in sys.modules:  # install only what Colab lacks (it has torch)
    import subprocess

    # set in one place, .ci/colab.py, which writes this cell; brings mup and the rest
    package = "ntk-lab @ git+https://github.com/ntk-lab/ntk"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)

# %%
import numpy as np
import pandas as pd
import torch

from ntk.chapters.optimizers import (
    COORD_VARIANTS,
    NOTEBOOK,
    TRANSFER_VARIANTS,
    gpt_coordinate_check,
    gpt_exponents,
    mlp_coordinate_check,
    mlp_exponents,
    transfer_sweep,
    transfer_table,
)
from ntk.scaling.abc_rules import AB_EXPONENTS, abc_table, update_exponents
from ntk.scaling.muon import rule_exponent, rule_scale
from ntk.scaling.sweep import summarize

torch.set_num_threads(1)  # the sweep runs two single-threaded worker processes
pd.set_option("display.width", 120)

# %% [markdown]
# ## Three optimizers, one condition
#
# Layer $l$ computes $h_l = n^{-a_l} W_l x_{l-1}$, $W_l$ initialized with std $n^{-b_l}$ and
# trained at learning rate $\eta\, n^{-c_l}$. What $c$ must be follows from how one update
# $\Delta W$ moves $h$, i.e. from the size of $\Delta W\, x$ (chapter 06):
#
# - **SGD**: $\Delta W = -\eta\, g\, x^\top$ carries the gradient's scale; aligned with $x$,
#   $\Delta W x$ sums $n$ coherent terms.
# - **Adam**: each entry moves by about $\eta$ whatever the gradient's scale; aligned with $x$,
#   $\Delta W x \sim n\,\eta$: muP's hidden $c = 1$ (lr $\propto 1/n$).
# - **Muon**: $\Delta W = -\eta\, s\, O$ with $O = UV^\top$ the orthogonalized momentum
#   ($M = U S V^\top$; every singular value of $O$ is 1).
#
# **The spectral view of Muon.** For $h = W x$ with $\|x\|_2 \sim \sqrt{\text{fan\_in}}$
# (entries $O(1)$) to have entries $O(1)$, and for its change $\Delta W x$ to have entries
# $O(1)$ too, the spectral norms must satisfy (Yang, Simon & Bernstein 2023)
#
# $$\|W\|_2 \sim \sqrt{\frac{\text{fan\_out}}{\text{fan\_in}}}, \qquad
#   \|\Delta W\|_2 \sim \sqrt{\frac{\text{fan\_out}}{\text{fan\_in}}}.$$
#
# An orthogonalized update meets the second by construction: $\|\Delta W\|_2 = \eta s$, and
# because $O$ is an isometry on its row space, $\|\Delta W x\|_2 = \eta s \|x\|_2$ for the
# inputs the gradient came from, with **no alignment exponent** (Adam's $\Delta W x$ depends on
# how aligned its entrywise update is with $x$; Muon's does not). So the step scale must be
# $s = \sqrt{\text{fan\_out}/\text{fan\_in}}$ with $\eta$ width-independent, and in the engine's
# recursion a hidden layer on Muon has $r_l = \min(a + c,\ a + c + r_{l-1},\
# a + b + r_{l-1} - \omega)$, hence $c = -a$: **0 under muP**. Embeddings, readout and vectors
# stay on Adam with Adam's exponents. Here are the engine's tables for the three optimizers:

# %%
rows = []
for opt in ("sgd", "adam", "muon"):
    for role, abc in zip(
        ("embedding", "hidden", "readout"),
        abc_table("mup", opt, roles=["embedding", "hidden", "readout"]),
        strict=True,
    ):
        rows.append(dict(optimizer=opt, role=role, a=abc.a, b=abc.b, c=abc.c))
table = pd.DataFrame(rows).pivot_table(index="role", columns="optimizer", values="c", sort=False)
print("muP's learning-rate exponent c (lr ~ n^-c) per role and optimizer, full alignment:")
print(table.to_string())
no_align = abc_table("mup", "muon", "no", roles=["hidden"])[0].c
assert table.loc["hidden", "adam"] == 1 and table.loc["hidden", "sgd"] == 0
assert table.loc["hidden", "muon"] == 0 == no_align  # Muon's hidden c: alignment-free
assert (
    table.loc[["embedding", "readout"], "muon"] == table.loc[["embedding", "readout"], "adam"]
).all()
print("PASS: Muon's hidden c = 0 under full and no alignment; its other roles are Adam's")

# %% [markdown]
# ## The three rules and what each predicts
#
# Muon's learning rate is multiplied by a shape-dependent scale $s(\text{fan\_out},
# \text{fan\_in})$ (`ntk.scaling.muon`, torch's `adjust_lr_fn` where it has one):
#
# | rule | $s$ | source | width exponent of $s / \sqrt{\text{fan\_out}/\text{fan\_in}}$ | muP's hidden $c$ |
# |---|---|---|---|---|
# | spectral | $\sqrt{\text{fan\_out}/\text{fan\_in}}$ | Yang, Simon & Bernstein 2023 | 0 | 0 |
# | keller | $\sqrt{\max(1, \text{fan\_out}/\text{fan\_in})}$ | Jordan et al. 2024 (torch "original") | 0 | 0 |
# | moonshot | $0.2\sqrt{\max(\text{fan\_in}, \text{fan\_out})}$ | Liu et al. 2025, arXiv:2502.16982 (torch "match_rms_adamw") | 1/2 | 1/2 |
#
# A hidden matrix's two dimensions both grow with $n$, so spectral and keller differ only by a
# width-independent factor (keller is $2\times$ spectral on the $4n \to n$ down projection):
# both have "built-in muP scaling" for the hidden layers. Moonshot matches AdamW's update RMS
# (0.2) instead, so its $\|\Delta W\|_2$ grows like $\sqrt n$ and its learning rate must fall
# like $n^{-1/2}$; the engine's $c$ includes that correction. None of the rules touches the
# embedding or readout, which stay on Adam: with **one global learning rate and no readout
# multiplier** (SP, as Muon is usually run) the readout is Adam-under-SP. Predicted exponents
# $e$ of the per-coordinate update (size $\propto n^{e}$, $e = -r$ from the recursion):

# %%
assert rule_scale("keller", 64, 256) == 2 * rule_scale("spectral", 64, 256)
assert [rule_exponent(r) for r in ("spectral", "keller", "moonshot")] == [0, 0, 0.5]
roles = ["embedding", "hidden", "readout"]


def predicted(parametrization: str, c: list[float]) -> list[float]:
    a, b = zip(*(AB_EXPONENTS[parametrization][r] for r in roles), strict=True)
    return [0.0 - r for r in update_exponents(a, b, c, roles, optimizer="muon")]


mup_c = [x.c for x in abc_table("mup", "muon", roles=roles)]
prediction = pd.DataFrame(
    {
        "muP + any rule (engine's c)": predicted("mup", mup_c),
        "muP roles, moonshot's s at c = 0": predicted("mup", [mup_c[0], -0.5, mup_c[2]]),
        "SP, one global lr (keller)": predicted("sp", [0.0, 0.0, 0.0]),
    },
    index=roles,
)
print("predicted update exponents e (0: muP holds):")
print(prediction.to_string())
assert prediction.iloc[:, 0].abs().max() == 0
assert prediction.loc["hidden"].iloc[1] == 0.5 and prediction.loc["readout"].iloc[2] == 1

# %% [markdown]
# ## Coordinate check: MLP
#
# A 3-layer MLP (input 16, one hidden $n \times n$ matrix on Muon, 8 classes) trains 3 steps on
# one fixed batch at widths 64-512 (base width 64), 3 seeds, AdamW lr $2^{-6}$ and Muon's
# $8\times$ that (`ntk.scaling.coord_check`). Fitted exponent of the mean $|h_t - h_0|$ per
# layer and step ("&lt;output&gt;" is the readout's logits):

# %%
# NBVAL_IGNORE_OUTPUT
scale = NOTEBOOK
mlp = mlp_exponents(mlp_coordinate_check(scale, COORD_VARIANTS))
print(mlp.round(2).to_string())

# %% [markdown]
# Under muP every rule (and AdamW) keeps every layer flat. The two rivals fail where predicted:
# moonshot's scale without its $n^{-1/2}$ lets the hidden update grow (predicted $+0.5$,
# measured about $+0.4$ over this range), and SP with one learning rate lets the logits grow
# (predicted $+1$; measured about $+0.8$ at step 1, less later as the logits saturate the
# loss on the fixed batch).

# %%
muon_mup = ["muon-spectral", "muon-keller", "muon-moonshot"]
worst = mlp.loc[muon_mup].abs().to_numpy().max()
assert worst <= 0.1, mlp.loc[muon_mup]  # the window, every layer and step
assert mlp.loc["adamw-mup"].abs().to_numpy().max() <= 0.15
moon = mlp.loc[("muon-moonshot-global", "hidden.1")]
assert moon.min() >= 0.25, moon  # predicted 0.5; outside muP's window by > 0.15
sp = mlp.loc[("muon-sp-global", "readout"), 1]
assert sp >= 0.5, sp  # predicted 1
print("PASS: MLP, the three Muon rules under muP: every |e| <= 0.1")
print("PASS: rivals outside: moonshot at c = 0 hidden e >= 0.25, SP global readout e >= 0.5")

# %% [markdown]
# ## Coordinate check: GPT
#
# The project's GPT (1 block, 2 heads, context 16, character corpus) at widths 32-128 (base
# width 32), 3 seeds, 3 steps, with `optim.name: muon` as the trainer builds it (Muon on
# $q, k, v, o$ and the MLP matrices). Mean fitted exponent of $|h_t - h_0|$ per module group over
# steps 1-3:

# %%
# NBVAL_IGNORE_OUTPUT
gpt = gpt_exponents(gpt_coordinate_check(scale, ["muon-spectral", "muon-sp-global"]))
print(gpt.round(2).to_string())

# %% [markdown]
# With the spectral rule every group stays near 0 (the readout's logits, zero-initialized under
# muP, are the least flat over this 4x range); Muon as usually run (SP, one learning rate)
# lets the logits and the attention logits (SP's $1/\sqrt d$ scale) grow.

# %%
spectral = gpt["muon-spectral"]
assert len(spectral) == 10 and spectral.abs().max() <= 0.2, spectral  # 4x widths: +-0.2
rival = gpt["muon-sp-global"]
assert rival["readout (logits)"] >= 0.25 and rival["attention logits"] >= 0.25, rival
print("PASS: GPT, Muon spectral under muP: all 10 groups |e| <= 0.2")
print("PASS: Muon with one global lr (SP): logits and attention logits e >= 0.25")

# %% [markdown]
# ## Learning-rate transfer
#
# One run trains the GPT (1 block, 2 heads, context 32, batches of 16) for 40 steps (linear
# warmup over 4, then linear decay), AdamW lr $2^{-8} \dots 2^{-4}$ and Muon's $8\times$ that,
# and scores the validation loss in bits per character; widths 32, 64, 128 (base 32), one
# seed, for the three rules under muP, AdamW-muP, and two rivals whose optimum should move:
# moonshot's scale without the engine's $n^{-1/2}$ (predicted: $-\frac12$ grid step per
# doubling, one step over this 4x range) and AdamW under SP with one learning rate (chapter
# 09's SP: about one step per doubling). Drift is the range of the optimal log2 lr over the
# widths, in grid steps.

# %%
# NBVAL_IGNORE_OUTPUT
results = transfer_sweep(scale, TRANSFER_VARIANTS, workers=2)
print(f"{len(results)} runs, {int(np.isinf(results['loss']).sum())} diverged")
transfer = transfer_table(results)
print(transfer.round(3).to_string())

# %% [markdown]
# All three rules, with the engine's exponents, put the optimum at the same learning rate at
# every width (in the run stored here $2^{-6}$ at 32, 64 and 128: drift 0, the best rate
# beating its neighbours by at least 0.04 bits at every width), and at that rate the loss
# falls with every doubling. The rivals fail both checks: moonshot's scale uncorrected moves
# its optimum by one step (as predicted) and AdamW under SP by two (to the grid's edge at
# width 128), and at the rate tuned at width 32 their widest model is worse than the one
# before it. AdamW-muP's optimum moved by one step over this range too (its curves are flat
# near the optimum; chapter 09 measures its transfer with 3 seeds and 100 steps). Muon as
# usually run (SP, one learning rate, keller's scale) is left out here: over 4x in 40 steps its
# optimum did not move in a trial run, the coordinate check above is where it fails.
#
# **Muon vs AdamW at equal tokens.** Every run sees the same batches for the same 40 steps.
# At the rate tuned at width 32, Muon (any rule) ends below AdamW-muP at every width, and
# below AdamW-muP's own best rate at the widest width. One seed: the margins below are
# compared with the loss differences between neighbouring learning rates, not with a seed
# spread.

# %%
muon_rules = ["muon-spectral", "muon-keller", "muon-moonshot"]
rivals = ["muon-moonshot-global", "adamw-sp-global"]
assert (transfer.loc[muon_rules, "drift_steps"] == 0).all(), transfer
assert (transfer.loc[rivals, "drift_steps"] >= 1).all(), transfer
tuned = transfer.loc["muon-spectral", "tuned_log2_lr"]
assert min(scale.log2_lrs) < tuned < max(scale.log2_lrs)  # inside the grid
summary = summarize(results)
losses = {w: f"loss@{w}" for w in scale.widths}
for v in muon_rules:  # at the transferred rate, wider is better
    at = transfer.loc[v, list(losses.values())].to_numpy(dtype=float)
    assert (np.diff(at) <= -0.01).all(), (v, at)
for v in rivals:  # the rivals' widest model is worse than the one before it
    assert transfer.loc[v, "loss@128"] > transfer.loc[v, "loss@64"], transfer.loc[v]
gap = (
    transfer.loc["adamw-mup", list(losses.values())]
    - transfer.loc["muon-spectral", list(losses.values())]
)
assert (gap >= 0.03).all(), gap  # Muon below AdamW-muP at the transferred rates
wide = max(scale.widths)
adam_best = summary.query("parametrization == 'adamw-mup' and width == @wide")["mean"].min()
assert transfer.loc["muon-spectral", f"loss@{wide}"] <= adam_best - 0.03
print(
    "PASS: the three Muon rules under muP: optimal lr drift 0 over widths 32-128; wider is better"
)
print("PASS: the rivals (moonshot uncorrected, AdamW SP): drift >= 1 step; their widest is worse")
print("PASS: at equal tokens Muon (spectral) ends >= 0.03 bits below AdamW-muP at every width")
