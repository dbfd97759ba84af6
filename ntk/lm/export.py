"""python -m ntk.lm.export RUN OUTDIR: a trained run as a Hugging Face GPT-NeoX checkpoint.

Reads RUN/checkpoint.pt (the model rebuilt and checked by `ntk.lm.checkpoint.load_model`),
folds muP's multipliers and attention scale into the weights and writes OUTDIR with
`save_pretrained` (`ntk.lm.hf.export_neox`), so that stock `transformers` loads it:

    AutoModelForCausalLM.from_pretrained(OUTDIR)   # GPTNeoXForCausalLM, our logits

`--ema` exports the run's EMA weights instead of the last ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import torch

from ntk.errors import ArgumentParser, InvalidValue, run_cli, user_input
from ntk.lm.checkpoint import load_model
from ntk.lm.hf import export_neox
from ntk.lm.train import CHECKPOINT_NAME

PROG = "python -m ntk.lm.export"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory (holding checkpoint.pt) or a checkpoint")
    parser.add_argument("out", help="the directory to write the Hugging Face checkpoint to")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights")
    args = parser.parse_args(argv)
    run = Path(args.run)
    path = run / CHECKPOINT_NAME if run.is_dir() else run
    if not path.is_file():
        raise InvalidValue(f"no checkpoint at {str(path)!r} (RUN is a run directory)")
    # a damaged or foreign checkpoint raises CheckpointError (a user error); an unwritable
    # OUTDIR an OSError, the user's too
    with user_input(OSError):
        model, param, state = load_model(path)
        if args.ema and state.get("ema") is None:
            raise InvalidValue(f"the run at {str(run)!r} has no EMA (ema.enabled)")
        if args.ema:
            average = state["ema"]["average"]
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(average[name])
        out = export_neox(model, param, args.out)
    print(f"wrote {out} (GPTNeoXForCausalLM; load with AutoModelForCausalLM.from_pretrained)")
    return 0


def cli(argv: list[str] | None = None) -> NoReturn:
    """The command line: `main` through the one error boundary (`ntk.errors.run_cli`)."""
    run_cli(main, argv, prog=PROG)


if __name__ == "__main__":
    cli()
