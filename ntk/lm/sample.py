"""Sample text from a trained run: `python -m ntk.lm.sample RUN --prompt "..."`.

    python -m ntk.lm.sample runs/smoke --prompt "the " --max-new-tokens 200
    python -m ntk.lm.sample runs/smoke --prompt "the " --temperature 0.8 --top-k 10 --seed 3
    python -m ntk.lm.sample runs/smoke --prompt "the " --temperature 0      # greedy
    python -m ntk.lm.sample runs/smoke/checkpoint_000020.pt --prompt "a" --ema

RUN is a run directory (its checkpoint.pt) or a checkpoint file. The prompt is encoded by the
run's own tokenizer, read from the checkpoint (the corpus file is not needed), continued by
`GPT.generate` (nanoGPT's loop: temperature, top-k, greedy at temperature 0) and decoded; each
sample is printed whole, prompt included. A seed gives the same text on the same machine.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

import torch

from ntk._checks import check_positive_int
from ntk.errors import ArgumentParser, run_cli, user_input
from ntk.lm.runs import TrainedRun, load_run

PROG = "python -m ntk.lm.sample"


def sample(
    run: TrainedRun,
    prompt: str,
    *,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    num_samples: int = 1,
    seed: int = 0,
) -> list[str]:
    """`num_samples` continuations of `prompt` by the run's model, decoded, prompt included."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string (the model has no start token)")
    check_positive_int("num_samples", num_samples)
    ids = run.tokenizer.encode(prompt)
    if len(ids) == 0:
        raise ValueError(f"prompt {prompt!r} holds no token for a {run.tokenizer.kind} tokenizer")
    device = next(run.model.parameters()).device
    generator = torch.Generator(device).manual_seed(check_positive_int("seed", seed, minimum=0))
    idx = ids.to(device).expand(num_samples, -1)
    out = run.model.generate(idx, max_new_tokens, temperature, top_k, generator=generator)
    return [run.tokenizer.decode(row.cpu()) for row in out]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="run directory or checkpoint file")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument("--ema", action="store_true", help="use the EMA of the weights")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with user_input():  # the run, its checkpoint, the prompt and the options are the user's
        run = load_run(args.run, ema=args.ema, device=args.device)
        texts = sample(
            run,
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            num_samples=args.num_samples,
            seed=args.seed,
        )
    print("\n---\n".join(texts))
    return 0


def cli(argv: list[str] | None = None) -> NoReturn:
    """The command line: `main` through the one error boundary (`ntk.errors.run_cli`)."""
    run_cli(main, argv, prog=PROG)


if __name__ == "__main__":
    cli()
