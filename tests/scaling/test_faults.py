"""Scaling tools under faults: spectral norms at any scale and for complex or half-precision
weights, coordinate checks that diverge, filters that select nothing, lazy modules."""

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ntk.models import WideMLP
from ntk.scaling import Parametrization, ParametrizationConfig, abc_table
from ntk.scaling.coord_check import coord_check, fit_exponents, from_mup
from ntk.scaling.spectral import SpectralMonitor, lanczos, power_iteration
from ntk.training import TrainingDivergedError


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1.0, 1e19, 1e30])
@pytest.mark.parametrize("estimate", [power_iteration, lanczos])
def test_spectral_norms_at_any_scale(scale, estimate):
    # the estimate is scale-equivariant (same start vector): float32 beyond 1e19 used to be
    # NaN (W^T W v overflowed), below 1e-20 zero (it underflowed)
    w = torch.randn(20, 10, generator=torch.Generator().manual_seed(0))
    ref, _ = estimate(w, n_iter=10, generator=torch.Generator().manual_seed(1))
    sigma, _ = estimate(w * scale, n_iter=10, generator=torch.Generator().manual_seed(1))
    assert sigma == pytest.approx(ref * scale, rel=1e-5)
    exact = torch.linalg.matrix_norm(w.double(), ord=2).item()
    assert ref <= exact * (1 + 1e-6) and ref >= (0.999 if estimate is lanczos else 0.9) * exact


@pytest.mark.parametrize("estimate", [power_iteration, lanczos])
def test_complex_matrices_use_the_conjugate_transpose(estimate):
    g = torch.Generator().manual_seed(1)
    w = torch.complex(
        torch.randn(6, 5, generator=g, dtype=torch.float64),
        torch.randn(6, 5, generator=g, dtype=torch.float64),
    )
    exact = torch.linalg.matrix_norm(w, ord=2).item()
    sigma, v = estimate(w, n_iter=30 if estimate is power_iteration else 5)
    assert sigma == pytest.approx(exact, rel=1e-8) and v.is_complex()


def test_spectral_monitor_on_half_precision_and_bad_arguments():
    net = WideMLP(3, 16).half()
    rows = SpectralMonitor(net, exact=True).log(0)
    ref = torch.linalg.matrix_norm(net.hidden[0].weight.float(), ord=2).item()
    assert rows[0]["sigma_w"] == pytest.approx(ref, rel=1e-6)
    with pytest.raises(TypeError, match="exact must be a bool"):
        SpectralMonitor(net, exact="no")
    with pytest.raises(ValueError, match=r"layers names .*\['nope'\]"):
        SpectralMonitor(net, layers=["nope"])
    with pytest.raises(TypeError, match="layers must be a sequence"):
        SpectralMonitor(net, layers="hidden.0")
    with pytest.raises(TypeError, match="w must be a torch.Tensor"):
        power_iteration([[1.0]])
    with pytest.raises(ValueError, match=r"v must be a vector of shape \(3,\)"):
        power_iteration(torch.ones(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match="w contains NaN"):
        lanczos(torch.full((2, 2), math.nan))


def test_spectral_monitor_stops_on_diverged_weights():
    net = WideMLP(3, 16)
    monitor = SpectralMonitor(net)
    monitor(0)
    with torch.no_grad():
        net.hidden[0].weight[0, 0] = math.inf
    with pytest.raises(TrainingDivergedError) as err:
        monitor.log(7)
    assert err.value.step == 7 and "hidden.0" in err.value.__notes__[0]


def _coord(**kwargs):
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    defaults = dict(
        widths=[8, 16],
        data=(x, torch.sin(x[:, :1])),
        optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        loss_fn=F.mse_loss,
    )
    return coord_check(lambda w: WideMLP(3, w), **{**defaults, **kwargs})


def test_coord_check_stops_on_divergence_with_the_step():
    with pytest.raises(TrainingDivergedError) as err:
        _coord(optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=1e8), steps=20)
    assert 1 <= err.value.step < 20
    assert "width 8" in err.value.__notes__[0]


