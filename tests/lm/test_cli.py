"""`python -m ntk.lm.train` as a user meets it: a bad config, corpus or checkpoint is one line
on stderr and exit status 2, without a traceback (ntk.errors); a bug keeps its traceback."""

from pathlib import Path

import pytest
import yaml

from tests.test_errors import run, user_error

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def config_file(tiny, tmp_path):
    """A YAML file of the tiny run (20 steps, checkpoint every 5), and its output folder."""
    config = tiny("cli")
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


LM = ("-m", "ntk.lm.train")


def test_train_config_given_as_a_directory(tmp_path):
    user_error(run(*LM, "--config", str(tmp_path)), f"config {str(tmp_path)!r} is a directory")


def test_train_missing_config_and_unknown_key_and_bad_option(config_file, tmp_path):
    user_error(run(*LM, "--config", str(tmp_path / "no.yaml")), "no.yaml' does not exist")
    user_error(run(*LM, "--config", str(config_file), "train.tokn=3"), "unknown key train.tokn")
    user_error(run(*LM, "--nope"), "unrecognized arguments: --nope", "--help")


def test_train_empty_corpus_names_the_file(config_file, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.touch()
    done = run(*LM, "--config", str(config_file), f"data.path={empty}")
    user_error(done, f"corpus file {str(empty)!r} is empty")


def test_train_corpus_changed_since_the_checkpoint_gives_both_sizes(config_file, tmp_path):
    corpus = tmp_path / "corpus.txt"
    text = yaml.safe_load(config_file.read_text())
    corpus.write_text(Path(text["data"]["path"]).read_text(encoding="utf-8"), encoding="utf-8")
    args = ("--config", str(config_file), f"data.path={corpus}", "train.stop_step=5")
    assert run(*LM, *args).returncode == 0
    before = len(set(corpus.read_text(encoding="utf-8")))
    corpus.write_text(corpus.read_text(encoding="utf-8") + "XYZ", encoding="utf-8")
    line = user_error(run(*LM, *args[:-1]), "the vocabulary changed since checkpoint")
    assert f"now gives {before + 3} tokens, the checkpoint was trained on {before}" in line


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    for done in (
        run(*LM, "--config", str(tmp_path), NTK_DEBUG="1"),
        run(*LM, "--debug", "--config", str(tmp_path)),
    ):
        assert done.returncode == 1
        assert "Traceback" in done.stderr and "IsADirectoryError" in done.stderr


BUG_IN_THE_LOOP = """
import sys
import ntk.lm.train as t
from ntk.errors import run_cli

def one_step(*args, **kwargs):
    raise ValueError("a bug inside the training loop")

t.one_step = one_step
run_cli(t.main)
"""


def test_a_bug_keeps_its_traceback_even_as_a_value_error(config_file):
    """A ValueError raised after the input was read is not the user's: traceback, exit 1."""
    done = run("-c", BUG_IN_THE_LOOP, "--config", str(config_file))
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "a bug inside the training loop" in done.stderr
