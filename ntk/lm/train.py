"""Train the GPT from a YAML config, on one process or many: `python -m ntk.lm.train`.

    python -m ntk.lm.train --config configs/smoke.yaml [key=value ...]
    torchrun --standalone --nproc_per_node=2 -m ntk.lm.train --config configs/smoke.yaml
    python -m ntk.lm.train --plot runs/smoke          # figures of a run from its CSV
    python -m ntk.lm.train --plot runs/mup_width_sweep  # a sweep's runs overlaid

One step at a constant S = train.tokens_per_step tokens: the progressive schedule
(`ntk.lm.progressive`) gives the phase's block size T and global batch B = S / T; the data
sampler draws the global batch from one generator, and process r of W takes rows
[r B / W, (r + 1) B / W). DistributedDataParallel averages the gradients, so W processes
compute the update of one process with the whole batch (the mean loss of equal shares is the
mean loss), whatever W is. That is also why a checkpoint resumes with any number of processes:
it stores the global sampler, not a per-process one. The same command runs on GPUs (backend
nccl instead of gloo, one GPU per process, chosen by torchrun's LOCAL_RANK). With
train.parallel=fsdp the weights are sharded instead of replicated (`ntk.lm.distributed`);
train.compile, train.autocast and train.device are `ntk.lm.runtime`'s.

After every optimizer step the learning-rate scheduler steps and the EMA is updated
(`ntk.training.EMA`); every train.eval_every steps the model is evaluated at the current and
at the longest block size, with its own weights and with the EMA's swapped in; every
checkpoint.every steps process 0 writes a checkpoint (`ntk.lm.checkpoint`).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ntk.errors import (
    ArgumentParser,
    MissingPackage,
    TrainingDivergedError,
    run_cli,
    user_input,
)
from ntk.lm import distributed, runtime
from ntk.lm.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    check_metadata,
    check_vocabulary,
    load_checkpoint,
    parametrization_metadata,
    rng_state,
    save_checkpoint,
    seed_all,
    set_rng_state,
)
from ntk.lm.config import (
    RunConfig,
    build_config,
    build_model,
    differences,
    from_dict,
    load_runs,
)
from ntk.lm.data import TextData, load_corpus, sample_batch
from ntk.lm.describe import check_budget, config_keys, finished_message, run_summary
from ntk.lm.eval import eval_windows
from ntk.lm.parametrize import optimizer_groups
from ntk.lm.plots import plot_directory
from ntk.lm.progressive import ProgressiveSchedule
from ntk.lm.run_log import (
    METRICS,
    RunLogger,
    Throughput,
    diagnostics,
    read_metrics,
    wandb_available,
)
from ntk.lm.runs import stored_tokenizer
from ntk.lm.step import evaluate, train_step
from ntk.lm.tokenizers import Tokenizer, UnknownTokenError
from ntk.scaling.muon import build_optimizer
from ntk.scaling.parametrization import Parametrization
from ntk.scaling.spectral import SpectralMonitor
from ntk.training import EMA


class LRSchedule:
    """Learning-rate factor of step s: linear warmup to 1, then constant, cosine or linear
    decay to min_ratio at the last step. An object (not a closure) so that LambdaLR stores its
    fields in the checkpoint."""

    def __init__(self, warmup: int, total: int, decay: str, min_ratio: float) -> None:
        self.warmup, self.total, self.decay, self.min_ratio = warmup, total, decay, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if self.decay == "cosine" else 1 - progress
        return self.min_ratio + (1 - self.min_ratio) * shape


@dataclass
class Processes:
    """This process's place: rank r of W, and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def start_processes(device: str) -> Processes:
    """Join torchrun's process group (gloo on CPU, nccl on CUDA) when WORLD_SIZE > 1."""
    dev = runtime.resolve_device(device)  # "auto": CUDA if there is one; GPU LOCAL_RANK
    use_cuda = dev.type == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if use_cuda:
        torch.cuda.set_device(dev)
    if world == 1:
        return Processes(device=dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), dev)


