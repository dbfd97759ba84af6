"""The training loop: progressive phases at constant tokens, EMA evaluation, the CLI, DDP."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import ntk.lm.train as lm_train
from ntk.lm.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME, load_checkpoint, load_model
from ntk.lm.step import evaluate
from ntk.lm.train import Processes, evaluate_all, main, one_step, setup, train, validation_set
from ntk.lm.train import sweep_cell as lr_sweep_cell

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parents[2]
PROGRESSIVE = {"train.schedule": "4:1280,8:2560,16:inf"}  # phases start at steps 0, 5, 10


def rows(out_dir) -> list[dict[str, str]]:
    with open(Path(out_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def column(out_dir, key: str) -> list[float]:
    return [float(r[key]) for r in rows(out_dir) if r[key]]


def test_progressive_phases_switch_hard_at_constant_tokens(tiny, monkeypatch):
    shapes = []
    real = lm_train.train_step

    def recording(model, optimizer, batch, **kw):
        shapes.append(tuple(batch[0].shape))
        return real(model, optimizer, batch, **kw)

    monkeypatch.setattr(lm_train, "train_step", recording)
    config = tiny("prog", **PROGRESSIVE)
    train(config)
    assert shapes == [(64, 4)] * 5 + [(32, 8)] * 5 + [(16, 16)] * 10  # B_k = 256 / T_k
    log = rows(config.log.out_dir)
    assert all(int(r["batch_size"]) * int(r["block_size"]) == 256 for r in log)
    assert [int(r["tokens"]) for r in log] == [256 * k for k in range(1, 21)]
    assert [int(r["phase"]) for r in log] == [0] * 5 + [1] * 5 + [2] * 10
    # validation at the current length and at the longest one, recomputed from the checkpoint
    model, _, state = load_model(Path(config.log.out_dir) / CHECKPOINT_NAME)
    assert state["phase"] == 2
    run = setup(config, Processes())
    final = log[-1]
    assert float(final["val_loss"]) == evaluate(model, validation_set(run, 16))
    assert final["val_loss"] == final["val_loss_max"]  # the last phase is the longest
    at_10 = log[9]  # evaluated at the end of phase 1 (block size 8)
    assert at_10["val_loss"] != at_10["val_loss_max"]


def test_resume_inside_a_progressive_schedule_is_bitwise(tiny):
    ref = tiny("ref", **PROGRESSIVE)
    train(ref)
    part = tiny("part", **PROGRESSIVE, **{"train.stop_step": 5})  # the first step of phase 1
    train(part)
    assert load_checkpoint(Path(part.log.out_dir) / CHECKPOINT_NAME)["phase"] == 1
    train(tiny("part", **PROGRESSIVE))
    for key in ("loss", "val_loss", "val_loss_max", "ema_val_loss"):
        assert [r[key] for r in rows(ref.log.out_dir)] == [r[key] for r in rows(part.log.out_dir)]


def test_ema_evaluation_leaves_the_training_weights_untouched(tiny):
    config = tiny("ema")
    run = setup(config, Processes())
    for _ in range(6):
        one_step(run, run.model, phase=0)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    metrics = evaluate_all(run, phase=0)
    for name, tensor in run.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # bit for bit
    averaged = run.ema.copy_to(setup(config, Processes()).model)
    assert metrics["ema_val_loss"] == evaluate(averaged, validation_set(run, 16))
    assert metrics["ema_val_loss"] != metrics["val_loss"]
    # the recursion: theta_avg = beta theta_avg + (1 - beta) theta, from the initial weights
    init = setup(config, Processes())
    run2 = setup(config, Processes())
    expected = {k: p.detach().clone() for k, p in init.model.named_parameters()}
    for _ in range(3):
        one_step(run2, run2.model, phase=0)
        for k, p in run2.model.named_parameters():
            expected[k] = 0.8 * expected[k] + 0.2 * p.detach()
    for k, avg in run2.ema.average.items():
        torch.testing.assert_close(avg, expected[k], rtol=1e-6, atol=1e-7)


def test_batches_must_split_over_the_processes(tiny):
    config = tiny("split", **PROGRESSIVE)  # batches 64, 32, 16
    with pytest.raises(
        ValueError, match=r"phase 0 \(64 sequences of 4\) does not split evenly over 3"
    ):
        setup(config, Processes(rank=0, world=3))


def test_command_line_trains_a_config_and_plots_it(tiny, tmp_path, capsys):
    config = tiny("cli")
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    out = tmp_path / "cli_out"
    assert main(["--config", str(path), f"log.out_dir={out}", "train.tokens=2560"]) == 0
    assert "step 10: loss" in capsys.readouterr().out
    assert len(rows(out)) == 10
    assert main(["--plot", str(out)]) == 0
    assert (out / "metrics.png").stat().st_size > 0
    with pytest.raises(ValueError, match="unknown key train.token "):
        main(["--config", str(path), "train.token=10"])


def torchrun(config_path: Path, *overrides: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "ntk.lm.train", "--config", str(config_path), *overrides]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_gloo_processes_reproduce_one_process_and_resume_on_one(tiny, tmp_path):
    """Batch B on one process = B/2 on each of two (DDP averages gradients), to 1e-5."""
    ref = tiny("ref", **PROGRESSIVE)
    train(ref)
    config = tiny("ddp", **PROGRESSIVE, **{"checkpoint.every": 10, "checkpoint.keep": True})
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    out = Path(config.log.out_dir)
    torchrun(path)
    names = [CHECKPOINT_NAME, PREVIOUS_NAME, "checkpoint_000010.pt", "checkpoint_000020.pt"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*names, "diagnostics.csv", "metrics.csv"]
    )
    assert load_checkpoint(out / CHECKPOINT_NAME)["world_size"] == 2
    resumed = str(out / "checkpoint_000010.pt")
    one = tiny("one", **PROGRESSIVE, **{"checkpoint.resume": resumed})
    train(one)  # one process resumes two processes' checkpoint
    assert [int(r["step"]) for r in rows(out)] == list(range(1, 21))  # rank 0 logs, once
    assert [int(r["step"]) for r in rows(one.log.out_dir)] == list(range(11, 21))
    reference = {r["step"]: r for r in rows(ref.log.out_dir)}
    for run in (out, one.log.out_dir):
        for key in ("loss", "val_loss", "val_loss_max", "ema_val_loss_max"):
            pairs = [(float(r[key]), float(reference[r["step"]][key])) for r in rows(run) if r[key]]
            assert pairs and max(abs(a - b) for a, b in pairs) < 1e-5, key
    # muP's per-layer learning rates, as the optimizer held them under DDP
    ddp_groups = load_checkpoint(out / CHECKPOINT_NAME)["optimizer"]["param_groups"]
    ref_groups = load_checkpoint(Path(ref.log.out_dir) / CHECKPOINT_NAME)["optimizer"][
        "param_groups"
    ]
    lrs = {g["name"]: g["lr"] for g in ddp_groups}
    assert lrs == {g["name"]: g["lr"] for g in ref_groups}
    assert lrs["blocks.0.attn.q"] == pytest.approx(lrs["rest"] * 16 / 32)  # hidden: lr / m


def test_sweep_cells_run_under_lr_sweep_and_are_not_trained_twice(tiny, tmp_path):
    """sweep_cell as lr_sweep's train_fn: one run per cell, its final val_loss_max; 'sp' is
    one global learning rate; a finished cell asked again returns the same loss untrained."""
    from functools import partial

    from ntk.scaling.sweep import lr_sweep

    config = tiny("sweep", **{"train.tokens": 5 * 256, "train.eval_every": 0})
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    cell = partial(lr_sweep_cell, path)
    grid = dict(log2_lrs=[-7], widths=[16, 32], parametrizations=["sp", "mup"], progress=False)
    df = lr_sweep(cell, **grid, cache=tmp_path / "lm.sqlite").set_index(
        ["parametrization", "width"]
    )
    for (name, width), loss in df["loss"].items():
        out = Path(config.log.out_dir) / name / f"n_embd={width},lr=0.0078125,seed=0"
        assert loss == float(rows(out)[-1]["val_loss_max"])
        groups = load_checkpoint(out / CHECKPOINT_NAME)["optimizer"]["param_groups"]
        lrs = {g["lr"] for g in groups}  # after the schedule's decay: count, not values
        assert (len(lrs) == 1) == (name == "sp" or width == 16), (name, width, lrs)
    again = cell(parametrization="mup", width=32, lr=2**-7, seed=0)
    assert again == df.loc[("mup", 32), "loss"]
    assert len(rows(Path(config.log.out_dir) / "mup" / "n_embd=32,lr=0.0078125,seed=0")) == 5


def test_adamw_decay_per_step_of_every_hidden_matrix_is_the_same_at_every_width(tiny):
    """muP's weight decay through the YAML trainer: lr_g * wd_g = lr * wd in every matrix group.

    AdamW shrinks p by the factor 1 - lr_g wd_g per step. With zero gradients Adam's update is
    exactly 0, so one optimizer step of `setup`'s optimizer is the decay alone; under plain
    decay (wd_g = wd) a hidden matrix would decay by lr (64 / n) wd, 8x less at n = 512."""
    lr, wd = 1e-2, 0.5
    decays = {}
    for width in (64, 128, 256, 512):
        overrides = {
            "model.n_embd": width,
            "parametrization.base_width": 64,
            "optim.lr": lr,
            "optim.weight_decay": wd,
            "optim.warmup_tokens": 0,
            "optim.decay": "constant",
        }
        run = setup(tiny(f"wd{width}", **overrides), Processes())
        hidden = {s.name: s.weight for s in run.param.layers if s.role == "hidden"}
        assert len(hidden) == 6  # q, k, v, o, up, down of the one block
        before = {n: w.detach().clone() for n, w in hidden.items()}
        for q in run.model.parameters():
            q.grad = torch.zeros_like(q)
        run.optimizer.step()
        for name, w in hidden.items():
            nonzero = before[name] != 0
            factor = w.detach()[nonzero] / before[name][nonzero]
            assert (factor.max() - factor.min()).item() < 1e-6  # one factor per matrix
            decays[width, name] = round(1 - factor.mean().item(), 7)
    by_width = {n: sorted({d for (w, _), d in decays.items() if w == n}) for n in (64, 512)}
    assert all(d == pytest.approx(lr * wd, rel=1e-4) for d in decays.values()), by_width
