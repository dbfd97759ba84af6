"""`python -m ntk.lm.sample`: a BPE run resumes bitwise and samples without its corpus file."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ntk.lm.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ntk.lm.runs import load_run, stored_tokenizer
from ntk.lm.sample import cli, main, sample
from ntk.lm.tokenizers import BPETokenizer
from ntk.lm.train import train

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parents[2]
BPE = {"data.tokenizer": "bpe", "data.vocab_size": 300}


def exit_code(cli, argv: list) -> int:
    """The exit status of a command line run in this process (`ntk.errors.run_cli` exits)."""
    with pytest.raises(SystemExit) as done:
        cli([str(a) for a in argv])
    return done.value.code


def command(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, timeout=120
    )


def losses(out_dir) -> list[str]:
    with open(Path(out_dir) / "metrics.csv", newline="") as f:
        return [r["loss"] for r in csv.DictReader(f)]


def test_bpe_run_resumes_bitwise_and_samples_after_its_corpus_is_deleted(
    tiny, corpus_file, tmp_path
):
    corpus = tmp_path / "own.txt"
    shutil.copy(corpus_file, corpus)
    ref = tiny("ref", **BPE, **{"data.path": str(corpus)})
    train(ref)
    part = tiny("bpe", **BPE, **{"data.path": str(corpus), "train.stop_step": 10})
    train(part)
    train(tiny("bpe", **BPE, **{"data.path": str(corpus)}))  # resumes at step 10
    assert losses(part.log.out_dir) == losses(ref.log.out_dir)
    state = load_checkpoint(Path(part.log.out_dir) / CHECKPOINT_NAME)
    assert state["tokenizer"]["kind"] == "bpe"
    assert BPETokenizer(state["tokenizer"]["json"]).vocab_size == 300
    path = Path(part.log.out_dir) / CHECKPOINT_NAME  # what a resumed run encodes with:
    assert stored_tokenizer(path).state() == state["tokenizer"]  # read alone (memory-mapped)
    corpus.unlink()

    run = load_run(part.log.out_dir)
    assert run.model.config.vocab_size == 300
    prompt = "the "  # not necessarily words of the chain: bytes always encode
    ids = run.tokenizer.encode(prompt)[None]
    greedy = run.model.generate(ids, 24, temperature=0)
    expected = run.tokenizer.decode(greedy[0])
    assert sample(run, prompt, max_new_tokens=24, temperature=0) == [expected]
    done = command(
        "ntk.lm.sample", part.log.out_dir, "--prompt", prompt,
        "--max-new-tokens", "24", "--temperature", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n" and expected.startswith(prompt)
    # seeded sampling: the same seed gives the same text, samples differ from each other
    a = sample(run, prompt, max_new_tokens=24, num_samples=4, seed=5)
    assert a == sample(run, prompt, max_new_tokens=24, num_samples=4, seed=5)
    assert len(set(a)) > 1
    # evaluation needs the text itself: a clear error
    done = command("ntk.lm.eval", part.log.out_dir)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr


def test_sample_command_errors_are_one_line_and_exit_2(tiny, tmp_path, capsys):
    config = tiny("chars", **{"train.tokens": 5 * 256})
    train(config)
    out = config.log.out_dir
    done = command("ntk.lm.sample", str(tmp_path / "nowhere"), "--prompt", "a")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"python -m ntk.lm.sample: error: run {str(tmp_path / 'nowhere')!r} is neither a run "
        "directory nor a checkpoint\n"
    )
    cases = [
        ([str(tmp_path), "--prompt", "a"], "holds no checkpoint.pt"),
        ([out, "--prompt", "Z"], "not in the tokenizer's alphabet"),
        ([out, "--prompt", ""], "prompt must be a non-empty string"),
        ([out, "--prompt", "a", "--temperature", "-1"], "temperature must be a finite number"),
        ([out, "--prompt", "a", "--top-k", "0"], "top_k must be >= 1"),
        ([out, "--prompt", "a", "--num-samples", "0"], "num_samples must be >= 1"),
        ([out, "--prompt", "a", "--device", "gpu"], "device must name a torch device"),
        ([out, "--prompt", "a", "--seed", "-1"], "seed must be >= 0"),
    ]  # fmt: skip
    for args, message in cases:
        assert exit_code(cli, args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("python -m ntk.lm.sample: error: ") and message in err, err
        assert err.count("\n") == 1, err
    assert main([out, "--prompt", "ab", "--max-new-tokens", "5", "--ema"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("ab") and len(text) == len("ab") + 5 + 1  # 5 characters, newline
    run = load_run(out, ema=True)
    state = load_checkpoint(Path(out) / CHECKPOINT_NAME)
    for name, p in run.model.named_parameters():
        assert torch.equal(p, state["ema"]["average"][name]), name
    no_ema = tiny("plain", **{"train.tokens": 5 * 256, "ema.enabled": False})
    train(no_ema)
    assert exit_code(cli, [no_ema.log.out_dir, "--prompt", "a", "--ema"]) == 2
    assert "kept no EMA" in capsys.readouterr().err


def test_a_checkpoint_written_before_tokenizers_were_saved_resumes_and_samples(tiny):
    """No "tokenizer" entry and no data.tokenizer / data.vocab_size keys: the config reads
    them as their defaults (char) and the tokenizer is rebuilt from the corpus."""
    ref = tiny("ref")
    train(ref)
    old = tiny("old", **{"train.stop_step": 10})
    train(old)
    path = Path(old.log.out_dir) / CHECKPOINT_NAME
    state = load_checkpoint(path)
    del state["tokenizer"], state["config"]["data"]["tokenizer"]
    del state["config"]["data"]["vocab_size"]
    save_checkpoint(path, state)  # a valid (digest-carrying) checkpoint of the older layout
    run = load_run(old.log.out_dir)
    assert run.tokenizer.kind == "char" and run.tokenizer.vocab_size == run.model.config.vocab_size
    assert sample(run, "ab", max_new_tokens=3, temperature=0)[0].startswith("ab")
    train(tiny("old"))
    assert losses(old.log.out_dir) == losses(ref.log.out_dir)