@dataclass
class Run:
    """Everything a training step touches (`setup` builds it, `resume` fills it in)."""

    config: RunConfig
    procs: Processes
    data: TextData
    model: nn.Module
    param: Parametrization
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: EMA | None
    generator: torch.Generator
    schedule: ProgressiveSchedule
    monitor: SpectralMonitor | None = None
    step: int = 0
    timer: Throughput = field(default_factory=Throughput)
    eval_sets: dict[int, list] = field(default_factory=dict)

    @property
    def out_dir(self) -> Path:
        return Path(self.config.log.out_dir)


@user_input()  # the config, corpus and checkpoint are the user's: errors there are input errors
def setup(config: RunConfig, procs: Processes, tokenizer: Tokenizer | None = None) -> Run:
    """Data, model, optimizer, schedules, EMA and monitors of a fresh run (seeded); the text
    is encoded by `tokenizer` (a resumed run's own) or by one built from it."""
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    seed_all(config.train.seed)
    schedule = config.schedule
    for phase in range(len(schedule.phases)):
        if schedule.batch_size(phase) % procs.world:
            raise ValueError(
                f"train.tokens_per_step={config.train.tokens_per_step}: the batch of phase "
                f"{phase} ({schedule.batch_size(phase)} sequences of {schedule.block_size(phase)}) "
                f"does not split evenly over {procs.world} processes"
            )
    data = _corpus(config, tokenizer)
    model, param, groups = build_model(config, data.vocab_size)
    model.to(procs.device)
    t, o = config.train, config.optim
    distributed.check_supported(t.parallel, procs.world, config.ema.enabled, config.log.diag_every)
    distributed.shard(model, t.parallel, procs.world)
    if distributed.is_sharded(model):  # new parameters: the recipe's groups must point at them
        groups = optimizer_groups(param, o.weight_decay)
    runtime.compile_model(model, t.compile)
    # AdamW, or Muon + AdamW (optim.name=muon): one optimizer object, one state_dict
    optimizer = build_optimizer(groups, betas=(o.beta1, o.beta2), eps=o.eps, momentum=o.momentum)
    lr = LRSchedule(config.warmup_steps, config.total_steps, o.decay, o.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr)
    ema = EMA(model, decay=config.ema.beta) if config.ema.enabled else None
    monitor = None
    if config.log.diag_every and procs.main:  # before any resume: W0 is the initialization
        monitor = SpectralMonitor(model, every=config.log.diag_every, seed=config.train.seed)
    generator = torch.Generator().manual_seed(config.train.seed)
    return Run(
        config, procs, data, model, param, optimizer, scheduler, ema, generator, schedule, monitor
    )


def _corpus(config: RunConfig, tokenizer: Tokenizer | None = None) -> TextData:
    """The run's text, encoded by `tokenizer` or by one built from it as `data.*` says."""
    d = config.data
    return load_corpus(
        d.path,
        block_size=config.block_size,
        val_fraction=d.val_fraction,
        level=d.tokenizer,
        vocab_size=d.vocab_size,
        tokenizer=tokenizer,
    )


def _setup_resumed(config: RunConfig, procs: Processes, path: Path) -> Run:
    """`setup` with the tokenizer stored in the checkpoint at `path`; a corpus it cannot encode
    any more is reported as changed since the checkpoint, with both vocabulary sizes."""
    tokenizer = stored_tokenizer(path)
    try:
        return setup(config, procs, tokenizer)
    except UnknownTokenError as err:
        fresh = _corpus(config).vocab_size
        raise CheckpointError(
            f"the vocabulary changed since checkpoint {str(path)!r} was written ({err}): corpus "
            f"{config.data.path!r} now gives {fresh} tokens, the checkpoint was trained on "
            f"{tokenizer.vocab_size}; restore the corpus it was trained on, or start a new run "
            "(another log.out_dir)"
        ) from None


@user_input()
def checkpoint_path(config: RunConfig) -> Path | None:
    """The checkpoint to resume from (None: a fresh run); refuses to overwrite a finished one."""
    resume = config.checkpoint.resume
    own = Path(config.log.out_dir) / CHECKPOINT_NAME
    if resume == "auto":
        return own if own.is_file() else None
    if resume == "never":
        if own.is_file() or (own.parent / METRICS).is_file():
            raise FileExistsError(
                f"{str(own.parent)!r} already holds a run and checkpoint.resume is 'never': "
                "choose another log.out_dir, or resume=auto to continue it"
            )
        return None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint.resume: checkpoint {str(path)!r} does not exist")
    return path