def test_coord_check_refuses_bad_data_and_filters():
    x = torch.randn(8, 3)
    with pytest.raises(ValueError, match=r"data\[0\] \(x\) contains NaN"):
        _coord(data=(x * math.nan, x[:, :1]))
    with pytest.raises(ValueError, match=r"modules names modules the model lacks: \['nope'\]"):
        _coord(modules=["nope"])
    with pytest.raises(ValueError, match="selects no module"):
        _coord(modules=lambda name: False)
    with pytest.raises(TypeError, match=r"seeds\[0\] must be an int"):
        _coord(seeds=[0.5])
    with pytest.raises(ValueError, match=r"widths\[0\] must be a finite"):
        _coord(widths=[math.nan])
    df = _coord()
    with pytest.raises(ValueError, match="min_size must be a finite number >= 0"):
        fit_exponents(df, min_size=math.nan)
    with pytest.raises(ValueError, match="get_coord_data"):
        from_mup(pd.DataFrame({"a": [1]}))


def test_lazy_modules_and_missing_roles_are_named():
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 1))
    with pytest.raises(ValueError, match="model has uninitialized"):
        Parametrization(model, ParametrizationConfig("mup"))
    model(torch.randn(2, 3))  # materialized: now it works
    Parametrization(model, ParametrizationConfig("mup", layers={"0": "embedding", "2": "readout"}))
    with pytest.raises(TypeError, match="roles must be a sequence"):
        abc_table("mup", roles=None)


# ---- the library edges of issue 24 ---------------------------------------------------------------
def test_coord_check_refuses_a_vector_loss_and_a_non_optimizer():
    with pytest.raises(
        ValueError, match=r"loss_fn\(model\(x\), y\) must return a scalar .* \(8, 1\)"
    ):
        _coord(loss_fn=lambda out, y: (out - y) ** 2)
    with pytest.raises(TypeError, match=r"optimizer\(model\) must be a torch.optim.Optimizer"):
        _coord(optimizer=lambda m: m.parameters())
    x = torch.randn(8, 3)
    with pytest.raises(
        TypeError, match=r"make_model\(width\)\[1\] must be a torch.optim.Optimizer"
    ):
        coord_check(lambda w: (WideMLP(3, w), 0.1), [8, 16], (x, x[:, :1]), loss_fn=F.mse_loss)
    with pytest.raises(TypeError, match=r"make_model\(width\)\[1\] is None: steps=3 needs"):
        coord_check(lambda w: (WideMLP(3, w), None), [8, 16], (x, x[:, :1]), loss_fn=F.mse_loss)
    init = coord_check(lambda w: (WideMLP(3, w), None), [8, 16], (x, x[:, :1]), steps=0)
    assert set(init["step"]) == {0}  # no optimizer needed to measure at initialization


def test_huge_width_exponents_are_refused_by_name():
    model = nn.Sequential(
        nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
    )

    def param(**abc):
        return Parametrization(
            model, ParametrizationConfig(parametrization=None, base_width=8, **abc)
        )

    with pytest.raises(ValueError, match=r"config.c of '2' = -400 .* 8\^400 = 10\^361"):
        param(a=[0, 0, 0], b=[0, 0.5, 1], c=[0, -400, 0])
    with pytest.raises(ValueError, match=r"config.a of '2' = 10000 .* 10\^-9031"):  # 0.0 before
        param(a=[0, 1e4, 0], b=[0, 0.5, 1], c=[0, 0, 0])
    ok = param(a=[0, 0, 0], b=[0, 0.5, 1], c=[0, 1, 0])  # order-1 exponents: the answer
    assert ok.layers[1].lr == pytest.approx(ok.config.lr * 8.0**-1)


@pytest.mark.parametrize("estimate", [lanczos, power_iteration])
@pytest.mark.parametrize("shape", [(0, 0), (3, 0), (0, 3)])
def test_an_empty_matrix_has_norm_zero(estimate, shape):
    sigma, v = estimate(torch.zeros(shape))
    assert sigma == 0.0 and v.shape == (shape[1],)
