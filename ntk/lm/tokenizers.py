"""Tokenizers of the GPT's text: characters, words, or a byte-level BPE, saved with the run.

Three kinds, chosen by `data.tokenizer` in a run's config:

- "char": one token per Unicode character; the vocabulary is the text's sorted character set
  (nanoGPT's shakespeare_char).
- "word": one token per word (a maximal run of non-whitespace); the vocabulary is the sorted
  set of words; decoding joins words with single spaces (whitespace is not kept).
- "bpe": byte-level byte-pair encoding (Sennrich et al. 2016, "Neural Machine Translation of
  Rare Words with Subword Units", arXiv:1508.07909, on bytes as in GPT-2: Radford et al.
  2019), trained offline on the training text with Hugging Face `tokenizers`. Its alphabet
  is the 256 bytes, so every text encodes and decode(encode(s)) == s exactly; the merges
  learned from the text fill the vocabulary up to `vocab_size` (fewer if the text runs out
  of pairs to merge).

Every tokenizer turns into a small dict of strings (`state()`, stored in the checkpoint) and
back (`tokenizer_from_state`), so decoding a run's samples never needs its corpus file.

`chars_per_token()` gives the number of characters each token stands for (1 for "char", the
word plus its space for "word", the UTF-8 characters that start in the token's bytes for
"bpe"): summed over a contiguous run of tokens it is the run's character count, which turns a
loss per token into bits per character (`ntk.lm.eval`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ntk._checks import check_choice, check_positive_int

KINDS = ("char", "word", "bpe")
DEFAULT_BPE_VOCAB = 512  # the 256 bytes and 256 merges


class UnknownTokenError(ValueError):
    """The text holds a symbol the tokenizer cannot encode (the corpus changed under it)."""


def _ids(ids: Tensor | Sequence[int], vocab_size: int) -> list[int]:
    ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    if any(not 0 <= i < vocab_size for i in ids):
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    return ids


class CharTokenizer:
    """One token per character; ids are positions in the sorted alphabet."""

    kind = "char"

    def __init__(self, alphabet: str) -> None:
        if not isinstance(alphabet, str) or not alphabet:
            raise ValueError("alphabet must be a non-empty str")
        if len(set(alphabet)) != len(alphabet) or "".join(sorted(alphabet)) != alphabet:
            raise ValueError("alphabet must list distinct characters in sorted order")
        self.alphabet = alphabet
        self._index = {ch: i for i, ch in enumerate(alphabet)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is the set of characters of `text`."""
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> Tensor:
        """Token ids (int64) of `text`; every character must be in the alphabet."""
        try:
            return torch.tensor([self._index[ch] for ch in text], dtype=torch.int64)
        except KeyError as err:
            raise UnknownTokenError(
                f"text contains {err.args[0]!r}, not in the tokenizer's alphabet"
            ) from None

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """The text of a 1-d sequence of token ids."""
        return "".join(self.alphabet[i] for i in _ids(ids, self.vocab_size))

    def chars_per_token(self) -> Tensor:
        return torch.ones(self.vocab_size, dtype=torch.float64)

    def state(self) -> dict[str, str]:
        return {"kind": self.kind, "alphabet": self.alphabet}


class WordTokenizer:
    """One token per word (maximal run of non-whitespace); ids are positions in the sorted
    lexicon; decoding joins the words with single spaces."""

    kind = "word"

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words) if not isinstance(words, str) else None
        if not words or not all(isinstance(w, str) and w and w.split() == [w] for w in words):
            raise ValueError("words must be a non-empty list of non-empty words without spaces")
        if len(set(words)) != len(words) or sorted(words) != words:
            raise ValueError("words must be distinct and in sorted order")
        self.words = tuple(words)
        self._index = {w: i for i, w in enumerate(words)}

    @classmethod
    def from_text(cls, text: str) -> WordTokenizer:
        """The tokenizer whose vocabulary is the set of words of `text`."""
        return cls(sorted(set(text.split())))

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> Tensor:
        """Token ids (int64) of the words of `text`; every word must be in the vocabulary."""
        try:
            return torch.tensor([self._index[w] for w in text.split()], dtype=torch.int64)
        except KeyError as err:
            raise UnknownTokenError(
                f"text contains the word {err.args[0]!r}, not in the tokenizer's vocabulary"
            ) from None

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """The words of a 1-d sequence of token ids, joined by single spaces."""
        return " ".join(self.words[i] for i in _ids(ids, self.vocab_size))

    def chars_per_token(self) -> Tensor:
        """The word's letters and the space that separates it from the next one."""
        return torch.tensor([len(w) + 1 for w in self.words], dtype=torch.float64)

    def state(self) -> dict[str, str]:
        return {"kind": self.kind, "words": "\n".join(self.words)}


