"""The configuration of a GPT training run: YAML files mapped onto dataclasses, checked early.

A run is described by one YAML file with the sections below (every key optional, defaults in
the dataclasses), plus `key=value` overrides on the command line (dotted keys, values read as
YAML): `python -m ntk.lm.train --config configs/smoke.yaml train.tokens=200K optim.lr=3e-3`.

    model:            GPT shape (GPTConfig without the vocabulary, read from the corpus)
    parametrization:  sp | ntk | mup | mfp through the abc engine, base width, lr rule
    optim:            AdamW (or Muon + AdamW) and its learning-rate schedule (in constant-token steps)
    data:             corpus file (default: the generated word chain), tokenizer, validation split
    train:            token budget, tokens per step, progressive schedule, seed, device
    ema:              exponential moving average of the weights
    log:              output directory, evaluation and diagnostics intervals, TensorBoard, W&B
    checkpoint:       interval and resume policy

Two top-level keys are not part of a run: `extends: other.yaml` (that file's keys first,
this file's on top, deep-merged) and `sweep: {dotted.key: [v1, v2, ...]}` (one run per point
of the grid, each in `log.out_dir/<key>=<value>`).

Every error names its key: an unknown key (with the known ones), a wrong type (no silent
coercion: `n_embd: 64.0` is refused; an int is accepted where a float is expected) and an
impossible value (a negative learning rate, a schedule that does not fit the tokens per
step). YAML 1.1 reads `1e-3` as a string; this loader reads it as the number it looks like.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ntk._checks import (
    check_bool,
    check_choice,
    check_fraction,
    check_nonnegative,
    check_parametrization,
    check_positive,
    check_positive_int,
)
from ntk.lm import speedrun
from ntk.lm.attention import check_window, window_at
from ntk.lm.model import GPTConfig
from ntk.lm.parametrize import GPTRecipe, gpt_recipe
from ntk.lm.progressive import ProgressiveSchedule, parse_schedule, parse_tokens
from ntk.lm.tokenizers import KINDS as TOKENIZERS
from ntk.registry import WIDTH_RULES
from ntk.scaling.abc_rules import LR_RULES
from ntk.scaling.muon import MUON_RULES

SPEEDRUN_KEYS = (*speedrun.OPTIONS, "attn_impl")  # the GPTConfig fields ModelSection repeats
TOKENS = {"tokens": True}  # field metadata: a token count, int or "2M"


@dataclass
class ModelSection:
    """The GPT's shape (`ntk.lm.model.GPTConfig`); block_size None = the longest phase."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int | None = 4
    head_dim: int | None = None
    block_size: int | None = None
    tie_embeddings: bool = False
    bias: bool = False
    rope_base: float = 10000.0
    # speedrun options (GPTConfig's, `ntk.lm.speedrun`), off by default
    mlp: str = "gelu"
    norm: str = "layernorm"
    qk_norm: bool = False
    rope_truncate: float = 0.0
    value_embeds: int = 0
    unet_skips: bool = False
    x0_mix: bool = False
    logit_softcap: float | None = None
    attn_window: int | None = None
    attn_impl: str = "auto"
    # the speedrun's growing window: attn_window_start at step 0 up to attn_window at the
    # end, in multiples of attn_window_start (`ntk.lm.attention.window_at`); None: constant
    attn_window_start: int | None = None


@dataclass
class ParametrizationSection:
    """How widths scale. `lr_rule` "abc": the rule's per-layer learning rates (muP: hidden
    lr ~ base_width / n); "global": one learning rate for every layer (c = 0), the SP of the
    muTransfer papers. base_width None = the model's own n_embd (every rule is plain SP there)."""

    name: str = "mup"
    base_width: int | None = None
    lr_rule: str = "abc"
    zero_query: bool = False
    zero_readout: bool = False
    std_prefactor: float = 1.0


