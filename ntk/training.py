"""A compact, seeded training loop that records feature-learning diagnostics.

`train` runs full-batch or mini-batch SGD/Adam (or mup's MuSGD/MuAdam, or any optimizer you
build) on MSE or cross-entropy, and logs, at steps 0, log_every, ..., steps:

- train/test loss and metric (accuracy or mean squared error);
- for each hidden layer l, the relative change of its activations on a fixed probe batch,
  ||h_l(t) - h_l(0)||_F / ||h_l(0)||_F;
- for each weight matrix, ||W(t) - W(0)||_F / ||W(0)||_F;
- optionally the relative change of the empirical NTK on the probe batch.

In the NTK (lazy) regime these changes vanish as width -> infinity (as 1/sqrt(width) for the
NTK parametrization, Lee et al. 2019, arXiv:1902.06720); under muP they stay Theta(1)
(Yang & Hu 2021, arXiv:2011.14522). The MSE loss is 0.5 * mean((f - y)^2), the convention of
neural-tangents' `predict.gradient_descent_mse`, so full-batch SGD with learning rate `lr`
follows the NTK dynamics with `learning_rate=lr`.

Extension points (for e.g. progressive training, weight averaging or per-layer learning rates):
pass a built `optimizer`, `callbacks` run after every update (they see a `StepState` and may stop
training), and an `lr_schedule` that rescales each param group's initial lr.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntk._checks import check_choice, check_inputs, check_nonnegative, check_positive_int

OPTIMIZERS = ("sgd", "adam", "musgd", "muadam")
LOSSES = ("mse", "cross_entropy")
METRICS = ("accuracy", "mse")


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or Inf; `.step` is the number of updates done before it."""

    def __init__(self, step: int, loss: float) -> None:
        self.step, self.loss = step, loss
        super().__init__(
            f"training diverged: loss is {loss} at step {step} (after {step} updates); "
            "lower the learning rate or check the parametrization"
        )


@dataclass
class TrainConfig:
    """Hyperparameters of `train` (all plain values, so a config can be logged or swept)."""

    steps: int = 1000
    lr: float = 0.1
    optimizer: str = "sgd"  # "sgd" | "adam" | "musgd" | "muadam" (mup.optim, needs base shapes)
    momentum: float = 0.0  # sgd / musgd only
    weight_decay: float = 0.0
    loss: str = "mse"  # "mse" = 0.5 * mean((f - y)^2) | "cross_entropy"
    metric: str | None = None  # None -> "accuracy" for cross_entropy, else "mse"
    batch_size: int | None = None  # None = full batch
    log_every: int = 10
    seed: int = 0
    probe_size: int = 64  # first rows of x_train used as the fixed probe batch
    track_features: bool = True
    track_weights: bool = True
    track_ntk: bool = False
    ntk_probe_size: int = 16
    progress: bool | None = None  # tqdm bar; None -> shown when steps >= 1000

    def validate(self) -> TrainConfig:
        """Check every field (ValueError / TypeError naming it); return self."""
        check_positive_int("steps", self.steps, minimum=0)
        check_nonnegative("lr", self.lr)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_nonnegative("momentum", self.momentum)
        check_nonnegative("weight_decay", self.weight_decay)
        check_choice("loss", self.loss, LOSSES)
        if self.metric is not None:
            check_choice("metric", self.metric, METRICS)
        if self.batch_size is not None:
            check_positive_int("batch_size", self.batch_size)
        check_positive_int("log_every", self.log_every)
        check_positive_int("seed", self.seed, minimum=0)
        check_positive_int("probe_size", self.probe_size)
        check_positive_int("ntk_probe_size", self.ntk_probe_size)
        for name in ("track_features", "track_weights", "track_ntk"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise TypeError(f"progress must be None or a bool, got {self.progress!r}")
        return self


@dataclass
class History:
    """What `train` recorded, one entry per log step (lists of floats, ready for plotting)."""

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)  # nan without test data
    train_metric: list[float] = field(default_factory=list)
    test_metric: list[float] = field(default_factory=list)
    feature_change: dict[str, list[float]] = field(default_factory=dict)
    weight_change: dict[str, list[float]] = field(default_factory=dict)
    ntk_change: list[float] = field(default_factory=list)
    metric_name: str = "mse"
    wall_time: float = 0.0  # seconds spent in `train`, diagnostics included

    def final(self) -> dict[str, float]:
        """The last logged value of every scalar series."""
        out = {
            name: getattr(self, name)[-1]
            for name in ("step", "train_loss", "test_loss", "train_metric", "test_metric")
            if getattr(self, name)
        }
        out.update({f"feature_change/{k}": v[-1] for k, v in self.feature_change.items()})
        out.update({f"weight_change/{k}": v[-1] for k, v in self.weight_change.items()})
        if self.ntk_change:
            out["ntk_change"] = self.ntk_change[-1]
        return out


