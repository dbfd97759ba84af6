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


def test_script_writes_its_figures(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, str(root / "ntk" / "depth_transfer.py"), "--depths", "2", "4"]
    cmd += "--check-depths 2 4 --widths 64 --joint-depths 2 --seeds 0 --log2-lrs -6 -5".split()
    cmd += "--gpt-depths 2 4 --gpt-widths 32".split()
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {p.name for p in tmp_path.glob("*.png")}
    assert names == {
        "12_depth_coord_check.png",
        "12_depth_coord_check_gpt.png",
        "12_depth_transfer.png",
        "12_depth_transfer_gpt.png",
        "12_width_depth.png",
        "12_width_depth_gpt.png",
    }
    assert proc.stdout.count("drift (log2 lr") == 2


def test_gpt_depth_coordinate_check_last_block():
    """The GPT's last block: width-only muP grows with depth, depth-muP does not."""
    from ntk.chapters.depth import depth_exponents_table, gpt_depth_coord_check

    df = gpt_depth_coord_check([2, 4, 8], parametrizations=("mup", "depth-mup"))
    exps = depth_exponents_table(df, step=1).loc["blocks@1"]
    assert exps[("act_size", "mup")] > 0.3 and exps[("delta_size", "mup")] > 0.5, exps
    assert abs(exps[("act_size", "depth-mup")]) < 0.25, exps
    assert abs(exps[("delta_size", "depth-mup")]) < 0.25, exps


def test_cost_of_depth_is_the_paired_loss_change_at_the_shallow_optimum():
    import pandas as pd

    from ntk.chapters.depth import cost_of_depth

    rows = []
    for seed in (0, 1):
        for lr, shallow, deep in ((-6.0, 2.0, 1.5), (-5.0, 1.0, 3.0), (-4.0, 1.5, 0.5)):
            cell = dict(parametrization="mup", log2_lr=lr, lr=2**lr, seed=seed)
            rows.append(dict(cell, depth=2, loss=shallow))
            rows.append(
                dict(parametrization="mup", depth=8, log2_lr=lr, seed=seed, loss=deep + seed)
            )
    cost = cost_of_depth(pd.DataFrame(rows))
    # the 2-block optimum is 2^-5 (loss 1.0); there the 8-block losses are 3.0 and 4.0
    assert cost.loc["mup", "log2_lr"] == -5.0
    assert cost.loc["mup", 0] == 2.0 and cost.loc["mup", 1] == 3.0


def test_run_transfer_names_a_bad_model():
    import pytest

    from ntk.chapters.depth import run_transfer

    with pytest.raises(ValueError, match="model"):
        run_transfer(model="cnn", depths=[2], log2_lrs=[-5.0])
