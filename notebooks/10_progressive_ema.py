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
# # 10 - Progressive sequence length and weight averaging on the GPT
#
# Two cheap tricks from the training recipes of large language models, measured on the muP GPT
# of `ntk.lm` with its training system (`python -m ntk.lm.train`, here called from Python).
#
# **Progressive sequence length.** Early in training a language model mostly learns short-range
# statistics, and short sequences are cheaper per token (attention costs grow with the length
# T). So train on short windows first and lengthen them in phases (Li, Zhang & He 2022, *The
# Stability-Efficiency Dilemma: Investigating Sequence Length Warmup for Training GPT Models*,
# arXiv:2108.06084). The schedule `"32:250K,64:500K,128:inf"` trains at T = 32 until 250K tokens
# have been seen, then at 64 until 500K, then at 128. Every optimizer step sees the same number
# of tokens S, so the batch size B_k of phase k follows the **constant-token rule**
#
# $$B_k \, T_k = S \qquad (S = 4096:\ B = 128, 64, 32):$$
#
# every step's loss averages the same number of tokens, so the learning rate and the
# schedule's clock (tokens) mean the same in every phase. It does not make the gradient noise
# the same: the tokens of one window are correlated, and the loss itself changes with T. We do
# not measure the noise. The switch is hard: the first step that starts with at least 250K
# tokens seen runs entirely at T = 64.
#
# **An exponential moving average (EMA) of the weights.** After every optimizer step
#
# $$\bar\theta_t = \beta\, \bar\theta_{t-1} + (1 - \beta)\, \theta_t, \qquad \bar\theta_0 = \theta_0,$$
#
# so $\bar\theta_t = \beta^t \theta_0 + (1-\beta)\sum_{s=1}^{t} \beta^{t-s}\theta_s$ weighs
# the iterates of roughly the last $1/(1-\beta)$ steps (20 for β = 0.95). This is *not*
# Polyak-Ruppert averaging (Polyak & Juditsky 1992): that is the uniform average
# $\frac1t\sum_s \theta_s$ of all iterates, and its optimality is a statement about stochastic
# approximation with decreasing step sizes on (locally) convex objectives. Here the learning
# rate is constant, the objective is not convex, and the window is a few tens of steps: the
# EMA is a short-memory smoothing of the trajectory, closer in spirit to stochastic weight
# averaging (Izmailov et al. 2018, *Averaging Weights Leads to Wider Optima and Better
# Generalization*, arXiv:1803.05407, which averages a constant- or cyclic-rate tail uniformly).
# What we measure is only the validation loss of $\bar\theta_t$ next to that of $\theta_t$ at
# the same step; we do not test why one is lower. The training continues from θ; the average is
# swapped into the model only to evaluate it, and swapped out again bit for bit (checked below).
#
# We train a 2-layer GPT of width 64 on the generated word-chain corpus (`ntk.lm.corpus`,
# entropy floor 0.22 nats per character) for 750K tokens, with the progressive schedule and at
# T = 128 throughout, same constant learning rate, both with an EMA, for **three seeds** (the
# seed draws the init and the batches): six runs, two at a time. Validation runs at the current
# length and at the longest one (128). Every claim below is checked on all three seeds, with
# the seeds' spread as the tolerance: a difference is claimed when its seed mean is more than
# two standard errors (sd/√3) from zero, or, where every seed must show it, seed by seed. The
# training times printed below were measured on a shared CPU; they are not asserted.

# %%
import sys

if "google.colab" in sys.modules:  # install only what Colab lacks (it has torch)
    import subprocess

    # set in one place, .ci/colab.py, which writes this cell; brings mup and the rest
    package = "ntk-lab @ git+https://github.com/ntk-lab/ntk"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)

# %%
# %matplotlib inline
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from ntk import GPT, GPTConfig
from ntk.chapters.progressive_ema import (
    SCHEDULE,
    SEEDS,
    chapter_config,
    flops_per_token,
    phase_costs,
    phase_spikes,
    plot_runs,
    seed_mean,
    train_runs,
)
from ntk.training.callbacks import EMA

