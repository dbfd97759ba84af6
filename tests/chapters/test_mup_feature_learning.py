"""Chapter 05 (ntk.chapters.mup_feature_learning): muP at one learning rate, and its checks."""

import math

import mup
import pandas as pd
import pytest
import torch

from ntk.chapters import mup_feature_learning as mfl

pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in conftest.py

TINY = mfl.Setup(dim=16, n_directions=2, n_train=256, n_test=256, steps=100, batch_size=64)


def test_musgd_learning_rates_follow_the_two_layer_derivation():
    """mup scales the first layer and the readout weights by n / base_width, the readout
    output by base_width / n: muP of a two-layer net (and SP at the base width)."""
    for width, mult in ((10, 1.0), (200, 20.0)):
        net = mfl.build_model("mup", width, mfl.Setup())
        opt = mup.MuSGD(net.parameters(), lr=1.0)
        names = {id(p): n for n, p in net.named_parameters()}
        lrs = {names[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}
        assert lrs == {
            "hidden.0.weight": mult,
            "hidden.0.bias": mult,
            "readout.weight": mult,
            "readout.bias": 1.0,
        }
        assert net.readout.width_mult() == mult


def test_cosine_schedule_integrates_to_half_the_steps():
    """sum_{s<T} (1 + cos(pi s / T)) / 2 = T/2 + 1/2: the training time of the lazy nets."""
    schedule = mfl.Setup(steps=400).schedule()
    assert sum(schedule(s) for s in range(400)) == pytest.approx(200.5, abs=1e-9)


def test_mup_learns_the_subspace_and_sp_diverges_at_width():
    task = TINY.task()
    mup_run = mfl.train_one("mup", 50, 0, TINY, task)
    assert math.isfinite(mup_run.row["test_loss"])
    assert mup_run.row["alignment"] > 3 * mup_run.row["alignment_init"]
    sp_wide = mfl.train_one("sp", 2000, 0, TINY, task)
    assert sp_wide.row["diverged_at"] is not None and sp_wide.history is None
    assert mfl.train_one("sp", 10, 0, TINY, task).row["diverged_at"] is None


def test_ntk_runs_are_centered():
    task = TINY.task()
    run = mfl.train_one("ntk", 64, 0, TINY, task)
    zero_predictor = 0.5 * task.y_test.pow(2).mean().item()
    assert run.history.test_loss[0] == pytest.approx(zero_predictor, rel=1e-5)
    assert abs(run.row["alignment"] / run.row["alignment_init"] - 1) < 0.1


LAZY_KERNEL = torch.ones(4, 1)  # NTK regression's held-out predictions in the hand-made sweep


def _sweep(
    mup_losses, ntk_align=1.0, sp_diverged=(None, 4, 4, 4), mup_align0=0.06, ntk_distance=0.5
) -> mfl.Sweep:
    """A hand-made sweep at widths 10..1000 (base width 10), two muP seeds; the NTK nets sit at
    relative distance ntk_distance * width^-1/2 from LAZY_KERNEL (None: they predict 0)."""
    widths = [10, 30, 100, 1000]
    rows, predictions = [], {}
    for i, w in enumerate(widths):
        for seed, sign in ((0, 1), (1, -1)):
            rows.append(
                dict(
                    parametrization="mup",
                    width=w,
                    seed=seed,
                    test_loss=mup_losses[i],
                    alignment=0.7,
                    alignment_init=mup_align0,
                    diverged_at=None,
                )
            )
            predictions[("mup", w, seed)] = torch.full((4, 1), 1.0 + sign * w**-0.5)
        e = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])  # norm 2 = ||LAZY_KERNEL||
        predictions[("ntk", w, 0)] = (
            torch.zeros(4, 1) if ntk_distance is None else LAZY_KERNEL + ntk_distance * w**-0.5 * e
        )
        rows.append(
            dict(
                parametrization="ntk",
                width=w,
                seed=0,
                test_loss=0.44,
                alignment=0.06 * ntk_align,
                alignment_init=0.06,
                diverged_at=None,
            )
        )
        rows.append(
            dict(
                parametrization="sp",
                width=w,
                seed=0,
                test_loss=0.1,
                alignment=0.5,
                alignment_init=0.06,
                diverged_at=sp_diverged[i],
            )
        )
    return mfl.Sweep(pd.DataFrame(rows), predictions=predictions)


