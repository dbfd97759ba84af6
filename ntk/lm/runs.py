"""A trained run, read back from its directory: model, tokenizer, config and text.

`python -m ntk.lm.sample` and `python -m ntk.lm.eval` start here. A run directory holds
`checkpoint.pt` (`ntk.lm.checkpoint`), which carries the config, the weights (and the EMA's),
the parametrization's metadata and the tokenizer (`ntk.lm.tokenizers`): sampling needs nothing
else, in particular not the corpus file. Evaluation also reads the corpus (data.path of the
stored config, or the generated default) and encodes it with the stored tokenizer, so it sees
the same tokens, split the same way, as the training run did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ntk.lm.checkpoint import CHECKPOINT_NAME, load_model
from ntk.lm.config import RunConfig, from_dict
from ntk.lm.data import TextData, load_corpus
from ntk.lm.model import GPT
from ntk.lm.tokenizers import Tokenizer, tokenizer_from_state
from ntk.training import EMA


def checkpoint_file(run: str | Path) -> Path:
    """`run` itself if it is a file, else run/checkpoint.pt; a clear error if neither exists."""
    path = Path(run)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
        if not path.is_file():
            raise FileNotFoundError(f"run directory {str(run)!r} holds no {CHECKPOINT_NAME}")
    elif not path.is_file():
        raise FileNotFoundError(f"run {str(run)!r} is neither a run directory nor a checkpoint")
    return path


def stored_tokenizer(checkpoint: str | Path | dict[str, Any]) -> Tokenizer | None:
    """The tokenizer saved in a checkpoint (a path or a loaded state); None if it has none.

    From a path only the tokenizer is read (memory-mapped: the weights stay on disk).
    """
    if isinstance(checkpoint, dict):
        state = checkpoint.get("tokenizer")
    else:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # a torn or foreign file: load_checkpoint reports it, by name
            return None
        state = state.get("tokenizer") if isinstance(state, dict) else None
    return None if state is None else tokenizer_from_state(state)


def check_device(device: str) -> torch.device:
    """A torch device that exists here ("cpu", "cuda", "cuda:1", ...)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must name a torch device (cpu, cuda, ...), got {device!r}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine")
    return dev


@dataclass
class TrainedRun:
    """A run's model (training weights, or the EMA's), config, tokenizer and checkpoint."""

    model: GPT
    config: RunConfig
    tokenizer: Tokenizer
    state: dict[str, Any]
    path: Path

    def corpus(self, device: torch.device | str = "cpu") -> TextData:
        """The run's text, encoded by its own tokenizer and split as in training."""
        d = self.config.data
        return load_corpus(
            d.path,
            block_size=self.config.block_size,
            val_fraction=d.val_fraction,
            level=d.tokenizer,
            tokenizer=self.tokenizer,
        )


def load_run(run: str | Path, *, ema: bool = False, device: str = "cpu") -> TrainedRun:
    """The run in directory (or checkpoint file) `run`, with its EMA weights if `ema`.

    A checkpoint written before tokenizers were saved has none: its tokenizer is rebuilt from
    the corpus named in its config (which must then still be there, unchanged).
    """
    path = checkpoint_file(run)
    model, _, state = load_model(path, map_location=check_device(device))
    config = from_dict(RunConfig, state["config"]).validate()
    if ema:
        if state.get("ema") is None:
            raise ValueError(f"run {str(run)!r} kept no EMA of its weights (ema.enabled false)")
        average = EMA(model, decay=state["ema"]["decay"])
        average.load_state_dict(state["ema"])
        average.copy_to(model)
    tokenizer = stored_tokenizer(state)
    if tokenizer is None:
        d = config.data
        tokenizer = load_corpus(d.path, val_fraction=d.val_fraction, level=d.tokenizer).tokenizer
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"checkpoint {str(path)!r}: the tokenizer has {tokenizer.vocab_size} tokens, the "
            f"model {model.config.vocab_size}"
        )
    model.eval()
    return TrainedRun(model, config, tokenizer, state, path)
