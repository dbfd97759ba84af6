"""python -m ntk.lm.export RUN OUTDIR: a trained run as a Hugging Face GPT-NeoX checkpoint.

Reads RUN/checkpoint.pt (the model rebuilt and checked by `ntk.lm.checkpoint.load_model`),
folds muP's multipliers and attention scale into the weights and writes OUTDIR with
`save_pretrained` (`ntk.lm.hf.export_neox`), so that stock `transformers` loads it:

    AutoModelForCausalLM.from_pretrained(OUTDIR)   # GPTNeoXForCausalLM, our logits

`--ema` exports the run's EMA weights instead of the last ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ntk.lm.checkpoint import load_model
from ntk.lm.hf import export_neox
from ntk.lm.train import CHECKPOINT_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ntk.lm.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run", help="a run directory (holding checkpoint.pt) or a checkpoint")
    parser.add_argument("out", help="the directory to write the Hugging Face checkpoint to")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights")
    args = parser.parse_args(argv)
    run = Path(args.run)
    path = run / CHECKPOINT_NAME if run.is_dir() else run
    if not path.is_file():
        print(f"error: no checkpoint at {str(path)!r} (RUN is a run directory)", file=sys.stderr)
        return 2
    try:
        model, param, state = load_model(path)
        if args.ema:
            if state.get("ema") is None:
                raise ValueError(f"the run at {str(run)!r} has no EMA (ema.enabled)")
            average = state["ema"]["average"]
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(average[name])
        out = export_neox(model, param, args.out)
    except (ValueError, TypeError, KeyError, OSError, RuntimeError) as err:
        # a user error (damaged or foreign checkpoint, unwritable OUTDIR): one line, exit 2
        print(f"error: {type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
        return 2
    print(f"wrote {out} (GPTNeoXForCausalLM; load with AutoModelForCausalLM.from_pretrained)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
