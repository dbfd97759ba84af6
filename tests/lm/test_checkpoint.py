"""Checkpoints: atomic writes (SIGKILL mid-write), bitwise resume, width metadata, bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ntk.lm.checkpoint import (
    CHECKPOINT_NAME,
    atomic_write_bytes,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from ntk.lm.train import train

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parents[2]


def rows(out_dir: Path) -> list[dict[str, str]]:
    """metrics.csv as text: floats compared as their exact repr."""
    with open(out_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def same_run(a: Path, b: Path) -> None:
    """Every loss of two runs equal bit for bit (timings aside), and the final weights."""
    ra, rb = rows(a), rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for key in ("lr", "loss", "val_loss", "val_loss_max", "ema_val_loss", "ema_val_loss_max"):
        assert [r[key] for r in ra] == [r[key] for r in rb], key
    sa, sb = (load_checkpoint(d / CHECKPOINT_NAME) for d in (a, b))
    for name, tensor in sa["model"].items():
        assert torch.equal(tensor, sb["model"][name]), name
    for name, tensor in sa["ema"]["average"].items():
        assert torch.equal(tensor, sb["ema"]["average"][name]), name


def python_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def test_atomic_write_leaves_the_old_or_the_new_file(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # no temporary file left


def test_missing_corrupt_and_foreign_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt' does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ValueError, match="garbage.pt' is corrupt or not a checkpoint"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="is not an ntk.lm checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(ValueError, match="checkpoint state lacks"):
        save_checkpoint(tmp_path / "x.pt", {"step": 1})


def test_resume_reproduces_the_uninterrupted_run_bitwise(tiny):
    ref = tiny("ref")
    train(ref)
    part = tiny("part", **{"train.stop_step": 7})
    last = train(part)
    assert (
        last["step"] == 7 and load_checkpoint(Path(part.log.out_dir) / CHECKPOINT_NAME)["step"] == 7
    )
    train(tiny("part"))  # resume="auto": continues from step 7
    same_run(Path(ref.log.out_dir), Path(part.log.out_dir))


KILLER = """
import json, pathlib, sys, time
import ntk.lm.checkpoint as checkpoint
from ntk.lm.config import build_config
from ntk.lm.train import train

config, mark = json.loads(sys.argv[1]), pathlib.Path(sys.argv[2])
real, calls = checkpoint._write, [0]