def _byte_symbols() -> dict[str, int]:
    """GPT-2's byte <-> printable-character table (the ByteLevel alphabet): symbol -> byte.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes are shifted to 256 + i.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class BPETokenizer:
    """Byte-level BPE (GPT-2's scheme) through Hugging Face `tokenizers`, trained offline."""

    kind = "bpe"

    def __init__(self, json: str) -> None:
        from tokenizers import Tokenizer

        if not isinstance(json, str):
            raise TypeError(f"json must be a tokenizer.json string, got {type(json).__name__}")
        try:
            self._tokenizer = Tokenizer.from_str(json)
        except Exception as err:  # the library's own parse errors: not a tokenizer
            raise ValueError(f"not a Hugging Face tokenizer.json: {str(err)[:200]}") from None
        self._json = json

    @classmethod
    def train(cls, text: str, vocab_size: int = DEFAULT_BPE_VOCAB) -> BPETokenizer:
        """Learn merges from `text` until the vocabulary has `vocab_size` tokens (>= 256)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        check_positive_int("vocab_size", vocab_size, minimum=256)
        if not isinstance(text, str) or not text:
            raise ValueError("text must be a non-empty str to train a BPE tokenizer on")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no unknowns
            show_progress=False,
        )
        tokenizer.train_from_iterator([text], trainer)
        return cls(tokenizer.to_str())

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> Tensor:
        """Token ids (int64) of `text` (any text: the alphabet is every byte)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return torch.tensor(self._tokenizer.encode(text).ids, dtype=torch.int64)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """The text of a 1-d sequence of ids (bytes that are not valid UTF-8 become U+FFFD)."""
        return self._tokenizer.decode(_ids(ids, self.vocab_size))

    def token_bytes(self) -> list[bytes]:
        """The bytes each token id stands for."""
        symbols = _byte_symbols()
        vocab = sorted(self._tokenizer.get_vocab().items(), key=lambda item: item[1])
        return [bytes(symbols[ch] for ch in token) for token, _ in vocab]

    def chars_per_token(self) -> Tensor:
        """UTF-8 characters that start in each token: its bytes that are not continuations."""
        starts = [sum((b & 0xC0) != 0x80 for b in t) for t in self.token_bytes()]
        return torch.tensor(starts, dtype=torch.float64)

    def state(self) -> dict[str, str]:
        return {"kind": self.kind, "json": self._json}


Tokenizer = CharTokenizer | WordTokenizer | BPETokenizer


def train_tokenizer(kind: str, text: str, vocab_size: int | None = None) -> Tokenizer:
    """A tokenizer of `kind` for `text`; `vocab_size` is for "bpe" only (None: 512)."""
    check_choice("tokenizer", kind, KINDS)
    if kind != "bpe":
        if vocab_size is not None:
            raise ValueError(
                f"vocab_size applies to the bpe tokenizer only; {kind} reads its vocabulary "
                f"from the text (got vocab_size={vocab_size})"
            )
        return (CharTokenizer if kind == "char" else WordTokenizer).from_text(text)
    return BPETokenizer.train(text, DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size)


def tokenizer_from_state(state: dict[str, str]) -> Tokenizer:
    """The tokenizer that `state()` described (e.g. from a checkpoint's "tokenizer")."""
    if not isinstance(state, dict) or state.get("kind") not in KINDS:
        raise ValueError(f"not a saved tokenizer (expected a dict with kind in {KINDS})")
    kind = state["kind"]
    if kind == "char":
        return CharTokenizer(state["alphabet"])
    if kind == "word":
        return WordTokenizer(state["words"].split("\n"))
    return BPETokenizer(state["json"])
