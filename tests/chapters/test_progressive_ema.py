"""Chapter 10 (ntk.chapters.progressive_ema): the spike readout and the FLOPs count."""

import math

import pandas as pd
import pytest

from ntk.chapters.progressive_ema import (
    SCHEDULE,
    chapter_config,
    flops_per_token,
    phase_costs,
    phase_spikes,
    seed_mean,
)
from ntk.lm.model import GPT, GPTConfig


def metrics(losses, phases, block_sizes=(32, 64, 128)):
    return pd.DataFrame(
        dict(
            step=range(1, len(losses) + 1),
            phase=phases,
            block_size=[block_sizes[p] for p in phases],
            batch_size=[4096 // block_sizes[p] for p in phases],
            loss=losses,
            tokens_per_s=[1000.0 * (1 + p) for p in phases],
        )
    )


def test_phase_spikes_reads_the_jump_and_the_recovery():
    losses = [3.0, 2.9, 2.8, 3.2, 3.0, 2.7, 2.6, 2.5, 2.9, 2.4]
    df = metrics(losses, [0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    spikes = phase_spikes(df, window=2)
    assert list(spikes["step"]) == [4, 9]
    assert list(spikes["block_size"]) == ["32 -> 64", "64 -> 128"]
    assert spikes["spike"].tolist() == pytest.approx([3.2 - 2.85, 2.9 - 2.55])
    assert spikes["recovered_after"].tolist() == [2.0, 1.0]  # 2.7 < 2.85; 2.4 < 2.55
    # the trailing residuals before step 9 (window 2): steps 3..8 -> noise is their std
    residuals = [2.8 - 2.95, 3.2 - 2.85, 3.0 - 3.0, 2.7 - 3.1, 2.6 - 2.85, 2.5 - 2.65]
    assert spikes["noise"].iloc[1] == pytest.approx(pd.Series(residuals).std())
    never = phase_spikes(metrics([2.0, 2.0, 3.0, 3.0], [0, 0, 1, 1]), window=2)
    assert math.isnan(never["recovered_after"].item())


def test_flops_per_token_counts_the_blocks_weights_and_attention():
    config = chapter_config("unused", SCHEDULE)
    m = config.model
    gpt = GPT(GPTConfig(vocab_size=27, block_size=128, n_layer=m.n_layer, n_embd=m.n_embd))
    weights = sum(p.numel() for n, p in gpt.blocks.named_parameters() if p.ndim == 2)
    for T in (32, 128):
        assert flops_per_token(config, T) == 6 * weights + 6 * m.n_layer * T * m.n_embd
    costs = phase_costs(metrics([1.0] * 4, [0, 0, 1, 2]), config)
    assert costs["steps"].tolist() == [2, 1, 1]
    assert costs["batch_size"].tolist() == [128, 64, 32]
    assert costs["tokens_per_s"].tolist() == [1000.0, 2000.0, 3000.0]


def test_seed_mean_averages_steps_and_keeps_missing_evaluations():
    a = pd.DataFrame(dict(step=[1, 2], loss=[1.0, 3.0], val_loss=[float("nan"), 2.0]))
    b = pd.DataFrame(dict(step=[1, 2], loss=[2.0, 5.0], val_loss=[float("nan"), 4.0]))
    mean = seed_mean([a, b])
    assert mean["loss"].tolist() == [1.5, 4.0]
    assert math.isnan(mean["val_loss"].iloc[0]) and mean["val_loss"].iloc[1] == 3.0
