"""A generated text corpus whose entropy rate is known exactly: a Markov chain over words.

The source. A lexicon of `n_words` distinct random lowercase words (lengths `min_len` to
`max_len`) and, for every word w, `k` distinct successors sigma_1(w), ..., sigma_k(w), chosen
with probabilities q_1, ..., q_k. Text is the chain's words joined by single spaces:

    w_1 ~ uniform,   P(w_{i+1} = sigma_j(w_i) | w_i) = q_j.

Each sigma_j is a permutation of the lexicon, so the transition matrix P = sum_j q_j Perm(sigma_j)
is doubly stochastic and its stationary distribution is uniform, exactly. The successors of a
word are distinct, so each transition carries H(q) = -sum_j q_j log2 q_j bits, and words are
recoverable from the characters (space-delimited, all distinct), so the entropy rate of the
character stream is (renewal-reward theorem; Cover & Thomas, "Elements of Information Theory",
ch. 4)

    h = H(q) / (mean word length + 1)    bits per character,

with the mean over the lexicon (uniform stationary law) and +1 for the space. With dyadic
q = (1/2, 1/4, 1/8, 1/8), H(q) = 7/4 and h is an exact rational number (`entropy_floor`).
No model can beat h on average; one that sees a window of T characters pays a little more at
the window's start, where the previous word is cut off.

What a model has to learn: the spelling of every word (a prefix tree) and the n_words x k
successor table. Both are memorization that grows with n_words, so wider models, which
memorize faster, learn measurably more in a fixed number of steps.

Determinism. Everything is drawn from SplitMix64 (Steele, Lea & Flood 2014), written here with
Python integers, with exact rejection sampling for uniform integers: the text is the same
bytes on every machine and Python version (tests pin its sha256).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ntk._checks import check_positive_int

MASK64 = (1 << 64) - 1
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class SplitMix64:
    """The SplitMix64 generator on Python integers: bit-identical on every platform."""

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.state = seed & MASK64

    def next(self) -> int:
        """The next 64-bit output."""
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        """Uniform integer in [0, n), exactly (rejection sampling on the top bits)."""
        bits = max(1, (n - 1).bit_length())
        while True:
            r = self.next() >> (64 - bits)
            if r < n:
                return r

    def shuffle(self, items: list) -> None:
        """Fisher-Yates shuffle in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


@dataclass(frozen=True)
class WordChain:
    """A first-order Markov chain over a random lexicon (see the module docstring).

    Attributes:
        words: the lexicon, distinct lowercase words.
        successors: successors[w][j] = sigma_j(w), the j-th successor of word w.
        weights: integer weights of the successors, summing to a power of two (q_j =
            weights[j] / sum(weights)): dyadic probabilities, sampled exactly.
    """

    words: tuple[str, ...]
    successors: tuple[tuple[int, ...], ...]
    weights: tuple[int, ...]

    @classmethod
    def generate(
        cls,
        seed: int = 0,
        n_words: int = 512,
        min_len: int = 2,
        max_len: int = 7,
        weights: tuple[int, ...] = (4, 2, 1, 1),
    ) -> WordChain:
        """Draw the lexicon and the k = len(weights) successor permutations from `seed`."""
        check_positive_int("n_words", n_words, minimum=2)
        check_positive_int("min_len", min_len)
        check_positive_int("max_len", max_len, minimum=min_len)
        if len(weights) < 1 or len(weights) > n_words:
            raise ValueError(f"weights needs 1 to n_words={n_words} entries, got {len(weights)}")
        for i, w in enumerate(weights):
            check_positive_int(f"weights[{i}]", w)
        total = sum(weights)
        if total & (total - 1):
            raise ValueError(f"weights must sum to a power of two (dyadic q), got {total}")
        if n_words > sum(26**n for n in range(min_len, max_len + 1)) // 2:
            raise ValueError(f"n_words={n_words} is too many for word lengths {min_len}..{max_len}")
        rng = SplitMix64(seed)
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < n_words:
            length = min_len + rng.below(max_len - min_len + 1)
            word = "".join(LETTERS[rng.below(26)] for _ in range(length))
            if word not in seen:
                seen.add(word)
                words.append(word)
        columns: list[list[int]] = []  # columns[j] = sigma_j as a list
        for _ in weights:
            # rejection: a fresh permutation until it avoids every earlier successor of each
            # word (expected e^j tries for the j-th), so successors stay distinct
            while True:
                perm = list(range(n_words))
                rng.shuffle(perm)
                if all(perm[w] != col[w] for col in columns for w in range(n_words)):
                    break
            columns.append(perm)
        successors = tuple(tuple(col[w] for col in columns) for w in range(n_words))
        return cls(tuple(words), successors, tuple(weights))

    # ---- the source's statistics -------------------------------------------------------------
    @property
    def probabilities(self) -> tuple[Fraction, ...]:
        """q_j, exact."""
        total = sum(self.weights)
        return tuple(Fraction(w, total) for w in self.weights)

    def bits_per_word(self) -> float:
        """H(q) = -sum_j q_j log2 q_j: the entropy of one transition (exact for dyadic q)."""
        return -sum(float(q) * math.log2(q) for q in self.probabilities)

    def chars_per_word(self) -> Fraction:
        """Mean characters per word under the stationary (uniform) law, space included."""
        return Fraction(sum(len(w) for w in self.words), len(self.words)) + 1

    def entropy_floor(self) -> float:
        """h = H(q) / (mean word length + 1): the entropy rate in bits per character."""
        return self.bits_per_word() / float(self.chars_per_word())

    # ---- sampling and scoring ----------------------------------------------------------------
    def sample(self, n_chars: int, seed: int = 1) -> str:
        """`n_chars` characters of the chain's text, started from a uniform word."""
        check_positive_int("n_chars", n_chars)
        rng = SplitMix64(seed)
        bits = sum(self.weights).bit_length() - 1
        cumulative = [sum(self.weights[: j + 1]) for j in range(len(self.weights))]
        w = rng.below(len(self.words))
        pieces, length = [], 0
        while length < n_chars:
            pieces.append(self.words[w])
            length += len(self.words[w]) + 1
            r = rng.next() >> (64 - bits) if bits else 0  # uniform in [0, 2^bits)
            j = next(i for i, c in enumerate(cumulative) if r < c)
            w = self.successors[w][j]
        return " ".join(pieces)[:n_chars]

    def oracle_bits(self, text: str) -> tuple[list[float], list[int]]:
        """The true model's code length on `text`, word by word.

        For each complete word after the first one (words cut at either end of `text` are
        skipped), returns -log2 P(word | previous word) and its character count including the
        space before it. sum(bits) / sum(chars) estimates the cross-entropy of the source with
        itself, which must match `entropy_floor` up to sampling error.
        """
        index = {w: i for i, w in enumerate(self.words)}
        q = self.probabilities
        tokens = text.split(" ")[1:-1]  # the ends may be cut mid-word
        bits, chars = [], []
        for prev, word in zip(tokens, tokens[1:], strict=False):
            if prev not in index or word not in index:
                raise ValueError(f"text holds {prev!r} -> {word!r}, not words of this chain")
            succ = self.successors[index[prev]]
            if index[word] not in succ:
                raise ValueError(f"{word!r} never follows {prev!r} in this chain")
            bits.append(-math.log2(q[succ.index(index[word])]))
            chars.append(len(word) + 1)
        return bits, chars


def default_chain() -> WordChain:
    """The project's default source: seed 0, 512 words of 2 to 7 letters, q = (4, 2, 1, 1)/8."""
    return WordChain.generate(seed=0)