@user_input()
def resume(run: Run, path: Path) -> None:
    """Load the checkpoint at `path` into `run`, after checking that it is this run's."""
    state = load_checkpoint(path, map_location=run.procs.device)
    check_vocabulary(state, run.data.vocab_size, str(path), run.data.source)
    # through the dataclasses: a key added since the checkpoint was written reads as its default
    diff = differences(from_dict(RunConfig, state["config"]).to_dict(), run.config.to_dict())
    if diff:
        raise ValueError(
            f"the config does not match checkpoint {str(path)!r}: " + "; ".join(diff[:5])
        )
    check_budget(state["config"]["train"]["tokens"], run.config.train.tokens, str(path))
    check_metadata(state["metadata"], parametrization_metadata(run.model, run.param), str(path))
    step = int(state["step"])
    if state["phase"] != run.schedule.phase_at(step):
        raise ValueError(f"checkpoint {str(path)!r}: phase {state['phase']} at step {step}")
    distributed.load_full_state(run.model, run.optimizer, state["model"], state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.ema is not None:
        run.ema.load_state_dict(state["ema"])
    set_rng_state(state["rng"], run.generator)
    if run.monitor is not None and state.get("monitor") is not None:
        run.monitor.load_state_dict(state["monitor"])
    run.step = step
    run.timer = Throughput(float(state.get("train_seconds", 0.0)))


def save(run: Run) -> None:
    """Process 0 writes the checkpoint; all wait for it."""
    model_state, optimizer_state = distributed.full_state(run.model, run.optimizer)  # all gather
    if run.procs.main:
        state = {
            "step": run.step,
            "tokens": run.step * run.schedule.tokens_per_step,
            "phase": run.schedule.phase_at(run.step),
            "config": run.config.to_dict(),
            "model": model_state,
            "optimizer": optimizer_state,
            "scheduler": run.scheduler.state_dict(),
            "ema": None if run.ema is None else run.ema.state_dict(),
            "rng": rng_state(run.generator),
            "monitor": None if run.monitor is None else run.monitor.state_dict(),
            "metadata": parametrization_metadata(run.model, run.param),
            "world_size": run.procs.world,
            "train_seconds": run.timer.elapsed,
            "tokenizer": run.data.tokenizer.state(),
        }
        run.out_dir.mkdir(parents=True, exist_ok=True)
        keep = (
            (run.out_dir / f"checkpoint_{run.step:06d}.pt",) if run.config.checkpoint.keep else ()
        )
        save_checkpoint(run.out_dir / CHECKPOINT_NAME, state, copies=keep)
    run.procs.barrier()


# ---- evaluation ---------------------------------------------------------------------------------
def validation_set(run: Run, block_size: int) -> list:
    """Fixed windows of the validation text: data.eval_tokens tokens in batches of at most
    the training batch (cached per block size)."""
    if block_size not in run.eval_sets:
        run.eval_sets[block_size] = eval_windows(
            run.data.val, block_size, run.config.data.eval_tokens, run.schedule.tokens_per_step
        )
    return run.eval_sets[block_size]


def validation_loss(run: Run, block_size: int) -> float:
    """Mean validation loss, the batches shared out over the processes."""
    batches = validation_set(run, block_size)
    sharded = distributed.is_sharded(run.model)  # FSDP: every process runs every forward
    if not sharded:
        batches = batches[run.procs.rank :: run.procs.world]
    dev = run.procs.device
    batches = [runtime.to_device(batch, dev) for batch in batches]
    tokens = sum(y.numel() for _, y in batches)
    autocast = run.config.train.autocast
    total = evaluate(run.model, batches, autocast) * tokens if batches else 0.0
    if run.procs.world == 1 or sharded:
        return total / tokens
    sums = torch.tensor([total, float(tokens)], dtype=torch.float64, device=dev)
    dist.all_reduce(sums)
    return float(sums[0] / sums[1])


def evaluate_all(run: Run, phase: int) -> dict[str, float]:
    """val_loss, val_loss_max (and ema_*) at the current and at the longest block size."""
    lengths = {"val_loss": run.schedule.block_size(phase), "val_loss_max": run.config.block_size}
    out = {k: validation_loss(run, T) for k, T in lengths.items()}
    if run.ema is not None:
        with run.ema.swapped(run.model):
            out.update({f"ema_{k}": validation_loss(run, T) for k, T in lengths.items()})
    return out


# ---- the loop -----------------------------------------------------------------------------------
def one_step(run: Run, ddp_model: nn.Module, phase: int) -> dict[str, Any]:
    """Sample the global batch, train on this process's share; the metrics row."""
    T, B = run.schedule.block_size(phase), run.schedule.batch_size(phase)
    share = B // run.procs.world
    rows = slice(run.procs.rank * share, (run.procs.rank + 1) * share)
    lr = run.config.optim.lr * run.scheduler.lr_lambdas[0](run.step)
    if (window := run.config.window_at(run.step)) is not None:
        run.model.set_window(window)  # the speedrun's growing attention window (from the step)
    run.timer.start()
    x, y = sample_batch(run.data.train, B, T, run.generator)
    batch = runtime.to_device((x[rows], y[rows]), run.procs.device)
    loss = train_step(
        ddp_model,
        run.optimizer,
        batch,
        step=run.step,
        max_grad_norm=run.config.optim.max_grad_norm,
        autocast=run.config.train.autocast,
    )
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update(run.model)
    speed = run.timer.stop(run.schedule.tokens_per_step)
    run.step += 1
    return dict(
        step=run.step,
        tokens=run.step * run.schedule.tokens_per_step,
        phase=phase,
        block_size=T,
        batch_size=B,
        lr=lr,
        loss=loss,
        tokens_per_s=speed,
        time_s=run.timer.elapsed,
    )


def loop(run: Run, logger: RunLogger) -> dict[str, Any]:
    """Train from run.step to the end (or train.stop_step); returns the last row."""
    cfg = run.config
    total = cfg.total_steps
    stop = min(total, cfg.train.stop_step or total)
    ddp_model = distributed.step_module(
        run.model, cfg.train.parallel, run.procs.device, run.procs.world
    )  # DDP starts from rank 0's weights; FSDP's shards were cut from identical ones
    row: dict[str, Any] = {}
    phase = run.schedule.phase_at(run.step)
    probe = None
    while run.step < stop:
        new_phase = run.schedule.phase_at(run.step)
        if new_phase != phase or run.step == 0:
            T, B = run.schedule.block_size(new_phase), run.schedule.batch_size(new_phase)
            logger.message(f"step {run.step}: phase {new_phase}, block size {T}, batch {B}")
        phase = new_phase
        row = one_step(run, ddp_model, phase)
        if (cfg.train.eval_every and run.step % cfg.train.eval_every == 0) or run.step == total:
            row.update(evaluate_all(run, phase))
        if run.monitor is not None and run.step % cfg.log.diag_every == 0:
            if probe is None:  # a fixed batch: 4 windows of the longest length
                probe = validation_set(run, cfg.block_size)[0][0][:4].to(run.procs.device)
            logger.log_diagnostics(run.step, diagnostics(run.model, probe, run.monitor, run.step))
        logger.log(row)
        every = cfg.checkpoint.every
        if (every and run.step % every == 0) or run.step == stop:
            save(run)
    return row


def train(config: RunConfig) -> dict[str, Any]:
    """Train one run (resuming its checkpoint if there is one); the last metrics row."""
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be an ntk.lm.config.RunConfig, got {type(config).__name__}")
    config.validate()
    if config.log.wandb and not wandb_available():
        raise MissingPackage(
            "log.wandb is true but the wandb package is not installed (pip install wandb), "
            "or set log.wandb=false"
        )
    procs = start_processes(config.train.device)
    path = checkpoint_path(config)
    run = setup(config, procs) if path is None else _setup_resumed(config, procs, path)
    if path is not None:
        resume(run, path)  # every check runs before anything is written
    logger = RunLogger(
        run.out_dir,
        total_steps=min(config.total_steps, config.train.stop_step or config.total_steps),
        start_step=run.step,
        progress=config.log.progress,
        tensorboard=config.log.tensorboard,
        wandb=config.log.wandb,
        wandb_project=config.log.wandb_project,
        config=config.to_dict(),
        enabled=procs.main,
    )
    try:
        logger.message(run_summary(run))
        if path is not None:
            logger.message(f"resumed from {path} at step {run.step}")
            if run.step >= config.total_steps:
                logger.message(finished_message(run.step, config.train.tokens))
        return loop(run, logger)
    finally:
        logger.close()


def sweep_cell(
    config: str | Path,
    overrides: list[str] = (),
    *,
    parametrization: str,
    width: int,
    lr: float,
    seed: int,
) -> float:
    """One cell of a learning-rate sweep (`ntk.scaling.sweep.lr_sweep`): train the run
    `config` (+ `overrides`) at this parametrization, width (model.n_embd), learning rate and
    seed, in log.out_dir/<parametrization>/n_embd=<width>,lr=<lr>,seed=<seed>, and return its
    final validation loss at the longest length (training weights); NaN if it diverged.

        lr_sweep(functools.partial(sweep_cell, "configs/mup_base.yaml"), log2_lrs=range(-10, -4),
                 widths=[64, 128, 256], parametrizations=["sp", "mup"], cache="lm.sqlite")

    "sp" is the SP of the muTransfer papers (Yang et al. 2022, arXiv:2203.03466): standard
    init and one global learning rate (parametrization.lr_rule "global"); every other name
    keeps the config's lr_rule (muP: the abc rule's per-layer learning rates).
    """
    (_, base), *more = load_runs(config, list(overrides))
    if more:
        raise ValueError(f"config {str(config)!r} describes a sweep; sweep_cell needs one run")
    data = base.to_dict()
    data["parametrization"]["name"] = parametrization
    if parametrization == "sp":
        data["parametrization"]["lr_rule"] = "global"
    data["model"]["n_embd"] = width
    data["optim"]["lr"] = lr
    data["train"]["seed"] = seed
    cell = f"n_embd={width},lr={lr:.6g},seed={seed}"
    data["log"]["out_dir"] = str(Path(base.log.out_dir) / parametrization / cell)
    try:
        train(build_config(data))  # a finished run is not trained again
    except TrainingDivergedError:
        return float("nan")
    return float(read_metrics(data["log"]["out_dir"])["val_loss_max"].dropna().iloc[-1])


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m ntk.lm.train",
        description=__doc__.split("\n\n")[0],
        epilog="config keys (in the YAML file or as key=value overrides):\n" + config_keys(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML run config (configs/*.yaml)")
    parser.add_argument(
        "--plot", metavar="DIR", help="plot a run (or overlay a sweep's runs) from CSV and exit"
    )
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. optim.lr=3e-3")
    args = parser.parse_args(argv)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        with user_input():
            figure = plot_directory(args.plot)  # one run, or a sweep's runs overlaid
        out = Path(args.plot) / "metrics.png"
        figure.savefig(out, dpi=120)
        print(f"wrote {out}")
        return 0
    if args.config is None:
        parser.error("--config is required (or --plot DIR)")
    with user_input():
        runs = load_runs(args.config, args.overrides)  # all validated before any trains
    completed = False
    try:
        for name, config in runs:
            if name:
                print(f"== run {name} -> {config.log.out_dir}", flush=True)
            last = train(config)
            if last and int(os.environ.get("RANK", "0")) == 0:
                summary = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if "loss" in k)
                print(f"step {last['step']}: {summary}", flush=True)
        completed = True
    finally:
        if dist.is_initialized():
            # after a good run every process meets here before gloo tears down (without it
            # its teardown can race and abort a process: SIGABRT, "terminate called without
            # an active exception"); after an error ranks may have failed differently, and a
            # barrier there could hang
            if completed:
                dist.barrier()
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    run_cli(main, prog="python -m ntk.lm.train")
