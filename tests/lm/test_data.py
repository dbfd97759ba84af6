"""Character data: the pinned default corpus, text files, deterministic batches."""

import hashlib

import pytest
import torch

from ntk.lm.data import (
    CharTokenizer,
    default_text,
    eval_batches,
    load_corpus,
    sample_batch,
)

# sha256 of the default corpus's UTF-8 bytes: the same text on every machine
DEFAULT_SHA256 = "16fe14642aa8a11cd09596a06be79283c3b6de92579ab5225af92dc0ad88a353"


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(block_size=64)


def test_default_corpus_is_pinned(corpus):
    text = default_text()
    assert len(text) == 1_100_000
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == DEFAULT_SHA256
    assert corpus.tokenizer.alphabet == " abcdefghijklmnopqrstuvwxyz"
    assert (len(corpus.train), len(corpus.val)) == (990_000, 110_000)
    assert corpus.tokenizer.decode(torch.cat([corpus.train, corpus.val])) == text


def test_tokenizer_round_trip_and_errors():
    tok = CharTokenizer.from_text("héllo wörld\n")
    assert tok.vocab_size == len(set("héllo wörld\n"))
    ids = tok.encode("wörld héllo")
    assert ids.dtype == torch.int64 and tok.decode(ids) == "wörld héllo"
    with pytest.raises(ValueError, match="'z', not in the tokenizer's alphabet"):
        tok.encode("zoo")
    assert tok.vocab_size == 10
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 10\)"):
        tok.decode([0, 10])
    with pytest.raises(ValueError, match="sorted order"):
        CharTokenizer("ba")


def test_text_file_source(tmp_path):
    path = tmp_path / "poem.txt"
    text = "Ünïcode text, line one.\nLine two: ça va.\n" * 20
    path.write_text(text, encoding="utf-8")
    data = load_corpus(path, block_size=16, val_fraction=0.25)
    assert data.source == str(path)
    assert data.tokenizer.decode(torch.cat([data.train, data.val])) == text
    assert len(data.val) == int(len(text) * 0.25)


def test_text_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt' does not exist"):
        load_corpus(tmp_path / "missing.txt")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8 text \\(byte 3"):
        load_corpus(latin1)
    short = tmp_path / "short.txt"
    short.write_text("a" * 100, encoding="utf-8")
    with pytest.raises(ValueError, match="too short for block_size 64"):
        load_corpus(short, block_size=64)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        load_corpus(short, val_fraction=1.0)


def test_batches_are_deterministic_and_shifted(corpus):
    def batches(seed):
        g = torch.Generator().manual_seed(seed)
        return [sample_batch(corpus.train, 4, 32, g) for _ in range(3)]

    first, again, other = batches(0), batches(0), batches(1)
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(first[0][0], other[0][0])
    x, y = first[0]
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
    # pinned: torch's CPU generator draws the same offsets (22236, ...) on every machine
    assert corpus.tokenizer.decode(x[0]) == "nmibp ao oonzp wo ofxbnb hk uzs "
    assert torch.equal(x[0], corpus.train[22236 : 22236 + 32])


def test_batch_state_can_be_saved_and_resumed(corpus):
    g = torch.Generator().manual_seed(3)
    sample_batch(corpus.train, 2, 8, g)
    state = g.get_state()
    expected = sample_batch(corpus.train, 2, 8, g)
    resumed = torch.Generator()
    resumed.set_state(state)
    assert torch.equal(sample_batch(corpus.train, 2, 8, resumed)[0], expected[0])


def test_eval_batches_are_fixed_and_span_the_split(corpus):
    batches = eval_batches(corpus.val, batch_size=8, block_size=64, n_batches=5)
    assert len(batches) == 5 and all(x.shape == (8, 64) for x, _ in batches)
    assert torch.equal(batches[0][0][0], corpus.val[:64])  # first window at offset 0
    assert torch.equal(batches[-1][1][-1], corpus.val[-64:])  # last target is the last token
    again = eval_batches(corpus.val, batch_size=8, block_size=64, n_batches=5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))


def test_batch_errors(corpus):
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="fewer than block_size \\+ 1"):
        sample_batch(corpus.train[:10], 2, 10, g)
    with pytest.raises(TypeError, match="1-d int64"):
        sample_batch(corpus.train.float(), 2, 8, g)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        sample_batch(corpus.train, 2, 8, 0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        eval_batches(corpus.val, 0, 8, 1)
