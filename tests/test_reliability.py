"""The fifteen reproductions of a hostile-but-fair review of the public API, replayed: each
now gives a correct result or a clear error naming the argument. One test per finding; the
area fault suites (tests/*/test_faults.py, tests/scaling/test_sweep_store.py) go further."""

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ntk import (
    MLPEnsemble,
    MLPKernel,
    Parametrization,
    ParametrizationConfig,
    WideMLP,
    abc_table,
    empirical_ntk,
    gradient_descent_mse,
    gradient_descent_mse_ensemble,
    train,
)
from ntk.data import make_low_dim_task
from ntk.scaling.coord_check import coord_check, fit_exponents, from_mup
from ntk.scaling.spectral import SpectralMonitor, lanczos, power_iteration
from ntk.scaling.sweep import lr_sweep
from ntk.scaling.sweep_store import COLUMNS, import_csv
from ntk.training import TrainingDivergedError

F64 = torch.float64


def _loss(parametrization, width, lr, seed):
    return math.log2(lr) ** 2 + 1.0 / width + seed


GRID = dict(log2_lrs=[0.0, 1.0], widths=[8], seeds=[0], parametrizations=["sp"])


def test_row_01_singular_ntk_at_large_t_is_finite_and_converges():
    i = [0, 1, 2, 3, 4, 5, 0, 1]
    k = MLPKernel(2).ntk(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)))[i][:, i]
    y = torch.randn(8, dtype=F64, generator=torch.Generator().manual_seed(1))
    means = [gradient_descent_mse_ensemble(k, k[:3], y, t).mean for t in (1e12, 1e16, 1e300)]
    for m in means[1:]:
        torch.testing.assert_close(m, means[0], rtol=1e-8, atol=1e-10)
    f = gradient_descent_mse(
        k, k[:3], y, torch.zeros(8, dtype=F64), torch.zeros(3, dtype=F64), 1e300
    )
    torch.testing.assert_close(f, means[0], rtol=1e-8, atol=1e-10)


def _old_csv(path, *lines, end=""):
    path.write_text(",".join(COLUMNS) + "\r\n" + "\r\n".join(lines) + end, newline="")


def test_row_02_a_torn_csv_row_is_never_read_as_a_result(tmp_path):
    _old_csv(tmp_path / "c.csv", "sp,8,0.0,0,1.0,0.")
    with pytest.raises(ValueError, match="CSV cache of an earlier lr_sweep"):
        lr_sweep(_loss, **GRID, cache=tmp_path / "c.csv", progress=False)
    with pytest.warns(UserWarning, match="torn last line"):
        assert import_csv(tmp_path / "c.csv", tmp_path / "c.sqlite") == 0
    df = lr_sweep(_loss, **GRID, cache=tmp_path / "c.sqlite", progress=False)
    assert df["loss"].tolist() == [0.125, 1.125]  # the torn cell ran again


def test_row_03_a_row_glued_to_a_torn_one_refuses_the_file(tmp_path):
    _old_csv(tmp_path / "c.csv", "sp,8,0.0,0,1.0,0.7sp,8,1.0,0,2.0,1.125", end="\r\n")
    with pytest.raises(ValueError, match="damaged line"):
        import_csv(tmp_path / "c.csv", tmp_path / "c.sqlite")


def test_row_04_concurrent_sweeps_do_not_duplicate_cells(tmp_path):
    # two sweeps in two processes: tests/scaling/test_sweep_store.py; here the claim itself
    from ntk.scaling.sweep_store import SweepStore, cell_key

    cells = [cell_key("sp", 8, a, 0) for a in (0.0, 1.0)]
    with SweepStore(tmp_path / "s.sqlite") as a, SweepStore(tmp_path / "s.sqlite") as b:
        a.start_heartbeat()
        b.start_heartbeat()
        got_a, _ = a.claim(cells, 1)
        got_b, _ = b.claim(cells, 2)
        assert got_a == cells[:1] and got_b == cells[1:]  # each cell claimed once


def test_row_05_complex_inputs_are_refused_everywhere():
    x = torch.randn(4, 3)
    z = torch.complex(x, x)
    calls = {
        "x1": lambda: MLPKernel().nngp(z),
        "y_train": lambda: gradient_descent_mse_ensemble(
            MLPKernel().ntk(x), None, torch.complex(x[:, 0], x[:, 1]).to(torch.complex128), 1.0
        ),
        "x_train": lambda: train(WideMLP(3, 8), z, x[:, :1], steps=1),
        "x": lambda: MLPEnsemble(2, 3, 8)(z),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=f"{name} must (be|hold) real"):
            call()
    with pytest.raises(TypeError, match="must be real"):
        empirical_ntk(WideMLP(3, 8), z)


def test_row_06_diverging_readout_training_raises_and_writes_nothing():
    ens = MLPEnsemble(2, 3, 8)
    before = ens.weights[-1].detach().clone()
    with pytest.raises(TrainingDivergedError):
        ens.train_readout(torch.randn(5, 3), torch.randn(5), learning_rate=1e6)
    assert torch.equal(ens.weights[-1], before)


