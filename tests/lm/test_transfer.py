"""One transfer run: its setup's checks, its schedule, its determinism, SP's one lr vs muP."""

import math

import pandas as pd
import pytest
import torch

from ntk.lm.transfer import LMSetup, build, schedule, train_run, wider_is_better

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = LMSetup(
    level="word",
    n_layer=1,
    n_head=2,
    block_size=8,
    batch_size=4,
    steps=6,
    warmup=2,
    base_width=8,
    val_batches=1,
    val_batch_size=4,
)


def test_setup_refuses_bad_values():
    with pytest.raises(ValueError, match="warmup"):
        LMSetup(steps=10, warmup=10)
    with pytest.raises(ValueError, match="level"):
        LMSetup(level="byte")
    with pytest.raises(ValueError, match="betas"):
        LMSetup(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="weight_decay"):
        LMSetup(weight_decay=-0.1)


def test_schedule_warms_up_then_decays_to_zero():
    factors = [schedule(s, TINY) for s in range(TINY.steps + 1)]
    assert factors == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0])


def test_build_sp_one_lr_and_mup_per_layer_lrs():
    _, sp = build("sp", 32, 0.01, 0, TINY)
    assert {g["lr"] for g in sp.param_groups} == {0.01}
    model, mup = build("mup", 32, 0.01, 0, TINY)
    hidden = next(g for g in mup.param_groups if g["name"] == "blocks.0.mlp.up")
    assert hidden["lr"] == pytest.approx(0.01 / 4)  # width 32 = 4 x base width 8: lr / m
    assert model.lm_head.module.weight.abs().max() == 0  # muP's zero readout
    with pytest.raises(ValueError, match="parametrization"):
        build("ntk", 32, 0.01, 0, TINY)


def test_train_run_is_deterministic_and_learns():
    first = train_run("mup", 16, 2.0**-4, 0, TINY)
    assert first == train_run("mup", 16, 2.0**-4, 0, TINY)  # same seed, same batches and init
    assert first != train_run("mup", 16, 2.0**-4, 1, TINY)
    assert first < math.log2(512)  # below a uniform guess over the 512 words


def test_train_run_reports_a_diverged_run_as_inf(monkeypatch):
    import ntk.lm.transfer as transfer

    def blow_up(model, *args, **kwargs):
        from ntk.training import TrainingDivergedError

        raise TrainingDivergedError(0, math.nan)

    monkeypatch.setattr(transfer, "train_step", blow_up)
    assert train_run("sp", 16, 0.1, 0, TINY) == math.inf


def test_wider_is_better_reads_the_mup_rows_at_one_lr():
    summary = pd.DataFrame(
        dict(
            parametrization=["mup", "mup", "sp"],
            width=[64, 32, 32],
            log2_lr=[-3.0, -3.0, -3.0],
            mean=[2.0, 2.5, 9.0],
            stderr=[0.1, 0.1, 0.1],
        )
    )
    out = wider_is_better(summary, -3.0)
    assert list(out.index) == [32, 64] and list(out["mean"]) == [2.5, 2.0]
    with pytest.raises(ValueError, match="no muP rows"):
        wider_is_better(summary, -4.0)
    assert torch.get_num_threads() == 1
