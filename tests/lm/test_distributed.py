"""FSDP2 with muP intact: 2 sharded processes train as 1 process does, and checkpoints cross.

The 1-process run and the FSDP2 runs (gloo, 2 CPU processes) start from the same muP GPT:
zero query and readout, output multipliers, muP attention scale, per-layer AdamW learning
rates and muP weight decay. After 20 steps on the same global batches (each process takes
half the rows), every parameter agrees within 1e-5. The runs are in float64: the two runs sum
gradients in different orders, and in float32 Adam's normalization g / sqrt(v) amplifies
that rounding where gradients nearly cancel (the float32 runs differed by 1.5e-6 after two
steps), which says nothing about sharding. A checkpoint written at step 10 by either
resumes in the other and reaches the same step-20 weights.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from ntk.lm.distributed import full_state, load_full_state, shard, step_module
from ntk.lm.model import GPT, GPTConfig
from ntk.lm.parametrize import optimizer_groups, parametrize
from ntk.lm.run_log import read_metrics
from ntk.lm.step import train_step
from ntk.scaling import ScaledModule

pytestmark = pytest.mark.usefixtures("single_thread")

STEPS, HALF, BATCH, T, VOCAB = 20, 10, 8, 16, 13


def build(world: int, parallel: str = "fsdp"):
    """The muP GPT (sharded over `world` processes when world > 1 and parallel is "fsdp")
    and its AdamW."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=T, n_layer=2, n_embd=32, n_head=2))
    param = parametrize(model, "mup", base_width=16, lr=1e-2)
    model.double()  # the property is exact math: float32 rounding, amplified by Adam, is not
    shard(model, parallel, world)  # before the optimizer: the sharded parameters are new objects
    optimizer = torch.optim.AdamW(optimizer_groups(param, weight_decay=0.1))
    return model, optimizer


def batches():
    """The global batches of steps 0 .. STEPS-1, the same in every process."""
    g = torch.Generator().manual_seed(1)
    draw = lambda: torch.randint(0, VOCAB, (BATCH, T), generator=g)  # noqa: E731
    return [(draw(), draw()) for _ in range(STEPS)]


def train(model, optimizer, start: int, stop: int, rank: int = 0, world: int = 1, save=None):
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    for step, (x, y) in enumerate(batches()[start:stop], start=start):
        train_step(model, optimizer, (x[rows], y[rows]), step=step)
        if save is not None and step + 1 == HALF:
            state = full_state(model, optimizer)  # every process gathers
            if rank == 0:
                torch.save(state, save)


