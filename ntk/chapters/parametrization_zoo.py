"""Chapter 06 experiments: SP, NTK, muP and MFP as abc-rules, applied with `Parametrization`.

The notebook `notebooks/06_parametrization_zoo.py` prints the rules (`ntk.scaling.abc_rules`)
and calls these functions for the parts that train networks: the three terms of one layer's
update after one Adam step (`update_terms`, the measurement behind the update-exponent
recursion), the abc-symmetry in training (`adam_losses`), the output and feature scales across
widths after one Adam step (`probe_scales`), and one cell of the learning-rate sweep
(`sweep_cell`). All train MLPs on one-hot 8x8 digits: the first three with `half_sse`,
0.5 * sum_k (f_k - y_k)^2 averaged over examples; the sweep with `train`'s "half_mse" loss,
0.5 * mean over every entry (1/10 of it: Adam's steps are unchanged but for eps).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch

from ntk.data import digits
from ntk.fitting import fit_loglog_slope
from ntk.models import WideMLP
from ntk.registry import GLOBAL_LR_SP, PER_LAYER_SP, SP_VARIANTS
from ntk.scaling.abc_rules import abc_table
from ntk.scaling.parametrization import Parametrization, ParametrizationConfig
from ntk.training import TrainConfig, TrainingDivergedError, train
from ntk.training.losses import half_sse

# SP as most people run it: one global learning rate (c = 0 everywhere), the engine's
# lr_rule "global" (`sp_global_lr_rule`); and SP with Everett et al.'s per-layer rates
SP_GLOBAL_LR = GLOBAL_LR_SP
SP_PER_LAYER = PER_LAYER_SP


def sp_global_lr_rule(depth: int = 2) -> dict[str, list[float]]:
    """(a, b, c) of SP with one global learning rate, for an MLP of `depth` hidden layers:
    a = 0, b = (0, 1/2, ..., 1/2) and c = 0 everywhere (`abc_table(..., lr_rule="global")`)."""
    roles = ["embedding"] + ["hidden"] * (depth - 1) + ["readout"]
    table = abc_table("sp", "adam", "full", roles, lr_rule="global")
    return {k: [getattr(x, k) for x in table] for k in "abc"}


def config(name: str, lr: float, base_width: int, **kwargs: object) -> ParametrizationConfig:
    """Adam config of a named parametrization (per-layer learning rates, lr_rule "abc"), or of
    an SP variant by its label (`ntk.registry.SP_VARIANTS`: global-lr SP, per-layer SP), for an
    MLP of any depth."""
    name, rule = SP_VARIANTS.get(name, (name, "abc"))
    return ParametrizationConfig(name, "adam", lr_rule=rule, lr=lr, base_width=base_width, **kwargs)


def update_terms(
    cfg: ParametrizationConfig, width: int, depth: int = 3, seed: int = 0, batch: int = 64
) -> list[dict[str, float]]:
    """One Adam step on a float64 MLP, and the change of every layer's pre-activations, split.

    Layer l computes z_l = n^-a W_l x_{l-1}; after the step (W + dW, x + dx)

        dz_l = n^-a dW_l x_{l-1}  +  n^-a W_l dx_{l-1}  +  n^-a dW_l dx_{l-1}

    exactly. Returns, per layer in forward order, the RMS over the batch and units of dz and
    of the three terms ("dW x", "W dx", "dW dx"), and of the layer's input change dx, measured on
    the training batch itself. The embedding's input does not change: dx and its last two terms
    are 0.
    """
    task = digits(one_hot=True)
    x, y = task.x_train[:batch].double(), task.y_train[:batch].double()
    torch.manual_seed(seed)
    model = WideMLP(64, width, 10, depth=depth).double()
    opt = torch.optim.Adam(Parametrization(model, cfg).param_groups)
    before = copy.deepcopy(model)
    loss = half_sse(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()

    def layer_inputs(net: WideMLP) -> list[torch.Tensor]:
        inputs, h = [], x
        for layer in net.hidden:
            inputs.append(h)
            h = net.phi(net.dense(layer, h))
        return [*inputs, h]

    def rms(t: torch.Tensor) -> float:
        return t.pow(2).mean().sqrt().item()

    rows = []
    with torch.no_grad():
        pairs = zip(
            before.layers, model.layers, layer_inputs(before), layer_inputs(model), strict=True
        )
        for old, new, x_old, x_new in pairs:
            z = old(x_old)
            dz, dw_x, w_dx = new(x_new) - z, new(x_old) - z, old(x_new) - z
            rows.append(
                {
                    "dz": rms(dz),
                    "dx": rms(x_new - x_old),
                    "dW x": rms(dw_x),
                    "W dx": rms(w_dx),
                    "dW dx": rms(dz - dw_x - w_dx),
                }
            )
    return rows


def adam_losses(
    name: str,
    width: int,
    eps_scaled: bool,
    steps: int = 20,
    lr: float = 2.0**-7,
    base: int = 32,
    n: int = 256,
) -> np.ndarray:
    """Full-batch Adam losses of a float64 parametrized MLP on the first `n` digits.

    With `eps_scaled`, Adam's eps = 1e-8 scales per layer as (n / n0)^-a (`adam_eps`), which
    makes abc-equivalent parametrizations train identically; else one global eps = 1e-8.
    """
    task = digits(one_hot=True)
    x, y = task.x_train[:n].double(), task.y_train[:n].double()
    torch.manual_seed(0)
    model = WideMLP(64, width, 10, depth=2).double()
    cfg = config(name, lr, base, adam_eps=1e-8 if eps_scaled else None)
    opt = torch.optim.Adam(Parametrization(model, cfg).param_groups, eps=1e-8)
    out = []
    for _ in range(steps):
        loss = half_sse(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return np.array(out)


def probe_scales(
    cfg: ParametrizationConfig, width: int, steps: int = 1, seed: int = 0, probe_size: int = 128
) -> dict[str, float]:
    """Output RMS at init, and after `steps` Adam steps (batches of 64) the relative change of
    the last hidden features and the RMS change of the output, on a fixed probe batch."""
    task = digits(one_hot=True)
    probe = task.x_train[:probe_size]
    torch.manual_seed(seed)
    model = WideMLP(64, width, 10, depth=2)
    opt = torch.optim.Adam(Parametrization(model, cfg).param_groups)
    with torch.no_grad():
        h0, f0 = model.features(probe), model(probe)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(task.x_train), (64,), generator=g)
        loss = half_sse(model(task.x_train[idx]), task.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        h1, f1 = model.features(probe), model(probe)
    return dict(
        out_init=f0.pow(2).mean().sqrt().item(),
        feature_change=((h1 - h0).norm() / h0.norm()).item(),
        out_change=(f1 - f0).pow(2).mean().sqrt().item(),
    )


def slopes_by_parametrization(df: pd.DataFrame, column: str) -> pd.Series:
    """Log-log slope of `column` against width, per parametrization (in order of appearance)."""
    return df.groupby("parametrization", sort=False).apply(
        lambda s: fit_loglog_slope(s.width, s[column]), include_groups=False
    )


def sweep_cell(parametrization: str, width: int, lr: float, seed: int, steps: int = 30) -> float:
    """One cell of the learning-rate sweep (`ntk.scaling.sweep.lr_sweep`): Adam on a
    parametrized MLP (base width 32), batches of 128; the score is the mean training loss at
    steps 10, 20, ..., `steps` (fast, stable progress), inf if training diverged."""
    task = digits(one_hot=True)
    torch.manual_seed(seed)
    model = WideMLP(64, width, 10, depth=2)
    opt = torch.optim.Adam(Parametrization(model, config(parametrization, lr, 32)).param_groups)
    tc = TrainConfig(
        steps=steps,
        loss="half_mse",
        batch_size=128,
        log_every=10,
        seed=seed,
        track_features=False,
        track_weights=False,
        progress=False,
    )
    try:
        history = train(model, task.x_train, task.y_train, config=tc, optimizer=opt)
        return float(np.mean(history.train_loss[1:]))  # steps 10, 20, ...; not step 0
    except TrainingDivergedError:
        return math.inf