@dataclass
class StepState:
    """Passed to callbacks after each update; `step` = number of updates done."""

    step: int
    loss: float  # loss of the batch used by this update (before it)
    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    config: TrainConfig


Callback = Callable[[StepState], bool | None]


class EMA:
    """Callback keeping an exponential moving average of the parameters (weight averaging).

    avg <- decay * avg + (1 - decay) * theta after every update. `copy_to(model)` writes the
    average into a model with the same parameter names (e.g. a `copy.deepcopy` of it).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)):
            raise TypeError(f"decay must be a number in [0, 1), got {type(decay).__name__}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.average = {k: p.detach().clone() for k, p in model.named_parameters()}

    @torch.no_grad()
    def __call__(self, state: StepState) -> None:
        for name, p in state.model.named_parameters():
            self.average[name].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> nn.Module:
        """Write the averaged parameters into `model` (matched by name) and return it."""
        for name, p in model.named_parameters():
            p.copy_(self.average[name])
        return model


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by `config.optimizer` over all of `model`'s parameters."""
    params, lr, wd = list(model.parameters()), config.lr, config.weight_decay
    if config.optimizer in ("musgd", "muadam"):
        import mup

        if not all(hasattr(p, "infshape") for p in params):
            raise ValueError(
                f"optimizer={config.optimizer!r} needs mup base shapes on every parameter; "
                "use ntk.models_mup.WideMLP_MuP or setup_mup_scaling first"
            )
        if config.optimizer == "musgd":
            return mup.MuSGD(params, lr=lr, momentum=config.momentum, weight_decay=wd)
        return mup.MuAdam(params, lr=lr, weight_decay=wd)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


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


def _empirical_ntk(model: nn.Module, x: Tensor) -> Tensor:
    from ntk.empirical import empirical_ntk  # written by another module owner; imported lazily

    return empirical_ntk(model, x).detach()


def _prepare_targets(y: object, name: str, loss: str, n: int, dtype: torch.dtype) -> Tensor:
    try:
        y_t = y if isinstance(y, Tensor) else torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or array, got {type(y).__name__}") from err
    if loss == "cross_entropy" and y_t.ndim == 1:  # class labels
        if torch.is_floating_point(y_t) or y_t.is_complex() or len(y_t) == 0 or y_t.min() < 0:
            raise ValueError(f"{name}: 1-D cross-entropy targets must be integer labels >= 0")
        y_t = y_t.long()
    else:
        y_t = check_inputs(name, y_t[:, None] if y_t.ndim == 1 else y_t, dtype=dtype)
    if y_t.shape[0] != n:
        raise ValueError(f"{name} has {y_t.shape[0]} rows but the inputs have {n}")
    return y_t


