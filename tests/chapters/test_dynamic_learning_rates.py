"""Chapter 11 plumbing (ntk.chapters.dynamic_learning_rates) on small settings: what the
notebook's checks rely on (measurement steps, identical runs at the base width, tables)."""

from __future__ import annotations

import math

import pytest

from ntk.chapters import dynamic_learning_rates as ch

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setitem(ch.MLP, "widths", (16, 32))
    monkeypatch.setitem(ch.MLP, "base_width", 16)
    monkeypatch.setitem(ch.MLP, "steps", 25)
    monkeypatch.setitem(ch.MLP, "probe", 16)
    monkeypatch.setitem(ch.GPT_SETUP, "widths", (16, 32))
    monkeypatch.setitem(ch.GPT_SETUP, "base_width", 16)
    monkeypatch.setitem(ch.GPT_SETUP, "steps", 12)
    monkeypatch.setitem(ch.GPT_SETUP, "batch", 4)


def test_mlp_runs_measure_on_the_same_steps_and_agree_at_the_base_width(small):
    runs = [ch.mlp_run(w, 0, 2.0**-5, d) for w in (16, 32) for d in (False, True)]
    for r in runs:
        assert r.measured_at == [1, 11, 21]
        assert len(r.losses) == 25 and math.isfinite(r.score)
        assert all(set(m) == {"hidden.1", "hidden.2", "readout"} for m in r.ratios)
    static, dynamic = runs[0], runs[1]
    assert static.score == dynamic.score and static.losses == dynamic.losses  # (n/n0)^-c = 1
    wide = runs[3]  # dynamic at twice the base width: static c until the first measurement
    assert len(wide.c) == 25 and wide.c[0] == [0.5, 1.0, 1.0, 0.5] != wide.c[1]
    table = ch.exponent_table([runs[0], runs[2]], -1)
    assert list(table.index) == ["hidden.1", "hidden.2", "readout"]
    assert {"alpha @16", "alpha @32", "alpha slope", "u stderr"} <= set(table.columns)
    assert table.drop(columns=[c for c in table.columns if "stderr" in c]).notna().all().all()
    scores = ch.scores(runs)
    assert list(scores.index) == [(16, False), (16, True), (32, False), (32, True)]


def test_gpt_run_and_base_lr_sweep(small):
    run = ch.gpt_run(32, 0, 2.0**-5, True)
    assert run.measured_at == [1, 11] and len(run.c[-1]) == 14
    assert run.roles[0] == "embedding" and run.roles[-1] == "readout"
    assert run.fan_in["blocks.0.mlp.down"] == 4 * 32
    sweep = ch.sweep_base_lr("mlp", [2.0**-5, 2.0**-6])
    assert list(sweep.index) == [2.0**-5, 2.0**-6] and (sweep > 0).all()


def test_schedule_factor_is_the_schedulers_factor():
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = ch._schedule(opt, 50)
    for t in range(50):
        assert opt.param_groups[0]["lr"] == pytest.approx(ch.schedule_factor(50, t), abs=1e-12)
        opt.step()
        sched.step()


def _run(width, dynamic, losses, c=None):
    run = ch.Run(
        "mlp", width, 0, dynamic, 1e-2, ["in", "h", "out"], ["embedding", "hidden", "readout"], {}
    )
    run.losses = losses
    run.c = [c] if c else []
    return run


def test_window_ratio_and_multipliers_by_hand():
    runs = [_run(64, False, [1.0, 2.0, 2.0]), _run(64, True, [1.0, 3.0, 5.0], [0.5, 0.5, 0.0])]
    assert ch.window_ratio(runs, 64, 1, 3) == pytest.approx(2.0)  # (3 + 5) / (2 + 2)
    table = ch.window_ratios(runs, {"all": (0, 3), "first": (0, 1)})
    assert table.loc[64, "all"] == pytest.approx(9 / 5) and table.loc[64, "first"] == 1.0
    with pytest.raises(ValueError, match="width 32|at 32"):
        ch.window_ratio(runs, 32, 0, 1)
    # static muP (Adam): c = 0.5, 1, 0.5; at 4x the base width (n/n0)^(c_static - c)
    mult = ch.multipliers(runs, 64, 16)
    assert mult.to_list() == pytest.approx([1.0, 2.0, 2.0])
