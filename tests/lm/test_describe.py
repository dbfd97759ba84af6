"""The start-up summary, the config keys of --help, and train.tokens growing on resume."""

import csv
from pathlib import Path

import pytest

from ntk.lm.config import RunConfig, flatten
from ntk.lm.data import load_corpus
from ntk.lm.train import Processes, main, setup, train

pytestmark = pytest.mark.usefixtures("single_thread")


def rows(out_dir) -> list[dict[str, str]]:
    with open(Path(out_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_help_lists_every_config_key_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = {}  # "section.key": "type = default" from the lines indented by exactly 4
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("    ") and not line.startswith("     "):
            key, rest = line.strip().split("  ", 1)
            listed[key] = rest
    expected = flatten(RunConfig().to_dict())
    assert set(listed) == set(expected)  # every key the loader accepts, and no other
    yaml_text = {None: "null", True: "true", False: "false"}
    for key, value in expected.items():
        shown = repr(value) if type(value) in (int, float, str) else yaml_text[value]
        assert f" = {shown}" in listed[key], (key, listed[key])
    assert listed["data.tokenizer"] == "str = 'char'"
    assert listed["train.tokens"] == "int = 1000000 (tokens: int or e.g. '2M')"


def test_summary_names_corpus_tokenizer_vocabulary_parameters_and_splits(tiny, corpus_file, capsys):
    config = tiny("sum", **{"train.tokens": 2560, "data.tokenizer": "word"})
    train(config)
    out = capsys.readouterr().out
    data = load_corpus(corpus_file, block_size=16, level="word")
    model = setup(config, Processes()).model
    n_params = sum(p.numel() for p in model.parameters())
    assert f"corpus: {corpus_file}" in out
    assert f"tokenizer: word, vocabulary of {data.vocab_size} tokens" in out
    chars = sum(len(data.tokenizer.decode([t])) + 1 for t in data.train.tolist())
    assert f"tokens: train {len(data.train):,} ({chars:,} characters)" in out
    assert f"val {len(data.val):,}" in out
    assert f"parameters: {n_params:,} " in out
    assert "model: 1 blocks, n_embd 32, 2 heads of 16, block size 16" in out
    assert "budget: 2,560 tokens = 10 steps of 256 tokens" in out
    assert out.index("corpus:") < out.index("step 0: phase 0")  # before the first step


def test_train_tokens_grows_on_resume_bitwise_with_constant_lr(tiny):
    """decay constant: 10 steps, then train.tokens raised to 20 = 20 steps from the start."""
    constant = {"optim.decay": "constant"}
    long = tiny("long", **constant)
    train(long)
    grown = tiny("grown", **constant, **{"train.tokens": 10 * 256})
    train(grown)
    train(tiny("grown", **constant))  # the same run, train.tokens 20 * 256
    for key in ("loss", "lr", "val_loss", "ema_val_loss_max"):
        assert [r[key] for r in rows(grown.log.out_dir)] == [r[key] for r in rows(long.log.out_dir)]


def test_train_tokens_grows_on_resume_at_the_final_lr_of_a_decayed_schedule(tiny, capsys):
    """cosine: the first 10 steps are the 10-step run's; the next 10 train at min_lr_ratio."""
    short = tiny("short", **{"train.tokens": 10 * 256})
    train(short)
    train(short)  # finished: nothing to do, and it says how to go on
    assert "the run is complete (step 10, train.tokens 2560)" in capsys.readouterr().out
    assert len(rows(short.log.out_dir)) == 10
    train(tiny("short"))  # train.tokens 20 * 256
    log = rows(short.log.out_dir)
    assert [int(r["step"]) for r in log] == list(range(1, 21))
    assert [float(r["lr"]) for r in log[10:]] == [0.1 * 1e-2] * 10  # min_lr_ratio x lr
    assert float(log[9]["lr"]) > 0.1 * 1e-2  # the last step of the decay, not yet at its end
    with pytest.raises(ValueError, match="less than the checkpoint's 5,120; a run's budget may"):
        train(tiny("short", **{"train.tokens": 15 * 256}))
