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
# # 09 - muP on a transformer: coordinate check and learning-rate transfer on a GPT
#
# Notebook 07 ran the coordinate check on MLPs and on Hugging Face's GPT-2, and notebook 08
# the learning-rate transfer on MLPs. Tensor Programs V (Yang et al. 2022, arXiv:2203.03466)
# treats a transformer the same way, with one addition for attention. Here
# we take the project's GPT (`ntk.lm`: token embedding, RoPE, pre-norm blocks with causal
# attention and a 4x MLP, final norm, readout), parametrize it with the project's abc engine
# (`ntk.Parametrization`, through `ntk.lm.parametrize`), and check the two predictions:
#
# 1. **Coordinate check**: under muP every module's activations and their updates stay
#    $\Theta(1)$ as the width $n$ grows; under global-lr SP (the standard init, one learning rate for every
#    parameter) the hidden updates
#    grow with $n$.
# 2. **Learning-rate transfer**: under muP the best Adam learning rate of a narrow proxy stays
#    (near-)optimal as the width grows, and there the wider model is better; under global-lr SP the
#    optimum moves.
#
# Everything runs on the default corpus of `ntk.lm` (a generated word chain, no downloads).
# The scale here runs in about 77 s on an idle 2-core CPU, most of it in the transfer sweep's
# 144 training runs; `python -m ntk.chapters.mup_transformer` runs the larger version and
# writes its figures to `figures/`.

# %%
import sys

if "google.colab" in sys.modules:  # install only what Colab lacks (it has torch)
    import subprocess

    # set in one place, .ci/colab.py, which writes this cell; brings mup and the rest
    package = "ntk-lab @ git+https://github.com/ntk-lab/ntk"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)

# %%
# %matplotlib inline

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from ntk import GPT, GPTConfig
from ntk.chapters.mup_transformer import (
    BROKEN_ATTENTION,
    NOTEBOOK,
    broken_attention_check,
    coord_claims,
    coord_exponents,
    coordinate_check,
    exponent_table,
    plot_coordinates,
    plot_mutransfer,
    transfer_claims,
    transfer_sweep,
    zero_init_steps,
)
from ntk.lm.parametrize import optimizer_groups, parametrize
from ntk.lm.step import train_step
from ntk.scaling.sweep import summarize

torch.set_num_threads(1)  # the sweep runs two single-threaded worker processes

# %% [markdown]
# ## The rules
#
# Width is `n_embd` $= n$; $m = n / n_0$ is the ratio to the base width $n_0$ of the proxy.
# The head count is fixed, so heads widen with $n$ (head size $d = n / n_\text{head}$). The
# engine implements muP in the form of Everett et al. (2024, arXiv:2407.05872), an
# abc-parametrization: weight $W = m^{-a} w$, $w$ initialized with std $\sigma_0 m^{-b}$
# ($\sigma_0$ the standard init at the base width), Adam learning rate $\eta\, m^{-c}$:
#
# | layer | global-lr SP | muP |
# |---|---|---|
# | token embedding (vocab $\to n$) | $a=0,\ b=0,\ c=0$ | $a=-\frac12,\ b=\frac12,\ c=\frac12$: init and updates $\Theta(1)$ per coordinate |
# | hidden: $q, k, v, o$, MLP up/down | $a=0,\ b=\frac12,\ c=0$ | $a=0,\ b=\frac12,\ c=1$: Adam lr $\propto 1/n$ |
# | readout ($n \to$ vocab) | $a=0,\ b=\frac12,\ c=0$ | $a=\frac12,\ b=\frac12,\ c=\frac12$, **zero init** |
# | query | as hidden | as hidden, **zero init** (uniform attention at any width) |
# | attention logits $s\, q\cdot k$ | $s = 1/\sqrt{d}$ | $s = \sqrt{d_0}/d$: $1/d$, equal to $1/\sqrt{d_0}$ at the base width |
# | norm gains, biases | lr $\eta$ | lr $\eta$ |
# | AdamW weight decay | $\lambda$ | $\lambda_g = \lambda\,\eta/\eta_g$: $\eta_g \lambda_g = \eta \lambda$ at every width |
#
# Why $1/d$: after training, $q$ and $k$ are correlated, so $q \cdot k$ grows like $d$ rather
# than $\sqrt d$. Why the decay rule: AdamW shrinks a weight by $1 - \eta_g \lambda_g$ per
# step; with muP's $\eta_g \propto 1/n$ and a fixed $\lambda$ that decay would vanish at large
# width, so `optimizer_groups` keeps $\eta_g\lambda_g$ fixed ("independent" decay, Wortsman et
# al. 2023, arXiv:2309.14322; Wang & Aitchison 2024, arXiv:2405.13698). Here is the engine's
# table for one block at $n = 256$, $n_0 = 32$ ($m = 8$), then the decay rule checked at
# widths 32 to 512:

