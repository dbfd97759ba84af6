"""Run logging: exact CSV, truncation on resume, diagnostics, TensorBoard, W&B."""

import csv
import sys
import types
from pathlib import Path

import pytest
import torch

from ntk.lm.checkpoint import CHECKPOINT_NAME, load_model
from ntk.lm.run_log import (
    COLUMNS,
    RunLogger,
    plot_run,
    read_diagnostics,
    read_metrics,
    truncate_csv,
    wandb_available,
)
from ntk.lm.train import Processes, setup, train, validation_set

pytestmark = pytest.mark.usefixtures("single_thread")


def test_csv_holds_exact_floats_and_is_truncated_on_resume(tmp_path):
    logger = RunLogger(tmp_path, total_steps=5, progress=False)
    values = [1 / 3, 2.0**-30, 1e300]
    for step, v in enumerate(values, 1):
        logger.log(dict(step=step, loss=v, tokens_per_s=1.0, block_size=8))
    with pytest.raises(ValueError, match=r"keys \['bogus'\] that are not metrics.csv columns"):
        logger.log(dict(step=4, loss=0.0, bogus=1))
    logger.close()
    with open(tmp_path / "metrics.csv", newline="") as f:
        lines = list(csv.reader(f))
    assert tuple(lines[0]) == COLUMNS
    assert [float(r[COLUMNS.index("loss")]) for r in lines[1:]] == values  # round trip
    truncate_csv(tmp_path / "metrics.csv", step=2)
    assert list(read_metrics(tmp_path)["step"]) == [1, 2]
    resumed = RunLogger(tmp_path, total_steps=5, start_step=1, progress=False)
    resumed.log(dict(step=2, loss=0.5, tokens_per_s=1.0, block_size=8))
    resumed.close()
    assert list(read_metrics(tmp_path)["loss"]) == [1 / 3, 0.5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diagnostics.csv", "metrics.csv"]


def test_diagnostics_measure_the_model_and_do_not_change_training(tiny):
    plain = tiny("plain")
    train(plain)
    config = tiny("diag", **{"log.diag_every": 10})
    train(config)
    assert list(read_metrics(plain.log.out_dir)["loss"]) == list(
        read_metrics(config.log.out_dir)["loss"]
    )
    diag = read_diagnostics(config.log.out_dir)
    assert sorted(set(diag["step"])) == [10, 20]
    assert set(diag["quantity"]) == {"act_size", "spectral_rel_w", "spectral_rel_dw"}
    sizes = diag[(diag["quantity"] == "act_size") & (diag["step"] == 20)].set_index("layer")
    assert "blocks.0.attn.q.module" not in sizes.index  # one row per layer, the wrapper's
    assert "blocks.0.attn.attn_logits" in sizes.index  # s q k^T rebuilt from SDPA's inputs
    model, _, _ = load_model(Path(config.log.out_dir) / CHECKPOINT_NAME)
    probe = validation_set(setup(config, Processes()), 16)[0][0][:4]
    with torch.no_grad():
        logits = model(probe)
    assert sizes.loc["<output>", "value"] == pytest.approx(logits.abs().mean().item(), rel=1e-6)
    head = diag[(diag["quantity"] == "spectral_rel_w") & (diag["step"] == 20)]
    head = head.set_index("layer").loc["lm_head", "value"]
    w = model.lm_head.weight  # effective readout: multiplier x W, relative to sqrt(fan_out/fan_in)
    sigma = model.lm_head.multiplier * torch.linalg.matrix_norm(w.detach(), ord=2).item()
    assert head == pytest.approx(sigma / (w.shape[0] / w.shape[1]) ** 0.5, rel=1e-3)
    figure = plot_run(config.log.out_dir)
    assert len(figure.axes) == 4 and figure.axes[3].get_lines()


def test_tensorboard_gets_the_same_scalars(tiny, monkeypatch):
    # torch.utils.tensorboard imports TensorFlow when it is installed (many seconds); its stub,
    # which tensorboard itself selects when "tensorboard.compat.notf" exists, writes the same
    # event files
    monkeypatch.setitem(sys.modules, "tensorboard.compat.notf", types.ModuleType("notf"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny("tb", **{"log.tensorboard": True, "train.tokens": 2560})
    train(config)
    events = EventAccumulator(str(Path(config.log.out_dir) / "tensorboard")).Reload()
    loss = [e.value for e in events.Scalars("loss")]
    assert [e.step for e in events.Scalars("loss")] == list(range(1, 11))
    assert loss == pytest.approx(list(read_metrics(config.log.out_dir)["loss"]), rel=1e-7)
    assert [e.step for e in events.Scalars("val_loss_max")] == [10]


@pytest.mark.skipif(wandb_available(), reason="wandb is installed")
def test_wandb_without_the_package_fails_before_training(tiny):
    config = tiny("wandb", **{"log.wandb": True})
    with pytest.raises(ImportError, match="log.wandb is true but the wandb package"):
        train(config)
    assert not Path(config.log.out_dir).exists()  # nothing written


def test_wandb_offline(tiny, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = tiny("wandb", **{"log.wandb": True, "train.tokens": 1280})
    train(config)
    assert list((Path(config.log.out_dir) / "wandb").glob("offline-run-*"))