# %% [markdown]
# The swap, on a small GPT: inside `EMA.swapped(model)` the model holds θ̄, afterwards θ again,
# bit for bit.

# %%
torch.manual_seed(0)
net = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_embd=32, n_head=2))
avg = EMA(net, decay=0.95)
with torch.no_grad():
    for p in net.parameters():  # a stand-in for an optimizer step
        p.add_(0.1 * torch.randn_like(p))
avg.update(net)
theta = {k: v.clone() for k, v in net.state_dict().items()}
with avg.swapped(net):
    inside = {k: p.detach().clone() for k, p in net.named_parameters()}
assert all(torch.equal(inside[k], avg.average[k]) for k in inside)
assert any(not torch.equal(inside[k], theta[k]) for k in inside)
assert all(torch.equal(v, theta[k]) for k, v in net.state_dict().items())
print("PASS: inside the block the model holds the average; afterwards its own weights, bit for bit")

# %% [markdown]
# ## The schedule
#
# The phases, their batch sizes and the step at which each starts, ceil(U / S) for a phase
# that follows a threshold of U tokens:

# %%
out = Path(tempfile.mkdtemp())
progressive = chapter_config(out / "progressive", SCHEDULE)
schedule = progressive.schedule
phases = pd.DataFrame(
    {
        "block size T": [schedule.block_size(k) for k in range(3)],
        "batch B": [schedule.batch_size(k) for k in range(3)],
        "B x T": [schedule.batch_size(k) * schedule.block_size(k) for k in range(3)],
        "first step": [schedule.first_step(k) for k in range(3)],
    }
)
print(f"{progressive.total_steps} steps of {schedule.tokens_per_step} tokens")
print(phases.to_string())

# %% [markdown]
# ## Six runs
#
# `chapter_config` (in `ntk/chapters/progressive_ema.py`) is the whole experiment: muP at its
# base width (every width ratio 1: global-lr SP at this width), AdamW at a constant learning
# rate 1e-2 after 10 warmup steps, gradient clipping at 1, EMA with β = 0.95, validation on 8K
# tokens every 20 steps. `train_runs` trains the progressive and the fixed-length run for seeds
# 0, 1, 2, two processes at a time; each run writes `metrics.csv` (one row per step) into a
# temporary directory.

# %%
# NBVAL_IGNORE_OUTPUT
runs, lasts = train_runs(out, SEEDS, workers=2)
for (name, seed), last in lasts.items():
    print(f"{name}, seed {seed}: {last['time_s']:.0f} s of training")
progs = [runs["progressive", seed] for seed in SEEDS]
fixeds = [runs["fixed", seed] for seed in SEEDS]

# %% [markdown]
# Every step of every progressive run had B × T = 4096 tokens, and the phases switched exactly
# at the steps computed above:

# %%
for prog in progs:
    assert (prog["batch_size"] * prog["block_size"] == 4096).all()
    assert (prog["tokens"] == 4096 * prog["step"]).all()
    starts = [int(prog.loc[prog["phase"] == k, "step"].min()) - 1 for k in range(3)]
    assert starts == [schedule.first_step(k) for k in range(3)], starts
print("PASS: constant tokens per step; hard switches at steps", starts[1:], "(every seed)")

# %% [markdown]
# The seed mean of the three runs of each kind:

# %%
fig = plot_runs(seed_mean(progs), seed_mean(fixeds))
fig.axes[0].set_title("training loss, mean of 3 seeds")
fig.axes[1].set_title("validation loss at T = 128, mean of 3 seeds")
plt.show()