# %%
model = GPT(GPTConfig(vocab_size=512, block_size=16, n_layer=1, n_embd=256, n_head=2))
mup = parametrize(model, "mup", base_width=32, lr=0.01)
print(mup)
wd = {g["name"]: g["lr"] * g["weight_decay"] for g in optimizer_groups(mup, 0.1) if g["role"]}
print("lr_g * weight_decay_g per matrix:", sorted({round(float(v), 12) for v in wd.values()}))

# %%
for n in (32, 64, 128, 256, 512):
    net = GPT(GPTConfig(vocab_size=512, block_size=16, n_layer=1, n_embd=n, n_head=2))
    groups = optimizer_groups(parametrize(net, "mup", base_width=32, lr=0.01), 0.1)
    hidden = [g for g in groups if g["role"] == "hidden"]
    assert all(math.isclose(g["lr"], 0.01 * 32 / n, rel_tol=1e-12) for g in hidden)  # c = 1
    products = [g["lr"] * g["weight_decay"] for g in groups if g["role"]]
    assert all(math.isclose(v, 0.01 * 0.1, rel_tol=1e-12) for v in products), (n, products)
print("PASS: at widths 32-512 every matrix has lr_g * weight_decay_g = 0.01 * 0.1 (hidden lr 1/n)")

# %% [markdown]
# At the base width every ratio is 1: global-lr SP and muP are the same model with the same learning
# rates, except for muP's zero-initialized query and readout. With those two zeroed in global-lr SP too,
# three AdamW steps leave bit-identical weights:

# %%
batch = (torch.randint(0, 512, (4, 16)), torch.randint(0, 512, (4, 16)))
runs = {}
sp_zeroed = dict(lr_rule="global", zero_query=True, zero_readout=True)  # muP's two zero inits
for name, options in [("sp", sp_zeroed), ("mup", {})]:
    torch.manual_seed(0)
    net = GPT(GPTConfig(vocab_size=512, block_size=16, n_layer=1, n_embd=32, n_head=2))
    p = parametrize(net, name, base_width=32, lr=0.01, **options)
    opt = torch.optim.AdamW(optimizer_groups(p, weight_decay=0.1))
    for step in range(3):
        train_step(net, opt, batch, step=step)
    runs[name] = net.state_dict()
assert all(torch.equal(runs["sp"][k], runs["mup"][k]) for k in runs["sp"])
print(
    "PASS: at the base width global-lr SP and muP train to identical weights (up to the zero inits)"
)

# %% [markdown]
# ## Coordinate check
#
# `ntk.scaling.coord_check` trains each width a few AdamW steps (constant learning rate
# $2^{-4}$) on one fixed batch of the character-level corpus and records, per module output
# $h$ and step $t$, the mean $|h_t|$ (`act_size`) and the mean $|h_t - h_0|$ (`delta_size`),
# including the attention logits $s\,q\cdot k$ over the causal pairs, which `coord_check`
# rebuilds from the arguments of `F.scaled_dot_product_attention`. Widths 64 to 512, base
# width 64, 2 blocks of 4 heads, 3 seeds. Per module group we fit size $\propto n^e$ at each
# step and average $e$ over the blocks.

