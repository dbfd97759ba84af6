"""The word-chain corpus: exact generator, a doubly stochastic chain, and its entropy floor."""

import math
from collections import Counter
from fractions import Fraction

import pytest
from scipy import stats

from ntk.lm.corpus import SplitMix64, WordChain, default_chain


def test_splitmix64_matches_the_published_reference_outputs():
    # Vigna's splitmix64.c seeded with 0 (the values used by xoshiro's reference seeding)
    rng = SplitMix64(0)
    assert [rng.next() for _ in range(3)] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]


def test_below_is_uniform():
    rng = SplitMix64(7)
    counts = Counter(rng.below(6) for _ in range(60_000))
    assert set(counts) == set(range(6))
    assert stats.chisquare([counts[i] for i in range(6)]).pvalue > 1e-3


def test_chain_is_doubly_stochastic_with_distinct_successors():
    chain = default_chain()
    n = len(chain.words)
    assert n == 512 and len(set(chain.words)) == n
    assert all(w.isalpha() and w.islower() and 2 <= len(w) <= 7 for w in chain.words)
    for succ in chain.successors:  # distinct: each transition carries exactly H(q) bits
        assert len(set(succ)) == len(succ) == 4
    for j in range(4):  # sigma_j is a permutation: P's columns sum to 1, pi is uniform
        assert sorted(s[j] for s in chain.successors) == list(range(n))


def test_entropy_floor_is_the_stated_exact_value():
    chain = default_chain()
    assert chain.probabilities == (Fraction(1, 2), Fraction(1, 4), Fraction(1, 8), Fraction(1, 8))
    assert chain.bits_per_word() == 1.75
    assert chain.chars_per_word() == Fraction(2821, 512)
    assert chain.entropy_floor() == pytest.approx(1.75 * 512 / 2821, rel=1e-15)
    assert round(chain.entropy_floor(), 4) == 0.3176  # the number stated in ntk.lm.data


def test_true_model_cross_entropy_matches_the_floor():
    """The source's own code length on held-out text is h, up to sampling error."""
    chain = default_chain()
    bits, chars = chain.oracle_bits(chain.sample(400_000, seed=123))
    n = len(bits)
    rate = sum(bits) / sum(chars)
    # standard error of a ratio estimator (delta method)
    mean_c = sum(chars) / n
    residual_var = sum((b - rate * c) ** 2 for b, c in zip(bits, chars, strict=True)) / (n - 1)
    se = math.sqrt(residual_var / n) / mean_c
    assert abs(rate - chain.entropy_floor()) < 4 * se
    assert 4 * se < 0.01  # the test resolves the floor to better than 0.01 bits per char
    # the transitions are used with probabilities q: 1 bit half the time, 2 a quarter, ...
    counts = Counter(bits)
    observed = [counts[1.0], counts[2.0], counts[3.0]]
    assert stats.chisquare(observed, [n / 2, n / 4, n / 4]).pvalue > 1e-3


def test_stationary_word_frequencies_are_uniform():
    chain = default_chain()
    words = chain.sample(300_000, seed=5).split(" ")[1:-1]
    counts = Counter(words)
    assert len(counts) == 512
    assert stats.chisquare([counts[w] for w in chain.words]).pvalue > 1e-3


def test_generation_is_deterministic_and_seeded():
    a, b = WordChain.generate(seed=3, n_words=64), WordChain.generate(seed=3, n_words=64)
    assert a == b
    assert a.sample(1000, seed=1) == b.sample(1000, seed=1)
    assert a.sample(1000, seed=2) != a.sample(1000, seed=1)
    assert WordChain.generate(seed=4, n_words=64).words != a.words
    text = a.sample(1000, seed=1)
    assert len(text) == 1000 and set(text) <= set(" abcdefghijklmnopqrstuvwxyz")


def test_oracle_rejects_text_the_chain_cannot_produce():
    chain = default_chain()
    w = chain.words
    not_successor = next(i for i in range(512) if i not in chain.successors[0])
    with pytest.raises(ValueError, match="never follows"):
        chain.oracle_bits(f"x {w[0]} {w[not_successor]} y")
    with pytest.raises(ValueError, match="not words of this chain"):
        chain.oracle_bits("x hello world y")


def test_bad_arguments():
    with pytest.raises(ValueError, match="power of two"):
        WordChain.generate(weights=(3, 2, 1))
    with pytest.raises(ValueError, match="n_words must be >= 2"):
        WordChain.generate(n_words=1)
    with pytest.raises(ValueError, match="max_len must be >= 3"):
        WordChain.generate(min_len=3, max_len=2)
    with pytest.raises(ValueError, match="too many"):
        WordChain.generate(n_words=1000, min_len=1, max_len=2)
    with pytest.raises(TypeError, match="seed must be an int"):
        SplitMix64(1.5)
    with pytest.raises(ValueError, match="n_chars must be >= 1"):
        default_chain().sample(0)