def test_row_07_nan_data_is_refused():
    ens, x, y = MLPEnsemble(2, 3, 8), torch.randn(5, 3), torch.randn(5)
    with pytest.raises(ValueError, match="y_train contains NaN"):
        ens.train_readout(x, y * math.nan)
    with pytest.raises(ValueError, match="y_train contains NaN"):
        ens.sample_readout_posterior(x, y * math.nan)
    with pytest.raises(ValueError, match="x contains NaN"):
        ens(torch.full((2, 5, 3), math.nan))
    with pytest.raises(ValueError, match="contains NaN"):
        coord_check(
            lambda w: WideMLP(3, w),
            [8],
            (x * math.nan, y[:, None]),
            optimizer=_sgd(0.1),
            loss_fn=F.mse_loss,
        )


def test_row_08_overflowing_weight_std_is_refused():
    with pytest.raises(ValueError, match="weight_std"):
        WideMLP(3, 16, weight_std=1e200)


def test_row_09_spectral_norms_at_extreme_scales_and_for_complex_weights():
    w = torch.randn(20, 10, generator=torch.Generator().manual_seed(0))
    for scale in (1e-30, 1e19):
        for estimate in (power_iteration, lanczos):
            ref, _ = estimate(w, generator=torch.Generator().manual_seed(1))
            got, _ = estimate(w * scale, generator=torch.Generator().manual_seed(1))
            assert got == pytest.approx(ref * scale, rel=1e-5)
    g = torch.Generator().manual_seed(2)
    wc = torch.complex(torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)).to(
        torch.complex128
    )
    assert lanczos(wc)[0] == pytest.approx(torch.linalg.matrix_norm(wc, ord=2).item(), rel=1e-8)


def test_row_10_sweep_grids_are_checked():
    for name, value in [("parametrizations", "sp"), ("log2_lrs", [math.nan]), ("seeds", [0.5])]:
        with pytest.raises((TypeError, ValueError), match=name):
            lr_sweep(_loss, **{**GRID, name: value}, progress=False)


def _sgd(lr):
    return lambda m: torch.optim.SGD(m.parameters(), lr=lr)


def test_row_11_coord_check_stops_when_training_diverges():
    x = torch.randn(8, 3)
    with pytest.raises(TrainingDivergedError) as err:
        coord_check(
            lambda w: WideMLP(3, w),
            [8, 16],
            (x, x[:, :1]),
            optimizer=_sgd(1e8),
            loss_fn=F.mse_loss,
            steps=20,
        )
    assert err.value.step >= 1


def test_row_12_negative_learning_rate_factors_are_refused():
    x = torch.randn(8, 3)
    with pytest.raises(ValueError, match=r"lr_schedule\(0\)"):
        train(WideMLP(3, 8), x, x[:, :1], steps=5, lr_schedule=lambda s: -1.0)


def test_row_13_relu_ntk_at_zero_variance_agrees_across_entry_points():
    k = MLPKernel(depth=1, weight_std=1, bias_std=0.0, parametrization="standard", width=100)
    x = torch.zeros(2, 3)
    torch.testing.assert_close(k.ntk(x), k.ntk(x, x), rtol=0, atol=0)
    assert float(k.ntk(x)[0, 0]) == 1.25  # neural-tangents' value


def test_row_14_obscure_errors_now_name_the_argument(tmp_path):
    cases = [
        ("bias_std", lambda: MLPKernel(bias_std=1e200)),
        ("width", lambda: MLPKernel(width=10**400, parametrization="sp")),
        ("degree", lambda: make_low_dim_task(8, 8, 4, degree=20_000)),
        ("log2_lrs", lambda: lr_sweep(_loss, **{**GRID, "log2_lrs": [1e6]}, progress=False)),
        ("x1 has no features", lambda: MLPKernel(3).nngp(torch.zeros(3, 0))),
        ("quadrature_degree", lambda: MLPKernel(activation="tanh", quadrature_degree=372)),
        (
            "model has uninitialized",
            lambda: Parametrization(nn.Sequential(nn.LazyLinear(4)), ParametrizationConfig("mup")),
        ),
        ("dtype", lambda: MLPEnsemble(2, 3, 8, dtype="float32")),
        ("roles", lambda: abc_table("mup", roles=None)),
        ("df lacks columns", lambda: from_mup(pd.DataFrame({"a": [1]}))),
        ("v must be a vector", lambda: power_iteration(torch.ones(3, 2), torch.ones(3))),
    ]
    for name, call in cases:
        with pytest.raises((TypeError, ValueError), match=name):
            call()
    # finite answers where the old errors were obscure: a degree-200 task, half-precision norms
    task = make_low_dim_task(8, 8, 4, degree=200)
    assert torch.isfinite(task.y_train).all()
    assert math.isfinite(SpectralMonitor(WideMLP(3, 8).half()).log(0)[0]["sigma_w"])


def test_row_15_silent_coercions_are_refused():
    x = torch.randn(8, 3)
    df = coord_check(
        lambda w: WideMLP(3, w), [8, 16], (x, x[:, :1]), optimizer=_sgd(0.1), loss_fn=F.mse_loss
    )
    cases = [
        ("seed", lambda: MLPEnsemble(2, 3, 8, seed=1.7)),
        ("exact", lambda: SpectralMonitor(WideMLP(3, 8), exact="no")),
        (
            "modules",
            lambda: coord_check(
                lambda w: WideMLP(3, w), [8], (x, x[:, :1]), optimizer=_sgd(0.1), modules=["nope"]
            ),
        ),
        ("min_size", lambda: fit_exponents(df, min_size=math.nan)),
    ]
    for name, call in cases:
        with pytest.raises((TypeError, ValueError), match=name):
            call()