# %%
# NBVAL_IGNORE_OUTPUT
scale = NOTEBOOK
coords = coordinate_check(scale)
fits = coord_exponents(coords)
checked = scale.coord_checked_steps
print(f"fitted exponents e (size ~ width^e), mean over steps {checked} and blocks:")
print(exponent_table(fits, checked).round(2).to_string())

# %%
fig = plot_coordinates(coords, (2, checked[0], checked[-1]))
plt.show()

# %% [markdown]
# Top row: global-lr SP. After a few steps the hidden modules' updates, the
# attention logits and the readout's logits grow at least like $\sqrt n$ (the lines climb);
# muP's lines (bottom) are flat. Zero-initialized modules (muP's query, its logits and its
# readout) are exactly zero at step 0; the readout moves at the first update, the query and
# the logits at the second (at step 0 no gradient reaches anything behind the zero readout).

# %%
cc = coord_claims(fits, checked)
assert cc["mup_groups"] == 10 and cc["sp_hidden_groups"] == 8  # every group, logits included
assert cc["mup_max_abs"] <= 0.1, cc  # muP: every group's exponent within +-0.1 of 0
assert cc["sp_hidden_min"] >= 0.5, (
    cc
)  # global-lr SP: every hidden group grows at least like sqrt(n)
assert cc["sp_readout_min"] >= 0.5, cc  # and so do global-lr SP's logits
first_move = zero_init_steps(coords)
assert first_move == {"query": 2, "attention logits": 2, "readout (logits)": 1}, first_move
print(
    f"PASS: at steps {checked}, muP's exponents lie within +-0.1 of 0 in all 10 groups; "
    "global-lr SP's are >= 0.5 in all 8 hidden groups (attention logits included) and in the readout"
)
print("PASS: muP's zero-initialized outputs are exactly 0 until they move:", first_move)

# %% [markdown]
# ### A deliberately broken muP: attention at $1/\sqrt{d}$
#
# The check earns its keep when it catches a mistake. Keep every muP rule but one: the
# attention logits scaled by $1/\sqrt{d}$ (the usual transformer rule, `attention_scale="keep"`)
# instead of muP's $1/d$. Here the heads widen with $n$ ($d = n/4$). After training, a query and
# a key are correlated in $\Theta(d)$ coordinates, so
#
# $$q \cdot k = \sum_{i=1}^{d} q_i k_i = \Theta(d), \qquad
# \frac{q\cdot k}{\sqrt d} = \Theta(\sqrt n), \qquad \frac{q\cdot k}{d} = \Theta(1)$$
#
# (Yang et al. 2022, sec. 4 and appendix: the $1/\sqrt d$ rule assumes q and k independent). The
# prediction is specific: the attention-logit group rises with exponent $1/2$ in the limit,
# and every other group stays flat, because the softmax of the first few steps is still near
# uniform. Rival outcome: the broken rule leaves the logits flat (then the check could not
# have told the rules apart) or disturbs every group (then it could not say which rule broke).

# %%
# NBVAL_IGNORE_OUTPUT
broken = coord_exponents(broken_attention_check(scale))
broken_e = exponent_table(broken, checked)[BROKEN_ATTENTION].mean(axis=1)
print("fitted exponents of muP with 1/sqrt(d) attention, mean of both quantities:")
print(broken_e.round(2).to_string())

# %%
# Theory: 1/2 for the logits (Theta(d) over sqrt(d)), 0 elsewhere. Thresholds: the logits must
# pass 0.25, halfway between the two rival exponents 0 and 1/2 (a finite-width fit falls short
# of 1/2); every other group keeps muP's band of +-0.1.
others = broken_e.drop("attention logits")
assert broken_e["attention logits"] >= 0.25, broken_e
assert others.abs().max() <= 0.1, others
print(
    "PASS: with 1/sqrt(d) attention only the attention logits leave the +-0.1 band (exponent "
    ">= 0.25, theory 1/2); the other 9 groups stay within it"
)