# %% [markdown]
# ## What happens at a switch
#
# At each switch the training loss jumps, then recovers within a few steps. The new windows
# hold query-key distances the model has never seen (up to 63, then 127): its attention has
# not learned what to do with them. How big is a jump that means something? If the switch did
# nothing, the first loss at the new length would differ from the mean of the last five only by
# the step-to-step fluctuation of the loss, which `phase_spikes` measures as `noise` (the
# standard deviation of that same difference over the 20 steps before the switch). So we read
# the spike in units of that noise, z = spike / noise: under the rival (a switch that does
# nothing) z is a draw of about unit size and the mean of three seeds stays within about ±1.2
# of zero (two of its standard errors). We claim a spike at a switch where the seed mean of z
# exceeds 3, and a recovery where every seed is back below its pre-switch level within 15
# steps. Single seeds vary: a seed's spike at a switch can sit within its noise.
#
# The validation loss at the longest length shows the same thing from the other side: at every
# evaluation of the first phase, in every seed, it is above the validation loss at the training
# length, although a longer context can only help a model that uses it; and the gap widens as
# the model learns the short windows (claimed where the seed mean of last gap - first gap
# exceeds two standard errors).

# %%
# NBVAL_IGNORE_OUTPUT
spikes = pd.concat({s: phase_spikes(runs["progressive", s]) for s in SEEDS}, names=["seed"])
print(spikes.round(3).to_string())
print(
    "spike / noise, seed mean per switch:",
    (spikes["spike"] / spikes["noise"]).groupby(level=1).mean().round(1).tolist(),
)
evals = {s: runs["progressive", s].query("val_loss.notna()") for s in SEEDS}
gaps = pd.DataFrame(
    {
        seed: ev[ev["block_size"] == 32].set_index("step").eval("val_loss_max - val_loss")
        for seed, ev in evals.items()
    }
)
print("\nphase 0: validation loss at T = 128 minus at T = 32 (rows: step, columns: seed)")
print(gaps.round(3).to_string())

# %%
z = (spikes["spike"] / spikes["noise"]).unstack("seed")  # rows: switch, columns: seed
assert (z.mean(axis=1) > 3).all(), z
assert (spikes["recovered_after"] <= 15).all(), spikes
assert (gaps > 0).all().all(), gaps
widening = gaps.iloc[-1] - gaps.iloc[0]  # per seed
assert widening.mean() > 2 * widening.std() / len(SEEDS) ** 0.5, widening
print("PASS: at each switch a loss spike, > 3x the step-to-step noise before it (seed mean),")
print("      gone within 15 steps in every seed;")
print("PASS: at every phase-0 evaluation of every seed the model is worse at T = 128 than at")
print("      T = 32, and the gap widens over phase 0 (seed mean > 2 standard errors)")

# %% [markdown]
# ## EMA against the training weights
#
# Validation at T = 128 with the training weights θ and with the average θ̄, as EMA - train
# per evaluation: mean over the three seeds and its standard error. After the first switch
# the loss at T = 128 falls fast and the average, which still holds the weights of the last
# ~20 steps, is worse: it lags. At the end of the run, at the constant learning rate, the
# average is better than the current iterate. That is all we claim: both where the seed mean
# is more than two standard errors from zero, at the first evaluation after the first switch
# and at the last two evaluations (steps 180 and 184). In between the sign changes; earlier
# differences are within the seeds' spread, and we claim nothing about them. Why the average wins late (the iterates keep moving at a
# constant learning rate and averaging smooths that motion, as a lower learning rate would) is
# the usual reading, not something this experiment tests.

# %%
# NBVAL_IGNORE_OUTPUT
ema_diff = pd.DataFrame(
    {
        seed: ev.set_index("step").eval("ema_val_loss_max - val_loss_max")
        for seed, ev in evals.items()
    }
)
ema = pd.DataFrame(
    {
        "block size": evals[SEEDS[0]].set_index("step")["block_size"],
        "EMA - train, mean": ema_diff.mean(axis=1),
        "standard error": ema_diff.std(axis=1) / len(SEEDS) ** 0.5,
    }
)
print(ema.round(3).to_string())

