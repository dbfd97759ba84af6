"""What a training run is, in words: the start-up summary and the config keys of `--help`.

`run_summary(run)` is printed by `python -m ntk.lm.train` before the first step: the corpus,
the tokenizer and its vocabulary, the tokens (and characters) of each split, the model's
widths and parameter count, the parametrization, and the token budget in steps and epochs.

`config_keys()` lists every key a run's YAML accepts, with its type and default, read from
the dataclasses of `ntk.lm.config` (so the list cannot drift from what the loader accepts).
"""

from __future__ import annotations

import dataclasses
import textwrap
import typing
from typing import Any

from ntk.lm.config import RunConfig


def run_summary(run: Any) -> str:
    """Lines describing an `ntk.lm.train.Run` (data, model, parametrization, budget)."""
    cfg, data, model = run.config, run.data, run.model
    chars = data.tokenizer.chars_per_token()
    n_chars = {k: int(chars[getattr(data, k)].sum()) for k in ("train", "val")}
    m, p = cfg.model, cfg.parametrization
    n_head, head_dim = model.config.heads
    total = model.num_params(embedding=True)
    tied = ", tied embedding/readout" if m.tie_embeddings else ""
    steps, per_step = cfg.total_steps, cfg.train.tokens_per_step
    epochs = steps * per_step / len(data.train)
    lines = [
        f"corpus: {data.source}",
        f"tokenizer: {data.tokenizer.kind}, vocabulary of {data.vocab_size} tokens",
        f"tokens: train {len(data.train):,} ({n_chars['train']:,} characters), "
        f"val {len(data.val):,} ({n_chars['val']:,} characters)",
        f"model: {m.n_layer} blocks, n_embd {m.n_embd}, {n_head} heads of {head_dim}, "
        f"block size {cfg.block_size}{tied}",
        f"parameters: {total:,} ({model.num_params():,} without the token embedding)",
        f"parametrization: {p.name} (lr rule {p.lr_rule}), base width "
        f"{p.base_width or m.n_embd}, lr {cfg.optim.lr:g} ({cfg.optim.decay} decay)",
        f"budget: {cfg.train.tokens:,} tokens = {steps} steps of {per_step:,} tokens "
        f"({epochs:.3g} epochs of the training tokens)",
    ]
    return "\n".join(lines)


def check_budget(stored: int, tokens: int, where: str) -> None:
    """train.tokens may grow when a run resumes (it trains on), never shrink.

    The learning-rate schedule stays the one the run started with (the scheduler's state in
    the checkpoint keeps its first length): with decay "constant" a run grown from N to M
    tokens is bit for bit the run of M tokens; with "cosine" or "linear" the decay has ended
    at min_lr_ratio by the first budget's end, and the extra tokens train at that rate (a
    schedule stretched to the new length would jump the learning rate back up mid-run).
    """
    if tokens < stored:
        raise ValueError(
            f"{where}: train.tokens is {tokens:,}, less than the checkpoint's {stored:,}; a "
            "run's budget may grow when it resumes, not shrink (start a new log.out_dir)"
        )


def finished_message(step: int, tokens: int) -> str:
    """What a resumed run that has nothing left to do says."""
    return (
        f"the run is complete (step {step}, train.tokens {tokens}); to train it longer from its "
        f"checkpoint, raise train.tokens above {tokens} "
        "(the learning-rate schedule keeps its first length; README: Training the GPT)"
    )


def _type_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if args:
        return " | ".join("null" if a is type(None) else a.__name__ for a in args)
    return annotation.__name__


def _yaml(value: Any) -> str:
    """A default as YAML writes it (null, true, 0.003, 'mup')."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def config_keys() -> str:
    """Every config key as "section.key  type = default", under its section's description."""
    lines = []
    for section in dataclasses.fields(RunConfig):
        kind = typing.get_type_hints(RunConfig)[section.name]
        doc = " ".join((kind.__doc__ or "").split())
        lines.append(
            textwrap.fill(
                f"{section.name}: {doc}", 96, initial_indent="  ", subsequent_indent="      "
            )
        )
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            shown = _yaml(default)
            unit = " (tokens: int or e.g. '2M')" if f.metadata.get("tokens") else ""
            lines.append(
                f"    {section.name}.{f.name}  {_type_name(hints[f.name])} = {shown}{unit}"
            )
    return "\n".join(lines)
