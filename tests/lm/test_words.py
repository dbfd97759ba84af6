"""Word-level tokens of the default corpus: the word chain itself, 512 words, 4 successors."""

import math
from collections import Counter

import pytest
import torch

from ntk.lm.data import WordTokenizer, load_corpus


def test_word_tokenizer_round_trip_and_refusals():
    tok = WordTokenizer.from_text("b a c a")
    assert tok.words == ("a", "b", "c") and tok.vocab_size == 3
    ids = tok.encode("c a  b\n")
    assert ids.dtype == torch.int64 and ids.tolist() == [2, 0, 1]
    assert tok.decode(ids) == "c a b"
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        tok.encode("a d")
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 3\)"):
        tok.decode([3])
    with pytest.raises(ValueError, match="distinct and in sorted order"):
        WordTokenizer(["b", "a"])
    with pytest.raises(ValueError, match="without spaces"):
        WordTokenizer(["a b"])


def test_default_corpus_at_word_level_is_the_chain_with_entropy_7_4_bits():
    data = load_corpus(block_size=16, level="word")
    assert data.vocab_size == 512
    tokens = torch.cat([data.train, data.val]).tolist()
    pairs = Counter(zip(tokens[:-1], tokens[1:], strict=True))
    successors = Counter(a for a, _ in pairs)
    assert max(successors.values()) == 4  # each word has its 4 successors, no more
    # empirical conditional entropy of the next word: close to H(q) = 7/4 bits
    first = Counter(tokens[:-1])
    h = -sum(n * math.log2(n / first[a]) for (a, _), n in pairs.items()) / (len(tokens) - 1)
    assert h == pytest.approx(7 / 4, abs=0.01)
    assert len(data.val) == int(len(tokens) * 0.1)