KERNELS = {
    "NNGP posterior": 0.1,
    "NTK regression (t = inf)": 0.17,
    "NTK regression (lazy nets' t)": 0.441,
}


def test_sweep_statistics_on_a_known_sweep():
    sweep = _sweep([0.13, 0.06, 0.035, 0.03])
    assert list(sweep.gaps()) == pytest.approx([0.07, 0.025, 0.005])
    assert list(sweep.spread()) == pytest.approx([w**-0.5 for w in (10, 30, 100, 1000)])
    with pytest.raises(ValueError, match="no 'mup' runs"):
        mfl.Sweep(sweep.table[sweep.table.parametrization != "mup"]).mean("mup")


def test_claims_hold_on_a_good_sweep_and_fail_when_false():
    good = dict(mfl.claims(_sweep([0.13, 0.06, 0.035, 0.03]), KERNELS, LAZY_KERNEL))
    assert all(good.values()), good
    failing = {
        "falls at every step": _sweep([0.13, 0.06, 0.035, 0.036]),
        "smaller than the one before": _sweep([0.13, 0.06, 0.05, 0.01]),
        "stays within 10%": _sweep([0.13, 0.06, 0.035, 0.03], ntk_align=1.5),
        "diverges at every wider one": _sweep(
            [0.13, 0.06, 0.035, 0.03], sp_diverged=(None, 4, None, 4)
        ),
        "beats NNGP": _sweep([0.13, 0.2, 0.035, 0.03]),
        "r/d = 1/16 within 4": _sweep([0.13, 0.06, 0.035, 0.03], mup_align0=0.1),
        # a zero predictor: distance 1 at every width, so neither approach claim holds
        "NTK regression": _sweep([0.13, 0.06, 0.035, 0.03], ntk_distance=None),
    }
    for phrase, sweep in failing.items():
        claims = mfl.claims(sweep, KERNELS, LAZY_KERNEL)
        verdicts = {text: ok for text, ok in claims if phrase in text}
        assert verdicts and not any(verdicts.values()), phrase


def test_distance_to_kernel_is_relative_and_one_for_the_zero_predictor():
    near, zero = _sweep([0.13, 0.06, 0.035, 0.03]), _sweep([0.1] * 4, ntk_distance=None)
    d = mfl.distance_to_kernel(near, "ntk", LAZY_KERNEL)
    assert list(d.index) == [10, 30, 100, 1000]
    assert list(d) == pytest.approx([0.5 * w**-0.5 for w in d.index], rel=1e-5)  # float32
    assert list(mfl.distance_to_kernel(zero, "ntk", LAZY_KERNEL)) == pytest.approx([1.0] * 4)


def test_kernel_baselines_are_finite_and_lazy_time_is_before_convergence():
    kernels = mfl.kernel_baselines(TINY)
    assert all(math.isfinite(v) and 0 < v < 1 for v in kernels.values())
    far = mfl.kernel_baselines(mfl.Setup(**{**TINY.__dict__, "lr": 1e6}))
    assert far["NTK regression (lazy nets' t)"] == pytest.approx(
        far["NTK regression (t = inf)"], rel=1e-3
    )


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n_directions"):
        mfl.Setup(dim=4, n_directions=5)
    with pytest.raises(ValueError, match="parametrization"):
        mfl.build_model("mfp", 10, TINY)
    with pytest.raises(ValueError, match="seeds"):
        mfl.run_sweep((10,), {"bad": (0,)}, TINY)
