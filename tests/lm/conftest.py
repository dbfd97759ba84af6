"""A tiny corpus file and a tiny run config shared by the training-system tests."""

import pytest

from ntk.lm.config import build_config
from ntk.lm.corpus import default_chain


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """20,000 characters of the default word chain (generating the full corpus takes seconds)."""
    path = tmp_path_factory.mktemp("corpus") / "chain.txt"
    path.write_text(default_chain().sample(20_000, seed=3), encoding="utf-8")
    return path


@pytest.fixture
def tiny(corpus_file, tmp_path):
    """tiny(**overrides) -> a validated RunConfig of a 20-step muP run at width 2 x base."""

    def make(out="run", **overrides):
        data = {
            "model": {"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 16},
            "parametrization": {"name": "mup", "base_width": 16},
            "optim": {"lr": 1e-2, "warmup_tokens": 1024},
            "data": {"path": str(corpus_file), "eval_tokens": 512},
            "train": {"tokens": 20 * 256, "tokens_per_step": 256, "eval_every": 10, "threads": 1},
            "ema": {"enabled": True, "beta": 0.8},
            "log": {"out_dir": str(tmp_path / out), "progress": False},
            "checkpoint": {"every": 5},
        }
        return build_config(data, list(overrides.items()))

    return make