def _fsdp_worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rdzv", rank=rank, world_size=world)
    try:
        model, optimizer = build(world)
        model_state, _ = full_state(model, optimizer)
        if rank == 0:
            torch.save(
                dict(
                    init=model_state,
                    wrapped=sum(isinstance(m, ScaledModule) for m in model.modules()),
                    scales=[b.attn.softmax_scale for b in model.blocks],
                    lrs=[g["lr"] for g in optimizer.param_groups],
                    sharded=[type(p).__name__ for p in model.parameters()],
                ),
                f"{tmp}/fsdp_init.pt",
            )
        train(model, optimizer, 0, STEPS, rank, world, save=f"{tmp}/fsdp_half.pt")
        state = full_state(model, optimizer)
        if rank == 0:
            torch.save(state, f"{tmp}/fsdp_end.pt")
        # resume the 1-process checkpoint of step HALF, sharded, and train to the end
        model, optimizer = build(world)
        load_full_state(model, optimizer, *torch.load(f"{tmp}/one_half.pt", weights_only=False))
        train(model, optimizer, HALF, STEPS, rank, world)
        state = full_state(model, optimizer)
        if rank == 0:
            torch.save(state, f"{tmp}/fsdp_resumed_end.pt")
        # the same with DistributedDataParallel: replicated weights, averaged gradients
        model, optimizer = build(world, "ddp")
        train(
            step_module(model, "ddp", torch.device("cpu"), world), optimizer, 0, STEPS, rank, world
        )
        if rank == 0:
            torch.save(model.state_dict(), f"{tmp}/ddp_end.pt")
        with open(f"{tmp}/rank{rank}", "w") as f:
            f.write("done")
        dist.barrier()  # neither process tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def run_fsdp(tmp_path) -> None:
    import torch.multiprocessing as mp

    context = mp.start_processes(
        _fsdp_worker, args=(2, str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    processes = context.processes
    try:
        for process in processes:
            process.join(timeout=300)
        if any(process.is_alive() for process in processes):
            pytest.fail("the FSDP processes did not finish within 300 s")
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    done = [(tmp_path / f"rank{r}").exists() for r in (0, 1)]
    codes = [process.exitcode for process in processes]
    # gloo's teardown can abort a finished process (see test_step.py): outcomes come from files
    assert all(done), f"finished {done}, exit codes {codes}"


def assert_same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5, msg=f"{what}: {name}")


def test_fsdp2_and_ddp_with_mup_train_as_one_process_and_checkpoints_cross(tmp_path):
    # 1 process: the reference, with its checkpoint at step HALF
    model, optimizer = build(1)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    lrs = [g["lr"] for g in optimizer.param_groups]
    train(model, optimizer, 0, STEPS, save=tmp_path / "one_half.pt")
    end = model.state_dict()

    run_fsdp(tmp_path)

    fsdp = torch.load(tmp_path / "fsdp_init.pt", weights_only=False)
    assert set(fsdp["sharded"]) == {"DTensor"}  # every parameter really is sharded
    assert_same(fsdp["init"], init, "init")
    assert all(fsdp["init"][f"blocks.{i}.attn.q.module.weight"].abs().max() == 0 for i in (0, 1))
    assert fsdp["init"]["lm_head.module.weight"].abs().max() == 0  # zero readout
    assert fsdp["wrapped"] == sum(isinstance(m, ScaledModule) for m in model.modules()) > 0
    # muP's attention scale sqrt(d0)/d: head_dim 16 at n_embd 32, 8 at the base width 16
    assert fsdp["scales"] == pytest.approx([math.sqrt(8) / 16] * 2)
    assert fsdp["lrs"] == pytest.approx(lrs) and len(set(lrs)) > 1  # per-layer rates

    fsdp_end, fsdp_opt = torch.load(tmp_path / "fsdp_end.pt", weights_only=False)
    assert_same(fsdp_end, end, "FSDP2 after 20 steps vs 1 process")
    one_state = optimizer.state_dict()
    for i, s in one_state["state"].items():
        assert_same(fsdp_opt["state"][i], s, f"AdamW state of parameter {i}")

    ddp_end = torch.load(tmp_path / "ddp_end.pt", weights_only=False)
    assert_same(ddp_end, end, "DDP (2 processes) after 20 steps vs 1 process")
    # FSDP2 resumed from the 1-process checkpoint of step 10
    resumed, _ = torch.load(tmp_path / "fsdp_resumed_end.pt", weights_only=False)
    assert_same(resumed, end, "FSDP2 resumed from a 1-process checkpoint")
    # 1 process resumed from the FSDP2 checkpoint of step 10
    model, optimizer = build(1)
    load_full_state(model, optimizer, *torch.load(tmp_path / "fsdp_half.pt", weights_only=False))
    train(model, optimizer, HALF, STEPS)
    assert_same(model.state_dict(), end, "1 process resumed from an FSDP2 checkpoint")


def _train_cli(tmp_path, out: str, *extra: str, procs: int = 1) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[2]
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        if procs > 1
        else [sys.executable]
    )
    overrides = [
        "ema.enabled=false",
        "log.diag_every=0",
        "log.progress=false",
        "train.tokens=20480",
        "checkpoint.every=10",
        f"log.out_dir={tmp_path / out}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    command = [*launcher, "-m", "ntk.lm.train", "--config", str(root / "configs/smoke.yaml")]
    result = subprocess.run(
        [*command, *overrides, *extra], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_training_loop_under_fsdp_resumes_in_one_process(tmp_path):
    """python -m ntk.lm.train: 10 steps under torchrun FSDP2, the last 10 in one process, equal
    the 20 steps of one process (float32: the losses agree to rounding, not bitwise)."""
    _train_cli(tmp_path, "one")
    _train_cli(tmp_path, "split", "train.parallel=fsdp", "train.stop_step=10", procs=2)
    assert read_metrics(tmp_path / "split")["step"].max() == 10
    _train_cli(tmp_path, "split")  # resumes the FSDP2 checkpoint of step 10
    one, split = (read_metrics(tmp_path / name) for name in ("one", "split"))
    assert list(split["step"]) == list(one["step"]) == list(range(1, 21))
    np.testing.assert_allclose(split["loss"], one["loss"], rtol=1e-4)
    last = one["val_loss_max"].dropna().iloc[-1]
    assert split["val_loss_max"].dropna().iloc[-1] == pytest.approx(last, rel=1e-4)
