"""Chapter 07 helpers: coordinate checks next to `mup`'s, and the spectral view of the same runs.

The notebook `notebooks/07_coordinate_checks.py` builds the models and runs
`ntk.scaling.coord_check.coord_check`; these functions collect spectral norms during those runs
(`SpectralLog`), run `mup.coord_check.get_coord_data` one width at a time (`mup_coord_data`),
and turn the long tables into exponent tables (`exponent_table`, `spectral_exponents`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ntk.scaling.coord_check import fit_exponents, from_mup
from ntk.scaling.spectral import SpectralMonitor


class SpectralLog:
    """Rows of `SpectralMonitor` logs, one monitor per (width, seed) of a coordinate check.

    `log.on_step(label)` is an `on_step` callback for `coord_check` that tags its rows with
    `model=label`; `log.frame()` returns every row logged so far.
    """

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_step(self, label: str) -> Callable[[nn.Module, int, int, int], None]:
        monitors: dict[tuple[int, int], SpectralMonitor] = {}

        def on_step(model: nn.Module, width: int, seed: int, step: int) -> None:
            if step == 0:
                monitors[width, seed] = SpectralMonitor(model)
            for row in monitors[width, seed].log(step):
                self.rows.append(dict(row, width=width, seed=seed, model=label))

        return on_step

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def exponent_table(df: pd.DataFrame) -> pd.DataFrame:
    """Fitted width exponents of a coordinate check: (module, quantity) x step, steps >= 1."""
    fits = fit_exponents(df).query("step > 0")
    return fits.pivot_table(index=["module", "quantity"], columns="step", values="exponent")


def spectral_exponents(last: pd.DataFrame, label: str) -> pd.DataFrame:
    """Width exponents of ||W|| and ||dW|| (over sqrt(fan_out / fan_in)) of one model's layers."""
    d = last[last["model"] == label].rename(columns={"layer": "module"})
    fits = fit_exponents(d, ["rel_w", "rel_dw"])
    return fits.pivot_table(index="module", columns="quantity", values="exponent")


def mup_coord_data(
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    batch: tuple[torch.Tensor, torch.Tensor],
    *,
    lr: float,
    steps: int,
    seeds: Sequence[int],
) -> pd.DataFrame:
    """`mup.coord_check.get_coord_data` with MuAdam, in `coord_check`'s columns.

    It seeds once per seed and then builds its widths in order, so we call it one width at a
    time: each model's init then depends only on (seed, width), as in `coord_check`. Its
    forward pass t is our step t - 1 and its `l1` our `act_size`.
    """
    from mup.coord_check import get_coord_data

    frames = []
    for width in widths:
        d = get_coord_data(
            {width: lambda w=width: make_model(w)},
            [batch],
            optimizer="adam",
            lr=lr,
            mup=True,
            nsteps=steps + 1,
            nseeds=len(seeds),
            cuda=False,
            show_progress=False,
        )
        d = from_mup(d)
        d["seed"] = np.repeat(list(seeds), len(d) // len(seeds))  # mup loops over seeds outermost
        frames.append(d)
    return pd.concat(frames, ignore_index=True)
