"""Learning-rate transfer on the GPT: one training run per (parametrization, width, lr, seed).

The claim (Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466): under muP the learning
rate that is best for a narrow proxy is (close to) best at every width, and at that learning
rate wider models are better; under SP, trained as usual with one global learning rate, the
optimum drifts to smaller learning rates as the width grows (with Adam, a hidden unit's n
inputs each move by about lr, so its change grows like n lr and the best lr like 1/n).

`train_run(parametrization, width, lr, seed, setup)` is the function `ntk.scaling.sweep.lr_sweep`
calls on every cell of the grid. It trains a GPT of n_embd = width on the default word-chain
corpus (`ntk.lm.data`, char or word tokens) with AdamW: `setup.steps` updates on random
windows, a linear warmup then a linear decay of the learning rate to 0, and returns the
validation loss in bits per token (inf if training diverged). "sp" is SP with ONE learning
rate for every parameter; "mup" is the engine's muP (`ntk.lm.parametrize`): zero query and
readout, hidden lr ~ 1/m, readout updates ~ 1/m, attention scale sqrt(d0)/d,
m = width / base_width. The two are the same model at width = base_width, up to the zero
inits.

Seeds fix the init and the training batches; the same seed draws the same batches at every
width and learning rate (common random numbers: differences between widths are not batch luck).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields

import pandas as pd
import torch

from ntk._checks import check_choice, check_nonnegative, check_positive, check_positive_int
from ntk.errors import TrainingDivergedError
from ntk.lm.data import LEVELS, TextData, eval_batches, load_corpus, sample_batch
from ntk.lm.model import GPT, GPTConfig
from ntk.lm.parametrize import gpt_recipe
from ntk.lm.step import evaluate, train_step
from ntk.registry import select
from ntk.scaling.muon import build_optimizer

PARAMETRIZATIONS = select("sp", "mup")  # sp: one global learning rate (module docstring)
BITS = 1 / math.log(2)  # nats -> bits


@dataclass(frozen=True)
class LMSetup:
    """Everything about a run except its parametrization, width, learning rate and seed.

    Attributes:
        level: "char" or "word" tokens of the default corpus (`ntk.lm.data.load_corpus`).
        n_layer, n_head: the GPT's depth and head count; the head count is fixed, so heads
            widen with n_embd (head_dim = n_embd / n_head) and muP's 1/d attention scale acts.
        block_size, batch_size: training windows of block_size tokens, batch_size of them
            per step.
        steps, warmup: AdamW updates; the learning rate rises linearly over `warmup` steps,
            then decays linearly to 0 at `steps`.
        base_width: the n_embd at which sp and mup coincide (the proxy's width).
        weight_decay: AdamW's decay at the base width (muP's rule: `optimizer_groups`).
        betas: AdamW's betas.
        val_batches, val_batch_size: the fixed validation set (`eval_batches`), evenly spaced
            windows of the validation text.
        model_options: further `GPTConfig` fields, as (name, value) pairs (e.g.
            (("moe_experts", 8), ("moe_top_k", 2)) for the mixture-of-experts GPT).
        autocast: "none" or "bf16" (bfloat16 forward, float32 weights and AdamW state:
            `ntk.lm.runtime.autocast`), in training and evaluation.
    """

    level: str = "char"
    n_layer: int = 2
    n_head: int = 4
    block_size: int = 32
    batch_size: int = 32
    steps: int = 100
    warmup: int = 10
    base_width: int = 32
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    val_batches: int = 4
    val_batch_size: int = 64
    model_options: tuple[tuple[str, object], ...] = ()
    autocast: str = "none"

    def __post_init__(self) -> None:
        check_choice("LMSetup.level", self.level, LEVELS)
        for name in ("n_layer", "n_head", "block_size", "batch_size", "steps", "base_width"):
            check_positive_int(f"LMSetup.{name}", getattr(self, name))
        check_positive_int("LMSetup.val_batches", self.val_batches)
        check_positive_int("LMSetup.val_batch_size", self.val_batch_size)
        check_positive_int("LMSetup.warmup", self.warmup, minimum=0)
        if self.warmup >= self.steps:
            raise ValueError(f"LMSetup.warmup ({self.warmup}) must be < steps ({self.steps})")
        check_nonnegative("LMSetup.weight_decay", self.weight_decay)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"LMSetup.betas must be two numbers in [0, 1), got {self.betas}")
        check_choice("LMSetup.autocast", self.autocast, ("none", "bf16"))
        own = {"vocab_size", "block_size", "n_layer", "n_embd", "n_head"}
        free = {f.name for f in fields(GPTConfig)} - own
        for item in self.model_options:
            if not (isinstance(item, tuple) and len(item) == 2 and item[0] in free):
                raise ValueError(
                    f"LMSetup.model_options: {item!r} is not a (name, value) pair of a "
                    f"GPTConfig field other than {sorted(own)}"
                )

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


def corpus(setup: LMSetup) -> TextData:
    """The default corpus at `setup.level`, split and encoded (made once per process)."""
    return _corpus(setup.level, setup.block_size)


@functools.cache
def _corpus(level: str, block_size: int) -> TextData:
    return load_corpus(block_size=block_size, level=level)


def build(
    parametrization: str, width: int, lr: float, seed: int, setup: LMSetup, **options
) -> tuple[GPT, torch.optim.Optimizer]:
    """A GPT of n_embd = `width`, initialized from `seed` and parametrized, and its AdamW
    (or Muon + AdamW with optimizer="muon", muon_rule, muon_lr). `options` go to `gpt_recipe`
    (the engine's, e.g. attention_scale="keep")."""
    check_choice("parametrization", parametrization, PARAMETRIZATIONS)
    check_positive_int("width", width)
    check_positive("lr", lr)
    config = GPTConfig(
        vocab_size=corpus(setup).vocab_size,
        block_size=setup.block_size,
        n_layer=setup.n_layer,
        n_embd=width,
        n_head=setup.n_head,
        **dict(setup.model_options),
    )
    rule = "global" if parametrization == "sp" else "abc"  # sp: one learning rate
    model, _, groups = gpt_recipe(
        config,
        parametrization,
        base_width=setup.base_width,
        lr=lr,
        lr_rule=rule,
        weight_decay=setup.weight_decay,
        seed=seed,
        **options,
    )
    return model, build_optimizer(groups, betas=setup.betas)


def schedule(step: int, setup: LMSetup) -> float:
    """The learning-rate factor at `step`: linear warmup, then linear decay to 0."""
    if step < setup.warmup:
        return (step + 1) / setup.warmup
    return (setup.steps - step) / (setup.steps - setup.warmup)


def train_run(
    parametrization: str,
    width: int,
    lr: float,
    seed: int,
    setup: LMSetup | None = None,
    **options,
) -> float:
    """Validation loss (bits per token) after training; inf if the loss became NaN/inf.
    `options` go to `build` (e.g. optimizer="muon")."""
    setup = LMSetup() if setup is None else setup
    data = corpus(setup)
    model, optimizer = build(parametrization, width, lr, seed, setup, **options)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s, setup))
    generator = torch.Generator().manual_seed(seed)
    try:
        for step in range(setup.steps):
            batch = sample_batch(data.train, setup.batch_size, setup.block_size, generator)
            train_step(model, optimizer, batch, step=step, autocast=setup.autocast)
            scheduler.step()
    except TrainingDivergedError:
        return math.inf
    val = eval_batches(data.val, setup.val_batch_size, setup.block_size, setup.val_batches)
    loss = evaluate(model, val, setup.autocast) * BITS
    return loss if math.isfinite(loss) else math.inf


def wider_is_better(summary: pd.DataFrame, log2_lr: float) -> pd.DataFrame:
    """Seed mean and standard error of the muP loss at `log2_lr`, per width (rows by width)."""
    rows = summary[(summary["parametrization"] == "mup") & (summary["log2_lr"] == log2_lr)]
    if rows.empty:
        raise ValueError(f"no muP rows at log2_lr={log2_lr} in the summary")
    return rows.set_index("width")[["mean", "stderr"]].sort_index()
