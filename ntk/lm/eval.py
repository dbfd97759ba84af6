"""Evaluate a trained run: `python -m ntk.lm.eval RUN [--split val] [--tokens N] [--ema]`.

    python -m ntk.lm.eval runs/smoke                  # the validation set of training
    python -m ntk.lm.eval runs/smoke --split train --tokens 100K --ema --json

Prints the mean cross-entropy L (nats per token), the perplexity e^L, bits per token L / ln 2
and bits per character L n_tokens / (n_chars ln 2), where n_chars counts the characters the
evaluated target tokens stand for (`ntk.lm.tokenizers`: chars_per_token): bits per character
compares runs with different tokenizers, and on the default corpus it meets the entropy floor
of `ntk.lm.corpus` (0.3176 bits per character), which no model can beat on average.

The windows are those of training's validation (`eval_windows`): data.eval_tokens tokens (or
--tokens) in windows of the model's block size at evenly spaced offsets, in batches of at most
the training batch. So the default call repeats the run's last val_loss_max (ema_val_loss_max
with --ema) bit for bit. The corpus is read again (data.path of the run's config, or the
generated default) and encoded by the run's stored tokenizer.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import NoReturn

import torch
from torch import Tensor

from ntk._checks import check_choice, check_positive_int
from ntk.errors import ArgumentParser, run_cli, user_input
from ntk.lm.corpus import default_chain
from ntk.lm.data import eval_batches
from ntk.lm.progressive import parse_tokens
from ntk.lm.runs import TrainedRun, load_run
from ntk.lm.step import evaluate

PROG = "python -m ntk.lm.eval"


def eval_windows(
    tokens: Tensor, block_size: int, eval_tokens: int, tokens_per_step: int
) -> list[tuple[Tensor, Tensor]]:
    """Fixed windows of `tokens`: eval_tokens // block_size of them (at least one), evenly
    spaced, in batches of at most tokens_per_step // block_size windows (the training batch)."""
    windows = max(1, eval_tokens // block_size)
    batch = max(1, min(windows, tokens_per_step // block_size))
    return eval_batches(tokens, batch, block_size, n_batches=max(1, windows // batch))


def evaluate_run(
    run: TrainedRun, *, split: str = "val", tokens: int | None = None
) -> dict[str, float | int | str]:
    """Loss, perplexity, bits per token and per character of `run` on `split` of its corpus."""
    check_choice("split", split, ("val", "train"))
    cfg = run.config
    n = cfg.data.eval_tokens if tokens is None else check_positive_int("tokens", tokens)
    data = run.corpus()
    block = cfg.block_size
    batches = eval_windows(getattr(data, split), block, n, cfg.train.tokens_per_step)
    device = next(run.model.parameters()).device
    loss = evaluate(run.model, [(x.to(device), y.to(device)) for x, y in batches])
    targets = torch.cat([y.reshape(-1) for _, y in batches])
    chars = float(run.tokenizer.chars_per_token()[targets].sum())
    bits_per_token = loss / math.log(2)
    out = {
        "split": split,
        "tokenizer": run.tokenizer.kind,
        "block_size": block,
        "tokens": int(targets.numel()),
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_token": bits_per_token,
        "bits_per_char": bits_per_token * targets.numel() / chars,
        "chars_per_token": chars / targets.numel(),
    }
    if cfg.data.path is None:
        out["entropy_floor_bits_per_char"] = default_chain().entropy_floor()
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="run directory or checkpoint file")
    p.add_argument("--split", default="val", help="val or train")
    p.add_argument("--tokens", default=None, help="tokens to evaluate (default data.eval_tokens)")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA of the weights")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def report(result: dict) -> str:
    """The human-readable lines of `evaluate_run`'s result."""
    lines = [
        f"{result['split']} split, {result['tokens']} target tokens ({result['tokenizer']} "
        f"tokenizer, windows of {result['block_size']}, {result['chars_per_token']:.4f} "
        "characters per token)",
        f"loss {result['loss']:.6f} nats/token, perplexity {result['perplexity']:.4f}",
        f"{result['bits_per_token']:.6f} bits/token, {result['bits_per_char']:.6f} bits/char",
    ]
    if "entropy_floor_bits_per_char" in result:
        lines.append(
            f"entropy floor of the default corpus: {result['entropy_floor_bits_per_char']:.4f} "
            "bits/char"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with user_input():  # the run, its checkpoint and the options are the user's
        tokens = None if args.tokens is None else parse_tokens("--tokens", args.tokens)
        run = load_run(args.run, ema=args.ema, device=args.device)
        result = evaluate_run(run, split=args.split, tokens=tokens)
    print(json.dumps(result) if args.json else report(result))
    return 0


def cli(argv: list[str] | None = None) -> NoReturn:
    """The command line: `main` through the one error boundary (`ntk.errors.run_cli`)."""
    run_cli(main, argv, prog=PROG)


if __name__ == "__main__":
    cli()