# %% [markdown]
# ## Learning-rate transfer
#
# One run trains a GPT (1 block, 2 heads, context 16) for 100 AdamW steps (betas 0.9, 0.95,
# linear warmup over 10 steps, then linear decay to 0) on batches of 32 windows of the
# word-level corpus, and scores the validation loss in bits per token (the corpus' entropy
# floor is 1.75 bits; a uniform guess over the 512 words costs 9). Widths 16 to 128 (8x), base
# width 16, learning rates $2^{-6} \dots 2^{-1}$, 3 seeds, global-lr SP and muP.
# The same seed gives the same init draw and the same batches at every width and learning
# rate. `ntk.scaling.sweep.lr_sweep` runs the grid on two worker processes.

# %%
# NBVAL_IGNORE_OUTPUT
results = transfer_sweep(scale, workers=2)
summary = summarize(results)
print(f"{len(results)} runs, {int(np.isinf(results['loss']).sum())} diverged")
table = summary.pivot_table(index="log2_lr", columns=["parametrization", "width"], values="mean")
print(table.round(3).to_string())

# %%
fig = plot_mutransfer(results, ylim=(1.7, 5.0))
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
claims = transfer_claims(results)
print(claims["optima"].round(4).to_string(index=False))
print("\ndrift of the optimal log2 lr, in grid steps:", claims["drift_steps"])
print("... counting near-ties (within 2 s.e. of the best):", claims["near_drift_steps"])
print("slope of the optimal log2 lr against log2 width:", claims["opt_slope"])
print(
    "global-lr SP's widest model diverges at its narrowest model's optimum:",
    claims["sp_wide_diverges"],
)
print(f"\nmuP at the lr tuned on the narrowest model (2^{claims['transferred']:g}):")
print(claims["at_transfer"].round(4).to_string())
print(f"narrowest - widest: {claims['margin_se']:.1f} combined standard errors")
print("each width - the next:", np.round(claims["drops_se"], 1).tolist(), "standard errors")

# %% [markdown]
# Under global-lr SP the optimum moves to smaller learning rates as the model widens (in the run stored
# here by one grid step per doubling; the check asks for at least half a step per doubling, and
# never a rise). With Adam every one of a hidden unit's $n$ inputs moves by about the
# learning rate, so its change grows like $n\eta$. Under muP it moves little: in the run
# stored here by one grid step, from $2^{-2}$ at width 16 to $2^{-3}$ at the wider ones. Near
# the optimum muP's curves are flat and two neighbouring learning rates can lie within the
# seeds' noise (at width 128, $2^{-3}$ and $2^{-4}$), so the argmin alone could move by one
# more step on another machine. The check is robust to that: it counts every learning rate
# within two standard errors of a width's best as near-optimal there, and asks for two
# neighbouring grid points that hold a near-optimal rate of every width (drift <= 1). At the
# learning rate tuned on the narrowest model the validation loss falls with every doubling of
# the width, by more than one standard error each time.

# %%
drift = claims["drift_steps"]
assert max(scale.widths) / min(scale.widths) >= 8 and len(scale.seeds) == 3
assert not claims["at_edge"], claims["optima"]  # every optimum inside the grid
near, slope = claims["near_drift_steps"], claims["opt_slope"]
sp_opt = claims["optima"].query("parametrization == 'sp'").sort_values("width")["log2_lr_opt"]
assert near["mup"] <= 1, near  # robust to a near-tie flipping the argmin
assert drift["sp"] >= 2 or claims["sp_wide_diverges"], drift
assert (np.diff(sp_opt) <= 0).all() and slope["sp"] <= -0.5, (sp_opt, slope)
assert claims["margin_se"] >= 2, claims["at_transfer"]
assert min(claims["drops_se"]) >= 1, claims["at_transfer"]
print(
    "PASS: muP's near-optimal learning rates fit in 1 grid step over an 8x range of widths; "
    "global-lr SP's optimum moves by >= 2;\n      its optimum never rises with width (slope <= -0.5 grid steps per "
    "doubling);\n      at the transferred lr each doubling of the width lowers muP's loss by "
    ">= 1 s.e. (narrowest - widest >= 2 s.e.)"
)
