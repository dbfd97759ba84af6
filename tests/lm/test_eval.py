"""`python -m ntk.lm.eval`: the run's own validation loss, bit for bit, and bits per character."""

import csv
import json
import math
from pathlib import Path

import pytest

from ntk.lm.eval import cli, eval_windows, evaluate_run, main
from ntk.lm.runs import load_run
from ntk.lm.train import train

from .test_sample import command, exit_code

pytestmark = pytest.mark.usefixtures("single_thread")


def last_row(out_dir) -> dict[str, str]:
    with open(Path(out_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))[-1]


def test_eval_repeats_the_runs_last_validation_loss(tiny, capsys):
    config = tiny("ev")
    train(config)
    out = config.log.out_dir
    final = last_row(out)
    capsys.readouterr()  # the training's messages
    assert main([out, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["loss"] == float(final["val_loss_max"])  # the same windows, bit for bit
    assert result["tokens"] == 512 // 16 * 16  # data.eval_tokens in windows of 16
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]), rel=1e-12)
    assert result["bits_per_token"] == pytest.approx(result["loss"] / math.log(2), rel=1e-12)
    assert result["bits_per_char"] == result["bits_per_token"]  # one character per token
    assert main([out, "--json", "--ema"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == float(final["ema_val_loss_max"])
    assert main([out, "--split", "train", "--tokens", "1024", "--json"]) == 0
    train_result = json.loads(capsys.readouterr().out)
    assert train_result["split"] == "train" and train_result["tokens"] == 1024
    assert train_result["loss"] != result["loss"]
    done = command("ntk.lm.eval", out)  # the command line, human-readable
    assert done.returncode == 0, done.stderr
    assert f"loss {result['loss']:.6f} nats/token" in done.stdout
    for args, message in [
        ([out, "--split", "test"], "split must be one of ('val', 'train')"),
        ([out, "--tokens", "lots"], "--tokens must be a token count"),
        ([out, "--tokens", "0"], "--tokens must be a whole number of tokens >= 1"),
    ]:
        assert exit_code(cli, args) == 2
        err = capsys.readouterr().err
        assert err.startswith("python -m ntk.lm.eval: error: ") and message in err, err
        assert err.count("\n") == 1


def test_bits_per_char_counts_the_characters_of_the_targets(tiny):
    config = tiny("bpe", **{"data.tokenizer": "bpe", "data.vocab_size": 300, "train.tokens": 2560})
    train(config)
    run = load_run(config.log.out_dir)
    result = evaluate_run(run)
    batches = eval_windows(run.corpus().val, 16, 512, 256)
    chars = sum(len(run.tokenizer.decode(row)) for _, y in batches for row in y)  # ASCII text
    assert result["chars_per_token"] == pytest.approx(chars / result["tokens"], rel=1e-12)
    assert result["chars_per_token"] > 1.1  # 44 merges: some tokens hold several characters
    expected = result["bits_per_token"] / result["chars_per_token"]
    assert result["bits_per_char"] == pytest.approx(expected, rel=1e-12)