@dataclass
class OptimSection:
    """AdamW at learning rate `lr` (at the base width), warmup then `decay` to min_lr_ratio.

    `name` "muon": the hidden matrices on torch.optim.Muon (update scale `muon_rule`:
    "spectral", "keller" or "moonshot", `ntk.scaling.muon`; learning rate `muon_lr` at the
    base width, None = `lr`; `momentum`), AdamW with `lr` on the rest."""

    lr: float = 3e-3
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    warmup_tokens: int = field(default=0, metadata={"tokens": True, "zero": True})
    decay: str = "cosine"
    min_lr_ratio: float = 0.1
    name: str = "adamw"
    muon_rule: str = "spectral"
    muon_lr: float | None = None
    momentum: float = 0.95


@dataclass
class DataSection:
    """Corpus (None: the generated word chain of `ntk.lm.corpus`), tokenizer (char, word or
    bpe, `ntk.lm.tokenizers`; vocab_size for bpe only, null: 512) and validation set size."""

    path: str | None = None
    tokenizer: str = "char"
    vocab_size: int | None = None
    val_fraction: float = 0.1
    eval_tokens: int = field(default=16384, metadata=TOKENS)


@dataclass
class TrainSection:
    """Token budget, tokens per step (constant), progressive schedule, seed and device."""

    tokens: int = field(default=1_000_000, metadata=TOKENS)
    tokens_per_step: int = field(default=4096, metadata=TOKENS)
    schedule: str | None = None
    seed: int = 0
    eval_every: int = 100
    stop_step: int | None = None
    device: str = "auto"
    threads: int | None = None
    compile: bool = False  # torch.compile the forward (ntk.lm.runtime)
    autocast: str = "none"  # "bf16": bfloat16 forward, float32 master weights
    parallel: str = "ddp"  # with several processes: "ddp" or "fsdp" (ntk.lm.distributed)


@dataclass
class EMASection:
    """theta_avg <- beta theta_avg + (1 - beta) theta after every step, when enabled."""

    enabled: bool = False
    beta: float = 0.99


@dataclass
class LogSection:
    """Where the run writes (metrics.csv always) and what else it records."""

    out_dir: str = "runs/run"
    progress: bool = True
    diag_every: int = 0
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "ntk-lm"


@dataclass
class CheckpointSection:
    """Checkpoint every `every` steps (0: only at the end), also kept as checkpoint_<step>.pt
    with `keep`; resume "auto" (this run's checkpoint if there is one), "never" or a path."""

    every: int = 0
    keep: bool = False
    resume: str = "auto"


