"""Text data for the GPT: the generated default corpus or any UTF-8 text file, tokenized.

`load_corpus()` gives the default corpus, text of the word chain of `ntk.lm.corpus` (1.1 M
characters over a 27-letter alphabet, generated in about a second, the same bytes on every
machine). Its entropy floor, `default_chain().entropy_floor()`, is 896/2821 = 0.3176 bits
(0.2202 nats) per character: 7/4 bits per word transition over 2821/512 characters per word.
A model that sees windows of T characters cannot quite reach it: at each window's start the
previous word is cut off. `load_corpus(path)` reads a
local UTF-8 file instead. Either way the text is split into a training and a validation part
(the last `val_fraction` of it) and encoded by a `CharTokenizer` (one token per Unicode
character, the vocabulary being the text's sorted character set, as nanoGPT's
shakespeare_char).

`load_corpus(level="word")` reads the same text one word per token instead (a word: a maximal
run of non-whitespace; vocabulary the sorted set of words, decoded joined by single spaces).
On the default corpus that is the word chain itself, 512 tokens and an entropy floor of
H(q) = 7/4 bits per token, reached at every position after the first: each target's previous
word is in its window. A model then has no spelling to learn, only the 512 x 4 successor
table, so it learns from the first steps (no plateau while attention learns to read back
through a word), which suits short experiments. `load_corpus(level="bpe")` trains a byte-level
BPE on the training part (`ntk.lm.tokenizers`, which holds the three tokenizers).

Batches are windows of block_size + 1 tokens at random offsets: `sample_batch` draws them with
a `torch.Generator`, so a seed gives the same batches on every machine with the same torch
(the generator's state can be saved to resume). `eval_batches` takes evenly spaced windows,
no randomness: the same validation set for every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ntk._checks import check_choice, check_fraction, check_positive_int
from ntk.lm.corpus import default_chain
from ntk.lm.tokenizers import (  # noqa: F401  (CharTokenizer, WordTokenizer: re-exported)
    KINDS,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    train_tokenizer,
)

DEFAULT_CHARS = 1_100_000  # 990,000 for training, 110,000 for validation (val_fraction 0.1)
DEFAULT_TEXT_SEED = 1
LEVELS = KINDS  # "char", "word", "bpe": `ntk.lm.tokenizers`


@dataclass
class TextData:
    """Encoded training and validation tokens, the tokenizer, and where the text came from."""

    train: Tensor  # (N_train,) int64
    val: Tensor  # (N_val,) int64
    tokenizer: Tokenizer
    source: str

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


def default_text(n_chars: int = DEFAULT_CHARS, seed: int = DEFAULT_TEXT_SEED) -> str:
    """`n_chars` characters of the default word chain's text (see `ntk.lm.corpus`)."""
    return default_chain().sample(n_chars, seed=seed)


def read_text_file(path: str | Path) -> str:
    """The content of a UTF-8 text file, with a clear error if it is missing or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {str(path)!r} does not exist (or is not a file)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"corpus file {str(path)!r} is not UTF-8 text (byte {err.start}: {err.reason})"
        ) from None
    if not text:
        raise ValueError(f"corpus file {str(path)!r} is empty: give a file with text in it")
    return text


def load_corpus(
    path: str | Path | None = None,
    *,
    block_size: int = 1,
    val_fraction: float = 0.1,
    level: str = "char",
    vocab_size: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> TextData:
    """The default generated corpus (`path` None) or a UTF-8 file, split and encoded.

    `level` (the tokenizer's kind, `ntk.lm.tokenizers`): "char" gives one token per
    character, "word" one per word (the default text's last word, which the character count
    may cut, is dropped), "bpe" a byte-level BPE of `vocab_size` tokens (None: 512).
    "char" and "word" read their vocabulary from the whole text and keep the last
    `val_fraction` of the tokens for validation; "bpe" splits the text itself (the last
    `val_fraction` of the characters), learns its merges from the training part only and
    encodes the two parts separately. A `tokenizer` (e.g. a run's, from its checkpoint) is
    used as it is instead of building one; its kind must be `level`. Both parts must hold at
    least block_size + 1 tokens (one input window and its targets).
    """
    check_positive_int("block_size", block_size)
    check_fraction("val_fraction", val_fraction)
    check_choice("level", level, LEVELS)
    if tokenizer is not None and getattr(tokenizer, "kind", None) != level:
        found = getattr(tokenizer, "kind", type(tokenizer).__name__)
        raise ValueError(f"tokenizer is a {found!r} tokenizer, but level is {level!r}")
    if path is None:
        text, source = default_text(), "default word chain (ntk.lm.corpus)"
        if level == "word":
            text = text.rsplit(" ", 1)[0]
    else:
        text, source = read_text_file(path), str(path)
    if level == "bpe":
        cut = len(text) - int(len(text) * val_fraction)
        if tokenizer is None:
            tokenizer = train_tokenizer("bpe", text[:cut], vocab_size)
        train, val = tokenizer.encode(text[:cut]), tokenizer.encode(text[cut:])
    else:
        if tokenizer is None:
            tokenizer = train_tokenizer(level, text, vocab_size)
        tokens = tokenizer.encode(text)
        n_val = int(len(tokens) * val_fraction)
        train, val = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]
    if min(len(train), len(val)) < block_size + 1:
        unit = {"char": "characters", "word": "words", "bpe": "BPE tokens"}[level]
        raise ValueError(
            f"corpus {source!r} has {len(train) + len(val)} {unit}, too short for block_size "
            f"{block_size}: its training part ({len(train)}) and validation part ({len(val)}) "
            f"each need block_size + 1 = {block_size + 1} (val_fraction={val_fraction})"
        )
    return TextData(train, val, tokenizer, source)


def _check_windows(tokens: Tensor, batch_size: int, block_size: int) -> None:
    if not isinstance(tokens, Tensor) or tokens.ndim != 1 or tokens.dtype != torch.int64:
        raise TypeError("tokens must be a 1-d int64 tensor of token ids")
    check_positive_int("batch_size", batch_size)
    check_positive_int("block_size", block_size)
    if len(tokens) < block_size + 1:
        raise ValueError(
            f"tokens has {len(tokens)} entries, fewer than block_size + 1 = {block_size + 1}"
        )


def _windows(tokens: Tensor, starts: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    rows = tokens.unfold(0, block_size + 1, 1)[starts]  # (B, T + 1), a copy
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()  # inputs, next-token targets


def sample_batch(
    tokens: Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """`batch_size` random windows: inputs x and targets y = x shifted by one, each (B, T)."""
    _check_windows(tokens, batch_size, block_size)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    return _windows(tokens, starts, block_size)


def eval_batches(
    tokens: Tensor, batch_size: int, block_size: int, n_batches: int
) -> list[tuple[Tensor, Tensor]]:
    """`n_batches` batches of windows at evenly spaced offsets: a fixed validation set."""
    _check_windows(tokens, batch_size, block_size)
    check_positive_int("n_batches", n_batches)
    last = len(tokens) - block_size - 1  # the largest valid start
    starts = torch.linspace(0, last, n_batches * batch_size, dtype=torch.float64).long()
    return [_windows(tokens, s, block_size) for s in starts.view(n_batches, batch_size)]
