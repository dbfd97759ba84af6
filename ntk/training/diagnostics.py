"""Feature-learning diagnostics recorded by `train` at every log step.

For each hidden layer l, the relative change of its activations on a fixed probe batch,
||h_l(t) - h_l(0)||_F / ||h_l(0)||_F; for each weight matrix, ||W(t) - W(0)||_F / ||W(0)||_F;
optionally the relative change of the empirical NTK on the probe batch. In the NTK (lazy)
regime these changes vanish as width -> infinity (as 1/sqrt(width) for the NTK
parametrization, Lee et al. 2019, arXiv:1902.06720); under muP they stay Theta(1) (Yang & Hu
2021, arXiv:2011.14522).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ntk.training.config import History, TrainConfig


def relative_change(now: Tensor, start: Tensor) -> float:
    """||now - start||_F / ||start||_F; nan when `start` is zero (e.g. a zero-init readout)."""
    denom = torch.linalg.vector_norm(start).item()
    if denom == 0.0:
        return math.nan
    return torch.linalg.vector_norm(now - start).item() / denom


@torch.no_grad()
def probe_activations(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Hidden activations on `x`, by name.

    Uses `model.hidden_activations(x)` when the model has it (keys "hidden.0", ...); otherwise
    records the outputs of every `nn.Linear` but the last one through forward hooks.
    """
    if hasattr(model, "hidden_activations"):
        return {f"hidden.{i}": h for i, h in enumerate(model.hidden_activations(x))}
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][:-1]
    out: dict[str, Tensor] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, o, name=n: out.__setitem__(name, o.detach()))
        for n, m in linears
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def probe_ntk(model: nn.Module, x: Tensor) -> Tensor:
    """The empirical NTK of `model` on `x`, detached."""
    from ntk.kernels.empirical import empirical_ntk  # lazy: most runs do not track the NTK

    return empirical_ntk(model, x).detach()


class Diagnostics:
    """Reference points at initialization, and the relative changes since then.

    Built before the first update; `record(model, history)` appends one entry per tracked
    quantity (features and weights if the config tracks them, the NTK if `track_ntk`).
    """

    def __init__(self, model: nn.Module, x_train: Tensor, cfg: TrainConfig) -> None:
        self.probe = x_train[: cfg.probe_size]
        self.acts0 = probe_activations(model, self.probe) if cfg.track_features else {}
        self.weights0 = (
            {n: p.detach().clone() for n, p in model.named_parameters() if p.ndim >= 2}
            if cfg.track_weights
            else {}
        )
        self.ntk0 = probe_ntk(model, x_train[: cfg.ntk_probe_size]) if cfg.track_ntk else None

    def new_history(self, metric: str) -> History:
        """An empty History with one series per tracked layer and weight."""
        hist = History(metric_name=metric)
        hist.feature_change = {k: [] for k in self.acts0}
        hist.weight_change = {k: [] for k in self.weights0}
        return hist

    def record(self, model: nn.Module, hist: History) -> None:
        """Append the current relative changes to `hist` (model in eval mode)."""
        if self.acts0:
            for k, h in probe_activations(model, self.probe).items():
                hist.feature_change[k].append(relative_change(h, self.acts0[k]))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.weights0:
                    hist.weight_change[n].append(relative_change(p, self.weights0[n]))
        if self.ntk0 is not None:
            hist.ntk_change.append(self._ntk_change(model, math.isfinite(hist.train_loss[-1])))

    def _ntk_change(self, model: nn.Module, finite_loss: bool) -> float:
        if not finite_loss:  # a diverged model (loss Inf/NaN) has no finite NTK
            return math.nan
        try:
            return relative_change(probe_ntk(model, self.probe[: len(self.ntk0)]), self.ntk0)
        except FloatingPointError:  # the NTK overflowed the dtype: recorded as nan
            return math.nan
