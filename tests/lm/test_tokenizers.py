"""The three tokenizers: round trips, saved states, characters per token, the BPE's training."""

import pytest
import torch

from ntk.lm.config import build_config
from ntk.lm.data import load_corpus
from ntk.lm.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    WordTokenizer,
    _byte_symbols,
    tokenizer_from_state,
    train_tokenizer,
)

TEXT = "the cat sat on the mat; the dog sat on the log.\n" * 40 + "héllo wörld ✓ 🎉\ttabs  two"


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer("bpe", TEXT, vocab_size=280)


def test_round_trip_of_every_kind_and_of_its_saved_state(bpe):
    for tok in (train_tokenizer("char", TEXT), train_tokenizer("word", TEXT), bpe):
        ids = tok.encode(TEXT)
        assert ids.dtype == torch.int64 and ids.ndim == 1
        assert 0 <= int(ids.min()) and int(ids.max()) < tok.vocab_size
        expected = " ".join(TEXT.split()) if tok.kind == "word" else TEXT  # words: spaces
        assert tok.decode(ids) == expected
        again = tokenizer_from_state(tok.state())
        assert type(again) is type(tok) and again.vocab_size == tok.vocab_size
        assert torch.equal(again.encode(TEXT), ids) and again.decode(ids) == expected
        assert all(isinstance(v, str) for v in tok.state().values())  # weights_only-loadable


def test_bpe_encodes_any_text_merges_and_respects_the_vocabulary_size(bpe):
    assert isinstance(bpe, BPETokenizer) and bpe.vocab_size == 280  # 256 bytes + 24 merges
    assert train_tokenizer("bpe", TEXT, vocab_size=400).vocab_size < 400  # out of pairs
    assert len(bpe.encode(TEXT)) < len(TEXT.encode()) / 2  # frequent words became tokens
    unseen = "Ωmega ∑ zzz 中文"  # never in the training text: still encoded, byte by byte
    assert bpe.decode(bpe.encode(unseen)) == unseen
    # the bytes of every token, through GPT-2's byte table, spell the text
    pieces = bpe.token_bytes()
    assert b"".join(pieces[i] for i in bpe.encode(TEXT).tolist()).decode() == TEXT
    # training is deterministic: the same text gives the same merges
    assert train_tokenizer("bpe", TEXT, vocab_size=280).state() == bpe.state()


def test_byte_table_is_gpt2s():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    assert _byte_symbols() == {ch: b for b, ch in bytes_to_unicode().items()}


def test_chars_per_token_sum_to_the_characters_of_a_token_run(bpe):
    for tok in (train_tokenizer("char", TEXT), bpe):
        ids = tok.encode(TEXT)
        assert tok.chars_per_token()[ids].sum().item() == len(TEXT)
    words = train_tokenizer("word", TEXT)
    ids = words.encode(TEXT)
    assert words.chars_per_token()[ids].sum().item() == len(words.decode(ids)) + 1  # last space


def test_bpe_corpus_learns_its_merges_from_the_training_part_only(tmp_path):
    text = "alpha beta gamma " * 200 + "zyxw " * 100  # the last 20%: words only in validation
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    data = load_corpus(path, block_size=4, val_fraction=0.2, level="bpe", vocab_size=280)
    cut = len(text) - int(len(text) * 0.2)
    assert data.tokenizer.decode(data.train) == text[:cut]
    assert data.tokenizer.decode(data.val) == text[cut:]
    merged = {p for p in data.tokenizer.token_bytes() if len(p) > 1}
    assert b" beta" in merged and not any(b"zy" in p for p in merged)
    # the same tokenizer, passed back in, gives the same tokens without training again
    again = load_corpus(path, block_size=4, val_fraction=0.2, level="bpe", tokenizer=data.tokenizer)
    assert torch.equal(again.train, data.train) and torch.equal(again.val, data.val)


def test_refusals(corpus_file):
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        train_tokenizer("byte", TEXT)
    with pytest.raises(ValueError, match="vocab_size applies to the bpe tokenizer only"):
        train_tokenizer("char", TEXT, vocab_size=300)
    with pytest.raises(ValueError, match="vocab_size must be >= 256"):
        train_tokenizer("bpe", TEXT, vocab_size=100)
    with pytest.raises(ValueError, match="not a saved tokenizer"):
        tokenizer_from_state({"kind": "sentencepiece"})
    with pytest.raises(ValueError, match="not a Hugging Face tokenizer.json"):
        BPETokenizer("{")
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 280\)"):
        train_tokenizer("bpe", TEXT, vocab_size=280).decode([280])
    with pytest.raises(ValueError, match="tokenizer is a 'char' tokenizer, but level is 'bpe'"):
        load_corpus(corpus_file, level="bpe", tokenizer=CharTokenizer("ab"))
    with pytest.raises(ValueError, match="data.tokenizer must be one of"):
        build_config({"model": {"block_size": 8}, "data": {"tokenizer": "bytes"}})
    with pytest.raises(ValueError, match="data.vocab_size is for data.tokenizer=bpe only"):
        build_config({"model": {"block_size": 8}, "data": {"vocab_size": 300}})
    with pytest.raises(ValueError, match="data.vocab_size must be >= 256"):
        build_config({"model": {"block_size": 8}, "data": {"tokenizer": "bpe", "vocab_size": 9}})
    assert isinstance(WordTokenizer.from_text("a b"), WordTokenizer)
