"""optim.name=muon in the YAML trainer: both optimizers' states in the checkpoint, and a run
stopped and resumed equals the uninterrupted one bitwise."""

from pathlib import Path

import pytest
import torch

from ntk.lm.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ntk.lm.train import Processes, setup, train
from ntk.scaling.muon import MuonAdamW

pytestmark = pytest.mark.usefixtures("single_thread")
MUON = {"optim.name": "muon", "optim.muon_rule": "keller", "optim.muon_lr": 0.02}


def test_muon_run_resumes_bitwise(tiny):
    short = {"train.tokens": 8 * 256, "ema.enabled": False, **MUON}
    ref = tiny("ref", **short)
    train(ref)
    part = tiny("part", **short, **{"train.stop_step": 3, "checkpoint.every": 100})
    train(part)
    state = load_checkpoint(Path(part.log.out_dir) / CHECKPOINT_NAME)
    assert state["step"] == 3 and set(state["optimizer"]) == {"muon", "adamw"}
    assert state["optimizer"]["muon"]["state"]  # Muon's momentum buffers are saved
    train(tiny("part", **short))
    a = load_checkpoint(Path(ref.log.out_dir) / CHECKPOINT_NAME)
    b = load_checkpoint(Path(part.log.out_dir) / CHECKPOINT_NAME)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_muon_config_builds_both_optimizers_and_refuses_bad_keys(tiny, corpus_file):
    run = setup(tiny("built", **MUON), Processes())
    assert isinstance(run.optimizer, MuonAdamW)
    assert {g["adjust_lr_fn"] for g in run.optimizer.muon.param_groups} == {"original"}
    with pytest.raises(ValueError, match="optim.muon_rule"):
        tiny("bad", **{"optim.name": "muon", "optim.muon_rule": "adam"})
    with pytest.raises(ValueError, match="optim.name"):
        tiny("bad", **{"optim.name": "sgd"})
    with pytest.raises(ValueError, match="fsdp"):
        tiny("bad", **{"optim.name": "muon", "train.parallel": "fsdp"})
    assert tiny("default", **{"optim.name": "muon"}).optim.muon_rule == "spectral"