def _check_model_fits(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig) -> None:
    """One forward on 2 rows (eval mode, no grad): clear errors for inputs/targets that do not
    fit the model, before any update."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2])
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(
            f"x_train with shape {tuple(x.shape)} does not fit the model: "
            f"{type(err).__name__}: {err}"
        ) from err
    finally:
        model.train(was_training)
    if not isinstance(out, Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model must map (N, d) inputs to (N, K) outputs, got {shape}")
    k = out.shape[1]
    labels = y.ndim == 1  # cross-entropy class indices
    if labels and y.max() >= k:
        raise ValueError(
            f"y_train has class labels up to {int(y.max())} but the model has only {k} outputs"
        )
    if cfg.metric == "accuracy" and k < 2:
        raise ValueError("metric='accuracy' needs K >= 2 outputs (argmax over classes), got 1")
    if cfg.metric == "mse" and labels:
        raise ValueError(
            "metric='mse' needs targets shaped like the outputs (N, K), not class labels (N,); "
            "use metric='accuracy' or one-hot / probability targets"
        )


def _loss(out: Tensor, y: Tensor, loss: str) -> Tensor:
    if loss == "cross_entropy":
        return F.cross_entropy(out, y)
    if out.shape != y.shape:
        raise ValueError(f"model output shape {tuple(out.shape)} != target shape {tuple(y.shape)}")
    return 0.5 * (out - y).pow(2).mean()


def _metric(out: Tensor, y: Tensor, metric: str) -> float:
    if metric == "accuracy":
        labels = y if y.ndim == 1 else y.argmax(-1)
        return (out.argmax(-1) == labels).double().mean().item()
    return (out - y.to(out.dtype)).pow(2).mean().item()


@torch.no_grad()
def _evaluate(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig) -> tuple[float, float]:
    out = model(x)
    return _loss(out, y, cfg.loss).item(), _metric(out, y, cfg.metric)


def train(
    model: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor | None = None,
    y_test: Tensor | None = None,
    config: TrainConfig | None = None,
    *,
    optimizer: torch.optim.Optimizer | str | None = None,
    callbacks: Sequence[Callback] = (),
    lr_schedule: Callable[[int], float] | None = None,
    **overrides: object,
) -> History:
    """Train `model` in place and return its `History`.

    Args:
        model: maps (N, d) inputs to (N, K) outputs.
        x_train, y_train: (N, d) inputs; targets (N, K) or (N,) for MSE, labels (N,) (long) or
            class probabilities (N, K) for cross-entropy.
        x_test, y_test: optional held-out data, evaluated at every log step.
        config: a `TrainConfig`; `overrides` replace its fields (``train(m, x, y, lr=0.5)``).
        optimizer: a built optimizer (e.g. from custom param groups), which replaces
            `config.optimizer`, `lr`, `momentum` and `weight_decay`; or a name, as the
            `config.optimizer` override.
        callbacks: called as `cb(StepState)` after every update; a True return stops training.
        lr_schedule: step -> factor multiplying every param group's initial lr at that step.

    Seeding: `torch.manual_seed(config.seed)` at the start and a dedicated generator for the
    mini-batch order, so the same model init and seed give an identical `History`.

    Raises:
        TrainingDivergedError (a FloatingPointError) when a training loss is NaN or Inf.
        TypeError / ValueError naming the argument for bad arguments, checked before the first
        update (including one eval-mode forward on 2 rows: inputs that do not fit the model,
        class labels >= K, "accuracy" with K = 1, "mse" against class labels).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(optimizer, str):  # train(..., optimizer="muadam") names a config optimizer
        overrides["optimizer"], optimizer = optimizer, None
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "optimizer must be None, a name from TrainConfig.optimizer or a torch.optim."
            f"Optimizer, got {type(optimizer).__name__}"
        )
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or None, got {type(config).__name__}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown TrainConfig fields {unknown}; valid: {sorted(fields)}")
    callbacks = tuple(callbacks)
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise TypeError(f"callbacks[{i}] must be callable (StepState -> bool), got {cb!r}")
    if lr_schedule is not None and not callable(lr_schedule):
        raise TypeError(f"lr_schedule must be a callable step -> factor, got {lr_schedule!r}")
    cfg = dataclasses.replace(config or TrainConfig(), **overrides).validate()
    if cfg.metric is None:
        cfg.metric = "accuracy" if cfg.loss == "cross_entropy" else "mse"
    start_time = time.perf_counter()
    torch.manual_seed(cfg.seed)
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError("model has no parameters to train")
    device, dtype = param.device, param.dtype
    x_train = check_inputs("x_train", x_train, dtype=dtype).to(device)
    y_train = _prepare_targets(y_train, "y_train", cfg.loss, len(x_train), dtype).to(device)
    has_test = x_test is not None and y_test is not None
    if (x_test is None) != (y_test is None):
        raise ValueError("give both x_test and y_test, or neither")
    if has_test:
        x_test = check_inputs("x_test", x_test, dtype=dtype, features=x_train.shape[1]).to(device)
        y_test = _prepare_targets(y_test, "y_test", cfg.loss, len(x_test), dtype).to(device)
    if cfg.batch_size is not None and cfg.batch_size > len(x_train):
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {len(x_train)} training rows")
    _check_model_fits(model, x_train, y_train, cfg)
    opt = optimizer if optimizer is not None else make_optimizer(model, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]

    # Diagnostics reference points at initialization.
    probe = x_train[: cfg.probe_size]
    acts0 = probe_activations(model, probe) if cfg.track_features else {}
    weights0 = (
        {n: p.detach().clone() for n, p in model.named_parameters() if p.ndim >= 2}
        if cfg.track_weights
        else {}
    )
    ntk0 = _empirical_ntk(model, x_train[: cfg.ntk_probe_size]) if cfg.track_ntk else None
    hist = History(metric_name=cfg.metric)
    hist.feature_change = {k: [] for k in acts0}
    hist.weight_change = {k: [] for k in weights0}

    def log(step: int) -> None:
        was_training = model.training
        model.eval()
        hist.step.append(step)
        loss, metric = _evaluate(model, x_train, y_train, cfg)
        hist.train_loss.append(loss)
        hist.train_metric.append(metric)
        loss, metric = _evaluate(model, x_test, y_test, cfg) if has_test else (math.nan,) * 2
        hist.test_loss.append(loss)
        hist.test_metric.append(metric)
        if acts0:
            for k, h in probe_activations(model, probe).items():
                hist.feature_change[k].append(relative_change(h, acts0[k]))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in weights0:
                    hist.weight_change[n].append(relative_change(p, weights0[n]))
        if ntk0 is not None:
            change = math.nan  # a diverged model (loss Inf/NaN) has no finite NTK
            if math.isfinite(hist.train_loss[-1]):
                try:
                    change = relative_change(_empirical_ntk(model, probe[: len(ntk0)]), ntk0)
                except FloatingPointError:  # the NTK overflowed the dtype: recorded as nan
                    pass
            hist.ntk_change.append(change)
        model.train(was_training)

    gen = torch.Generator().manual_seed(cfg.seed)
    order, cursor = torch.randperm(len(x_train), generator=gen), 0
    show = cfg.progress if cfg.progress is not None else cfg.steps >= 1000
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="train", leave=False)
    log(0)
    model.train()
    for step in range(cfg.steps):
        if cfg.batch_size is None:
            xb, yb = x_train, y_train
        else:  # reshuffle each epoch; drop the last incomplete batch to keep batch_size fixed
            if cursor + cfg.batch_size > len(x_train):
                order, cursor = torch.randperm(len(x_train), generator=gen), 0
            idx = order[cursor : cursor + cfg.batch_size].to(device)
            cursor += cfg.batch_size
            xb, yb = x_train[idx], y_train[idx]
        if lr_schedule is not None:
            factor = float(lr_schedule(step))
            for g, lr0 in zip(opt.param_groups, base_lrs, strict=True):
                g["lr"] = lr0 * factor
        loss = _loss(model(xb), yb, cfg.loss)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            if bar is not None:
                bar.close()
            raise TrainingDivergedError(step, loss_value)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)
        done = step + 1
        state = StepState(done, loss_value, model, opt, hist, cfg)
        stop = any([bool(cb(state)) for cb in callbacks])  # every callback runs
        if done % cfg.log_every == 0 or done == cfg.steps or stop:
            log(done)
        if stop:
            break
    if bar is not None:
        bar.close()
    if not math.isfinite(hist.train_loss[-1]):  # the last update itself produced NaN/Inf
        raise TrainingDivergedError(hist.step[-1], hist.train_loss[-1])
    hist.wall_time = time.perf_counter() - start_time
    return hist