# %%
after_switch = int(ema.index[ema["block size"] == 64][0])  # the first evaluation at T = 64
lag, late = ema.loc[after_switch], ema.tail(2)
assert lag["EMA - train, mean"] > 2 * lag["standard error"], lag
assert (late["EMA - train, mean"] < -2 * late["standard error"]).all(), late
print(f"PASS: at step {after_switch}, after the first switch, the EMA is worse than the training")
print("      weights; at the last 2 evaluations it is better (seed means > 2 standard errors)")

# %% [markdown]
# ## The cost of each phase
#
# The FLOPs per token in the blocks, 6N + 6LTC (N = 12LC² weights, Kaplan et al. 2020), grow
# with T only through the attention term; at width 64 that term is small, so the short phases
# save little compute here. The ratio of the two terms is 6LTC / 6N = T / (12C): 1/6 at
# T = 128 = 2C here; the attention term reaches half the weights' term only at T = 6C. The
# measured throughput is printed but not asserted: on a shared CPU it moves with the load
# more than between phases (the runs stored here were measured two at a time, under load).

# %%
print("FLOPs per token (blocks):", {T: flops_per_token(progressive, T) for T in (32, 64, 128)})
C, L = progressive.model.n_embd, progressive.model.n_layer
weights = 6 * 12 * L * C**2
for T in (32, 64, 128, 4 * C, 6 * C):
    attention = flops_per_token(progressive, T) - weights
    assert attention * 12 * C == weights * T  # attention / weights = T / (12 C), exactly
assert 2 * (flops_per_token(progressive, 6 * C) - weights) == weights
print("PASS: attention / weights term = T / (12 C): 1/6 at T = 2C = 128, 1/2 at T = 6C")

# %%
# NBVAL_IGNORE_OUTPUT
costs = phase_costs(progs[0], progressive)
print("seed 0:")
print(costs.round(0).to_string(index=False))
print(f"fixed T = 128: {fixeds[0]['tokens_per_s'].median():.0f} tokens/s")

# %% [markdown]
# ## Progressive against fixed length, same tokens
#
# Each pair of runs saw 750K tokens with the same learning rate and seed. The paired
# difference fixed - progressive of the final validation loss at T = 128, per seed, with the
# training weights and with the EMA:

# %%
# NBVAL_IGNORE_OUTPUT
final = pd.DataFrame(
    {
        (name, seed): df.loc[df["val_loss_max"].notna(), ["val_loss_max", "ema_val_loss_max"]].iloc[
            -1
        ]
        for (name, seed), df in runs.items()
    }
).T
paired = final.loc["fixed"] - final.loc["progressive"]
print(final.round(4).to_string())
print("\nfixed - progressive, per seed:")
print(paired.round(4).to_string())
print(
    "mean:", paired.mean().round(4).to_dict(), " standard error:", paired.sem().round(4).to_dict()
)

# %%
assert (paired.mean() > 2 * paired.sem()).all(), paired
print("PASS: after 750K tokens the progressive run is better at T = 128 than the fixed-length")
print("      run, with the training weights and with the EMA (seed mean > 2 standard errors)")

# %% [markdown]
# ## Summary
#
# - The constant-token rule B T = S keeps every step the same number of tokens; the switch is
#   hard and costs a short loss spike (new query-key distances), gone within a few steps, in
#   every seed.
# - At this scale (width 64, 750K tokens, one constant learning rate) the progressive run ends
#   better than the fixed-length run after the same tokens, over three seeds: the gain we
#   assert is in what is learned per token; the speed per token is not asserted (a shared CPU
#   is too noisy for it), and whether the gain survives a tuned learning rate per schedule or
#   a decaying one is not tested here.
# - The EMA of the weights lags while the loss falls fast (after the first switch) and is
#   better at the end of a constant-learning-rate run; it costs one copy of the weights and one
#   update per step. It is a short exponential window over the trajectory, not Polyak-Ruppert
#   averaging.
#
# The same runs from the command line, with checkpoints, resume and several processes:
#
# ```
# python -m ntk.lm.train --config configs/progressive_ema.yaml
# torchrun --standalone --nproc_per_node=2 -m ntk.lm.train --config configs/progressive_ema.yaml
# ```
