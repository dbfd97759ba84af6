"""Property-based tests of the sweep: any valid grid gives a complete table and a readout that
stays on the grid; any invalid grid entry is refused naming the argument and its index."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ntk.scaling.sweep import lr_drift, lr_sweep, optima, summarize
from tests.strategies import assert_names

LOSSES = st.one_of(st.floats(0.0, 1e6), st.sampled_from([math.nan, math.inf]))


@st.composite
def grids(draw) -> dict:
    return dict(
        log2_lrs=draw(
            st.lists(st.integers(-30, 5).map(float), min_size=1, max_size=4, unique=True)
        ),
        widths=draw(st.lists(st.integers(1, 4096), min_size=1, max_size=3, unique=True)),
        seeds=draw(st.lists(st.integers(0, 2**31), min_size=1, max_size=3, unique=True)),
        parametrizations=draw(
            st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=2, unique=True)
        ),
    )


@given(grid=grids(), data=st.data())
def test_any_grid_gives_a_complete_table_and_optima_on_the_grid(grid, data):
    n = math.prod(len(v) for v in grid.values())
    losses = data.draw(st.lists(LOSSES, min_size=n, max_size=n))
    table = {}

    def train_fn(parametrization, width, lr, seed):
        key = (parametrization, width, math.log2(lr), seed)
        table.setdefault(key, losses[len(table)])
        return table[key]

    df = lr_sweep(train_fn, **grid, progress=False)
    assert len(df) == n and list(df.columns)[:4] == ["parametrization", "width", "log2_lr", "seed"]
    assert np.allclose(df["lr"], 2.0 ** df["log2_lr"], rtol=0, atol=0)
    opt = optima(df, n_boot=5)
    stats = summarize(df)
    for row in opt.itertuples():
        cells = stats[(stats.parametrization == row.parametrization) & (stats.width == row.width)]
        if np.isfinite(cells["mean"]).any():
            assert row.log2_lr_opt in grid["log2_lrs"]
            assert row.loss_opt == cells["mean"].min()
        else:  # every learning rate diverged at this width
            assert math.isnan(row.log2_lr_opt)
    drift = lr_drift(opt)
    assert ((drift >= 0) | drift.isna()).all()


BAD_GRIDS = {
    "log2_lrs": st.one_of(
        st.just([]),
        st.just(1.0),
        st.lists(
            st.sampled_from([math.nan, math.inf, 1e6, -1e4, "a", None]), min_size=1, max_size=2
        ),
    ),
    "widths": st.one_of(
        st.just([]),
        st.lists(st.sampled_from([0, -3, 1.5, 2.0, "8", True, None]), min_size=1, max_size=2),
    ),
    "seeds": st.one_of(st.just(3), st.lists(st.sampled_from([-1, 0.5, "0", False]), min_size=1)),
    "parametrizations": st.one_of(
        st.just("sp"), st.just([]), st.lists(st.sampled_from(["", 1, None]), min_size=1)
    ),
}


@given(data=st.data(), name=st.sampled_from(sorted(BAD_GRIDS)))
def test_bad_grids_are_named(data, name):
    grid = dict(log2_lrs=[-2.0], widths=[8], seeds=[0], parametrizations=["sp"])
    grid[name] = data.draw(BAD_GRIDS[name])
    with pytest.raises((TypeError, ValueError)) as err:
        lr_sweep(lambda **kw: 0.0, **grid, progress=False)
    assert_names(err, name)


def test_summaries_of_foreign_tables_are_refused():
    with pytest.raises(ValueError, match="lr_sweep"):
        summarize(pd.DataFrame({"loss": [1.0]}))
    with pytest.raises(ValueError, match="optima"):
        lr_drift(pd.DataFrame({"x": [1.0]}))


# ---------------------------------------------------------------- spectral norms, abc-rules

import torch  # noqa: E402

from ntk.models import WideMLP  # noqa: E402
from ntk.scaling import abc_table  # noqa: E402
from ntk.scaling.coord_check import coord_check  # noqa: E402
from ntk.scaling.spectral import SpectralMonitor, lanczos, power_iteration  # noqa: E402

DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
]


@given(
    m=st.integers(1, 12),
    n=st.integers(1, 12),
    log_scale=st.floats(-30, 30),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 100),
)
def test_spectral_estimates_are_finite_lower_bounds_at_any_scale(m, n, log_scale, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g, dtype=torch.float64)
    if dtype.is_complex:
        w = torch.complex(w, torch.randn(m, n, generator=g, dtype=torch.float64))
    w = (w * 10.0**log_scale).to(dtype)
    if not torch.isfinite(w).all() or w.abs().max() == 0:
        return  # the scale does not fit this dtype (float16 beyond ~6e4, or underflow to 0)
    exact = torch.linalg.matrix_norm(
        w.to(torch.complex128 if dtype.is_complex else torch.float64), ord=2
    )
    for estimate in (power_iteration, lanczos):
        sigma, v = estimate(w, n_iter=8, generator=torch.Generator().manual_seed(0))
        assert math.isfinite(sigma) and sigma > 0 and v.shape == (n,)
        rel = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4
        assert sigma <= float(exact) * (1 + rel)


BAD_MONITOR_ARGS = {
    "every": st.one_of(st.integers(max_value=0), st.floats(), st.just(True)),
    "n_iter": st.one_of(st.integers(max_value=0), st.just("3")),
    "method": st.sampled_from(["svd", None, 1]),
    "exact": st.sampled_from(["no", 1, None]),
    "seed": st.one_of(st.integers(max_value=-1), st.floats()),
    "layers": st.one_of(
        st.just("hidden.0"),
        st.lists(st.text(max_size=5), min_size=1).filter(
            lambda v: not set(v) <= {"hidden", "hidden.0", "hidden.1", "readout"}
        ),
    ),
}


@given(data=st.data(), name=st.sampled_from(sorted(BAD_MONITOR_ARGS)))
def test_bad_monitor_arguments_are_named(data, name):
    with pytest.raises((TypeError, ValueError)) as err:
        SpectralMonitor(WideMLP(3, 8), **{name: data.draw(BAD_MONITOR_ARGS[name])})
    assert_names(err, name)


BAD_ABC_ARGS = {
    "parametrization": st.sampled_from(["muP", "", None, 3]),
    "optimizer": st.sampled_from(["adamw", None]),
    "alignment": st.sampled_from(["partial", None]),
    "roles": st.one_of(
        st.just(None),
        st.just("hidden"),
        st.just([]),
        st.lists(st.sampled_from(["input", 3]), min_size=1),
    ),
}


@given(data=st.data(), name=st.sampled_from(sorted(BAD_ABC_ARGS)))
def test_bad_abc_table_arguments_are_named(data, name):
    args = {"parametrization": "mup", name: data.draw(BAD_ABC_ARGS[name])}
    with pytest.raises((TypeError, ValueError)) as err:
        abc_table(**args)
    assert_names(err, name)


BAD_COORD_ARGS = {
    "widths": st.one_of(
        st.just([]), st.lists(st.sampled_from([0, -8, math.nan, "8"]), min_size=1, max_size=2)
    ),
    "seeds": st.one_of(
        st.just([]), st.lists(st.sampled_from([-1, 0.5, "0"]), min_size=1, max_size=2)
    ),
    "steps": st.one_of(st.integers(max_value=-1), st.floats()),
    "modules": st.one_of(
        st.just("readout"), st.lists(st.sampled_from(["nope", "hidden.9"]), min_size=1)
    ),
}


@given(data=st.data(), name=st.sampled_from(sorted(BAD_COORD_ARGS)))
def test_bad_coord_check_arguments_are_named(data, name):
    x = torch.randn(4, 3)
    args = {"widths": [4, 8], "data": (x, x[:, :1]), name: data.draw(BAD_COORD_ARGS[name])}
    with pytest.raises((TypeError, ValueError)) as err:
        coord_check(
            lambda w: WideMLP(3, w),
            optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
            loss_fn=torch.nn.functional.mse_loss,
            **args,
        )
    assert_names(err, name)
