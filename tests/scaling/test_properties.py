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