def write(file, data):
    calls[0] += 1
    if calls[0] == 3:  # the third checkpoint (step 15): half of it on disk, then stall
        file.write(data[: len(data) // 2])
        file.flush()
        mark.touch()
        time.sleep(600)
    real(file, data)

checkpoint._write = write
train(build_config(config))
"""


def test_sigkill_during_a_checkpoint_write_then_resume_is_bitwise(tiny, tmp_path):
    """Killed while writing step 15's checkpoint: step 10's survives, the resumed run is exact."""
    ref = tiny("ref")
    train(ref)
    config = tiny("killed")
    out, mark = Path(config.log.out_dir), tmp_path / "writing"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLER, json.dumps(config.to_dict()), str(mark)], env=python_env()
    )
    try:
        deadline = time.monotonic() + 240
        while not mark.exists():
            assert child.poll() is None, "the training process ended before the third checkpoint"
            assert time.monotonic() < deadline, "no checkpoint write within 240 s"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    torn = out / f".{CHECKPOINT_NAME}.tmp"
    assert torn.is_file()  # the interrupted write
    assert load_checkpoint(out / CHECKPOINT_NAME)["step"] == 10  # the last complete one
    assert [r["step"] for r in rows(out)][-1] == "15"  # steps 11-15 were logged, then lost
    train(config)
    assert not torn.exists()
    same_run(Path(ref.log.out_dir), out)  # steps 11-15 redone: the CSV holds them once


READER = """
import json, sys
import torch
from ntk.lm.checkpoint import load_model
torch.set_num_threads(1)
model, param, state = load_model(sys.argv[1])
x = torch.arange(32).remainder(model.config.vocab_size).view(2, 16)
print(json.dumps({
    "multipliers": {n: m.multiplier for n, m in model.named_modules() if hasattr(m, "multiplier")},
    "scales": {n: m.softmax_scale for n, m in model.named_modules() if hasattr(m, "softmax_scale")},
    "lrs": {g["name"]: g["lr"] for g in param.param_groups},
    "logits": model(x).double().sum().item(),
}))
"""


def test_width_information_survives_loading_in_a_fresh_process(tiny):
    """muP's multipliers, logit scales and per-layer lrs are plain floats, not in state_dict."""
    config = tiny("meta", **{"model.n_embd": 64, "train.stop_step": 2})
    train(config)
    path = Path(config.log.out_dir) / CHECKPOINT_NAME
    out = subprocess.run(
        [sys.executable, "-c", READER, str(path)],
        env=python_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    fresh = json.loads(out.stdout)
    meta = load_checkpoint(path)["metadata"]
    # width 64 over base 16 (Everett et al.'s muP): embedding x 4^(1/2), readout x 4^(-1/2)
    assert fresh["multipliers"]["wte"] == pytest.approx(2.0)
    assert fresh["multipliers"]["lm_head"] == pytest.approx(0.5)
    assert fresh["multipliers"] == pytest.approx(meta["multipliers"], rel=1e-15)
    assert fresh["scales"] == pytest.approx(meta["softmax_scales"], rel=1e-15)
    assert fresh["scales"]["blocks.0.attn"] == pytest.approx(8**0.5 / 32)  # sqrt(d0) / d
    assert fresh["lrs"]["blocks.0.attn.q"] == pytest.approx(1e-2 * 16 / 64)  # hidden: 1/m
    model, _, _ = load_model(path)
    x = torch.arange(32).remainder(model.config.vocab_size).view(2, 16)
    assert fresh["logits"] == model(x).double().sum().item()  # same function, bit for bit


def test_a_checkpoint_whose_width_rules_changed_is_refused(tiny):
    config = tiny("rules", **{"model.n_embd": 64, "train.stop_step": 1})
    train(config)
    path = Path(config.log.out_dir) / CHECKPOINT_NAME
    state = load_checkpoint(path)
    del state["format"]
    state["metadata"]["multipliers"]["lm_head"] = 0.25  # as if saved under another base width
    save_checkpoint(path, state)
    with pytest.raises(ValueError, match="lm_head has multiplier 0.5, stored 0.25"):
        load_model(path)
    with pytest.raises(ValueError, match="lm_head has multiplier 0.5, stored 0.25"):
        train(tiny("rules", **{"model.n_embd": 64}))


def test_bad_input_is_named_and_nothing_is_overwritten(tiny, tmp_path):
    config = tiny("bad", **{"train.stop_step": 5})
    train(config)
    out = Path(config.log.out_dir)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def unchanged():
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    with pytest.raises(ValueError, match="model.n_embd is 64 in the config, 32 in the checkpoint"):
        train(tiny("bad", **{"model.n_embd": 64}))
    unchanged()
    with pytest.raises(
        FileExistsError, match="already holds a run and checkpoint.resume is 'never'"
    ):
        train(tiny("bad", **{"checkpoint.resume": "never"}))
    unchanged()
    with pytest.raises(FileNotFoundError, match="checkpoint 'missing.pt' does not exist"):
        train(tiny("bad", **{"checkpoint.resume": "missing.pt"}))
    unchanged()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(before[CHECKPOINT_NAME][:1000])  # a torn file
    with pytest.raises(ValueError, match="corrupt.pt' is corrupt or not a checkpoint"):
        train(tiny("bad", **{"checkpoint.resume": str(corrupt)}))
    unchanged()
    short = tmp_path / "short.txt"
    short.write_text("abc " * 30)
    with pytest.raises(ValueError, match="too short for block_size 16"):
        train(tiny("short", **{"data.path": str(short)}))
    assert not (tmp_path / "short").exists()