@dataclass
class RunConfig:
    """One training run; `validate()` checks every value and their combinations."""

    model: ModelSection = field(default_factory=ModelSection)
    parametrization: ParametrizationSection = field(default_factory=ParametrizationSection)
    optim: OptimSection = field(default_factory=OptimSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    ema: EMASection = field(default_factory=EMASection)
    log: LogSection = field(default_factory=LogSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    @property
    def schedule(self) -> ProgressiveSchedule:
        """The progressive schedule (one phase at model.block_size without train.schedule)."""
        if self.train.schedule is None:
            return ProgressiveSchedule.constant(self.model.block_size, self.train.tokens_per_step)
        return ProgressiveSchedule(self.train.schedule, self.train.tokens_per_step)

    @property
    def block_size(self) -> int:
        """The longest sequence the model sees: model.block_size or the last phase's."""
        return self.model.block_size or self.schedule.max_block_size

    @property
    def total_steps(self) -> int:
        """ceil(train.tokens / train.tokens_per_step)."""
        return -(-self.train.tokens // self.train.tokens_per_step)

    def window_at(self, step: int) -> int | None:
        """The attention window at `step` under model.attn_window_start's schedule, else None."""
        m = self.model
        if m.attn_window_start is None:
            return None
        start = m.attn_window_start
        return window_at(step, self.total_steps, start, m.attn_window, multiple=start)

    @property
    def warmup_steps(self) -> int:
        return self.optim.warmup_tokens // self.train.tokens_per_step

    def validate(self) -> RunConfig:
        """Check every value (errors name the key); return self."""
        _validate_model(self.model)
        _validate_parametrization(self.parametrization, self.model)
        _validate_optim(self.optim)
        _validate_data(self.data)
        _validate_train(self.train, self.model)
        if self.optim.name == "muon" and self.train.parallel == "fsdp":
            raise ValueError(
                "optim.name=muon does not run under train.parallel=fsdp (FSDP shards the "
                "matrices Muon orthogonalizes whole): use one process or train.parallel=ddp"
            )
        check_fraction("ema.beta", self.ema.beta, allow_zero=True)
        check_positive_int("log.diag_every", self.log.diag_every, minimum=0)
        check_positive_int("checkpoint.every", self.checkpoint.every, minimum=0)
        if not self.checkpoint.resume:
            raise ValueError("checkpoint.resume must be 'auto', 'never' or a checkpoint path")
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"optim.warmup_tokens ({self.optim.warmup_tokens}) must be shorter than the run "
                f"(train.tokens = {self.train.tokens})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _validate_model(m: ModelSection) -> None:
    for key in ("n_layer", "n_embd"):
        check_positive_int(f"model.{key}", getattr(m, key))
    if (m.n_head is None) == (m.head_dim is None):
        raise ValueError(
            f"model: set exactly one of n_head and head_dim, got n_head={m.n_head}, "
            f"head_dim={m.head_dim}"
        )
    heads = "n_head" if m.n_head is not None else "head_dim"
    if m.n_embd % check_positive_int(f"model.{heads}", getattr(m, heads)):
        raise ValueError(f"model.n_embd ({m.n_embd}) must be a multiple of model.{heads}")
    if (m.head_dim or m.n_embd // m.n_head) % 2:
        raise ValueError(f"model: the head size must be even for rotary positions ({heads})")
    if m.block_size is not None:
        check_positive_int("model.block_size", m.block_size)
    if check_positive("model.rope_base", m.rope_base) <= 1:
        raise ValueError(f"model.rope_base must be > 1, got {m.rope_base}")
    speedrun.check_options("model.", m, m.n_layer, m.block_size)
    if m.attn_window_start is not None:
        if m.attn_window is None:
            raise ValueError("model.attn_window_start needs model.attn_window (the final window)")
        check_window("model.attn_window_start", m.attn_window_start, m.attn_window)


def _validate_parametrization(p: ParametrizationSection, m: ModelSection) -> None:
    p.name = check_parametrization("parametrization.name", p.name, WIDTH_RULES)
    check_choice("parametrization.lr_rule", p.lr_rule, LR_RULES)
    check_positive("parametrization.std_prefactor", p.std_prefactor)
    if p.base_width is not None:
        check_positive_int("parametrization.base_width", p.base_width)
        if m.n_head is not None and p.base_width % m.n_head:
            raise ValueError(
                f"parametrization.base_width ({p.base_width}) must be a multiple of model.n_head"
            )
        if m.head_dim is not None and p.base_width % m.head_dim:
            raise ValueError(
                f"parametrization.base_width ({p.base_width}) must be a multiple of model.head_dim"
            )


def _validate_optim(o: OptimSection) -> None:
    check_positive("optim.lr", o.lr)
    check_fraction("optim.beta1", o.beta1, allow_zero=True)
    check_fraction("optim.beta2", o.beta2, allow_zero=True)
    check_positive("optim.eps", o.eps)
    check_nonnegative("optim.weight_decay", o.weight_decay)
    if o.max_grad_norm is not None:
        check_positive("optim.max_grad_norm", o.max_grad_norm)
    check_choice("optim.decay", o.decay, ("constant", "cosine", "linear"))
    check_nonnegative("optim.min_lr_ratio", o.min_lr_ratio)
    if o.min_lr_ratio > 1:
        raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
    check_choice("optim.name", o.name, ("adamw", "muon"))
    check_choice("optim.muon_rule", o.muon_rule, MUON_RULES)
    if o.muon_lr is not None:
        check_positive("optim.muon_lr", o.muon_lr)
    check_fraction("optim.momentum", o.momentum, allow_zero=True)


def _validate_data(d: DataSection) -> None:
    check_fraction("data.val_fraction", d.val_fraction)
    check_choice("data.tokenizer", d.tokenizer, TOKENIZERS)
    if d.vocab_size is not None:
        if d.tokenizer != "bpe":
            raise ValueError(
                f"data.vocab_size is for data.tokenizer=bpe only ({d.tokenizer} reads its "
                f"vocabulary from the text); got {d.vocab_size}"
            )
        check_positive_int("data.vocab_size", d.vocab_size, minimum=256)


def _validate_train(t: TrainSection, m: ModelSection) -> None:
    check_positive_int("train.eval_every", t.eval_every, minimum=0)
    check_choice("train.device", t.device, ("auto", "cpu", "cuda"))
    check_bool("train.compile", t.compile)
    check_choice("train.autocast", t.autocast, ("none", "bf16"))
    check_choice("train.parallel", t.parallel, ("ddp", "fsdp"))
    if t.threads is not None:
        check_positive_int("train.threads", t.threads)
    if t.stop_step is not None:
        check_positive_int("train.stop_step", t.stop_step)
    if t.schedule is None:
        if m.block_size is None:
            raise ValueError("set model.block_size or train.schedule (progressive lengths)")
        ProgressiveSchedule.constant(m.block_size, t.tokens_per_step)  # divisibility
        return
    phases = parse_schedule(t.schedule, "train.schedule")
    try:
        ProgressiveSchedule(phases, t.tokens_per_step)
    except ValueError as err:
        raise ValueError(f"train.schedule / train.tokens_per_step: {err}") from None
    if m.block_size is not None and m.block_size < phases[-1].block_size:
        raise ValueError(
            f"model.block_size ({m.block_size}) is shorter than the schedule's last phase "
            f"({phases[-1].block_size})"
        )


# ---- config -> model ---------------------------------------------------------------------------
def build_model(config: RunConfig, vocab_size: int) -> GPTRecipe:
    """The GPT of `config`, initialized from train.seed, parametrized, and its AdamW groups.

    `ntk.lm.parametrize.gpt_recipe`: widths are read against the same GPT at n_embd =
    base_width; lr_rule "global" keeps the rule's init and multipliers (exponents a, b) and
    gives every layer the one learning rate optim.lr (c = 0); weight decay is muP's
    (lr_g wd_g = optim.lr optim.weight_decay in every matrix group).
    """
    m, p = config.model, config.parametrization
    gpt_config = GPTConfig(
        vocab_size=check_positive_int("vocab_size", vocab_size),
        block_size=config.block_size,
        n_layer=m.n_layer,
        n_embd=m.n_embd,
        n_head=m.n_head,
        head_dim=m.head_dim,
        tie_embeddings=m.tie_embeddings,
        bias=m.bias,
        rope_base=m.rope_base,
        **{key: getattr(m, key) for key in SPEEDRUN_KEYS},
    )
    return gpt_recipe(
        gpt_config,
        p.name,
        base_width=p.base_width or m.n_embd,
        lr=config.optim.lr,
        lr_rule=p.lr_rule,
        weight_decay=config.optim.weight_decay,
        seed=config.train.seed,
        zero_query=p.zero_query,
        zero_readout=p.zero_readout,
        std_prefactor=p.std_prefactor,
        **_muon_options(config.optim),
    )


def _muon_options(o: OptimSection) -> dict[str, Any]:
    """The engine's Muon options for optim.name=muon (none for AdamW: its config unchanged)."""
    if o.name != "muon":
        return {}
    return dict(optimizer="muon", muon_rule=o.muon_rule, muon_lr=o.muon_lr)


# ---- YAML -> dataclasses ---------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3, 3E5 (no dot) as floats, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_value(text: str) -> Any:
    """A command-line value read as YAML (numbers, true/false, null, strings)."""
    return yaml.load(text, Loader=_Loader)


def _check_type(key: str, value: Any, annotation: Any, metadata: dict) -> Any:
    """`value` if it has the field's type (int accepted for float), else a TypeError."""
    if metadata.get("tokens"):
        if metadata.get("zero") and value == 0 and not isinstance(value, bool):
            return 0
        return parse_tokens(key, value)
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    if options and value is None and type(None) in options:
        return None
    kinds = [t for t in options if t is not type(None)] or [annotation]
    for kind in kinds:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (bool, str) and isinstance(value, kind):
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
    if options and type(None) in options:
        names += " or null"
    raise TypeError(f"{key} must be {names}, got {value!r} ({type(value).__name__})")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, refusing unknown keys and wrong types by name."""
    where = prefix.rstrip(".") or "the config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TypeError(f"{where} must be a mapping of keys, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ValueError(
                f"unknown key {prefix}{key!s} (known keys in {where}: {', '.join(fields)})"
            )
    kwargs = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = from_dict(kind, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(prefix + name, value, kind, dict(fields[name].metadata))
    return cls(**kwargs)


def _merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The YAML mapping in `path`, with `extends:` resolved relative to the file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"config {str(path)!r} is a directory: give a YAML file in it")
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    if path.resolve() in _seen:
        raise ValueError(f"config file {str(path)!r} extends itself (through {_seen})")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise TypeError(f"config file {str(path)!r} must hold a mapping of sections")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise TypeError(f"extends in {str(path)!r} must be a file name, got {parent!r}")
    base = read_yaml(path.parent / parent, (*_seen, path.resolve()))
    return _merge(base, data)


def set_dotted(data: dict, key: str, value: Any) -> None:
    """data["a"]["b"] = value for key "a.b" (sections created as needed)."""
    parts = key.split(".")
    if not all(parts):
        raise ValueError(f"override key {key!r} must look like section.key")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key!r}: {part!r} is a value, not a section")
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """["optim.lr=3e-3", ...] -> [("optim.lr", 0.003), ...]."""
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must read key=value, e.g. optim.lr=3e-3")
        out.append((key.strip(), parse_value(text)))
    return out


def build_config(data: dict, overrides: list[tuple[str, Any]] = ()) -> RunConfig:
    """A validated RunConfig from a mapping (without extends/sweep) and dotted overrides."""
    data = copy.deepcopy(data)
    for key, value in overrides:
        set_dotted(data, key, value)
    return from_dict(RunConfig, data).validate()


def load_runs(path: str | Path | None, overrides: list[str] = ()) -> list[tuple[str, RunConfig]]:
    """(name, config) of every run a file describes: one, or one per point of its sweep grid.

    All of them are built and validated before any trains.
    """
    data = {} if path is None else read_yaml(path)
    sweep = data.pop("sweep", None)
    pairs = parse_overrides(list(overrides))
    if sweep is None:
        return [("", build_config(data, pairs))]
    if not isinstance(sweep, dict) or not sweep:
        raise TypeError("sweep must be a mapping {dotted.key: [values, ...]}")
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise TypeError(f"sweep.{key} must be a non-empty list of values")
    runs = []
    for point in itertools.product(*sweep.values()):
        name = ",".join(f"{k.split('.')[-1]}={v}" for k, v in zip(sweep, point, strict=True))
        config = build_config(data, [*zip(sweep, point, strict=True), *pairs])
        config.log.out_dir = str(Path(config.log.out_dir) / name)
        runs.append((name, config))
    return runs


# keys that may change between a checkpoint and its resumption: they do not change training
# (train.tokens may grow: the run goes on, `ntk.lm.train.resume`)
RUN_CONTROL = (
    "train.tokens",
    "train.stop_step",
    "train.device",
    "train.threads",
    "train.compile",
    "train.parallel",
    "train.eval_every",
    "data.eval_tokens",
    "log.",
    "checkpoint.",
)


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(stored: dict, current: dict) -> list[str]:
    """Keys (not run-control ones) whose values differ between two `to_dict()` configs."""
    a, b = flatten(stored), flatten(current)
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == c or (c.endswith(".") and key.startswith(c)) for c in RUN_CONTROL):
            continue
        if a.get(key) != b.get(key):
            out.append(f"{key} is {b.get(key)!r} in the config, {a.get(key)!r} in the checkpoint")
    return out
