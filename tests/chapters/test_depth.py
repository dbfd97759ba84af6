"""Chapter 12's training runs: at the base depth the depth rules change nothing."""

import math

from ntk.chapters.depth import BASE_DEPTH, train_gpt, train_residual


def test_residual_runs_agree_at_the_base_depth_and_differ_deeper():
    base = {p: train_residual(p, BASE_DEPTH, 2**-6, 0, steps=5) for p in ("mup", "completep")}
    assert base["mup"] == base["completep"] and math.isfinite(base["mup"])
    deep = {p: train_residual(p, 8, 2**-6, 0, steps=5) for p in ("mup", "completep")}
    assert deep["mup"] != deep["completep"]


def test_gpt_runs_agree_at_the_base_depth():
    losses = [train_gpt(p, BASE_DEPTH, 2**-6, 0, steps=3) for p in ("mup", "depth-mup")]
    assert losses[0] == losses[1] and 0 < losses[0] < 2 * math.log(30)
