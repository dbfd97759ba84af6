"""The optimizers `train` builds by name (any other optimizer can be passed in built)."""

from __future__ import annotations

import torch
from torch import nn

from ntk.training.config import TrainConfig


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by `config.optimizer` over all of `model`'s parameters."""
    params, lr, wd = list(model.parameters()), config.lr, config.weight_decay
    if config.optimizer in ("musgd", "muadam"):
        import mup

        if not all(hasattr(p, "infshape") for p in params):
            raise ValueError(
                f"optimizer={config.optimizer!r} needs mup base shapes on every parameter; "
                "use ntk.models.WideMLP_MuP or ntk.models.setup_mup_scaling first"
            )
        if config.optimizer == "musgd":
            return mup.MuSGD(params, lr=lr, momentum=config.momentum, weight_decay=wd)
        return mup.MuAdam(params, lr=lr, weight_decay=wd)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)
