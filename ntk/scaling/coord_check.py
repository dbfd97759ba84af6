"""Coordinate checks: does every activation keep its size as the width grows?

A parametrization is set up right (Yang & Hu 2021, "Feature Learning in Infinite-Width Neural
Networks", arXiv:2011.14522; Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466) when,
for every module output h in R^{N x n} (N examples, n coordinates),

    act_size(t)   = mean_{i,a} |h_t[i, a]|            (mup's "l1" statistic)
    delta_size(t) = mean_{i,a} |h_t[i, a] - h_0[i, a]|  (the change since initialization)

are Theta(1) in the width n after every training step t. We train a few steps on one fixed
batch at a series of widths, record both numbers with forward hooks, and fit the exponent
`size ~ width^exponent` per module and step: near 0 under muP; under the standard
parametrization with a width-independent learning rate the readout and the hidden updates
grow (exponent > 0), which is why SP's optimal learning rate shrinks with width.

Any module works: a module returning a tuple, list or dict (attention layers, Hugging Face
blocks and `ModelOutput`s) gets one record per floating tensor in it (`name[i]`, `name.key`),
and the attention logits s q k^T, which no module returns, are rebuilt from every
`F.scaled_dot_product_attention` / `nn.MultiheadAttention` call and recorded as
`<module>.attn_logits` (`ntk.scaling.attention_logits`).

`step` counts the optimizer updates made before the forward pass that produced the record,
so step 0 is initialization. `mup.coord_check.get_coord_data` calls the same forward pass
t = step + 1 and records `l1` = act_size (`from_mup` converts its table).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntk._checks import (
    check_bool,
    check_int_list,
    check_nonnegative,
    check_number_list,
    check_optimizer,
    check_positive_int,
    check_scalar_loss,
    check_sequence,
)
from ntk.errors import TrainingDivergedError
from ntk.fitting import loglog_fit
from ntk.scaling.attention_logits import AttentionLogitRecorder, eager_attention_modules
from ntk.scaling.scaled_module import ScaledModule

ROOT = "<output>"  # name used for the model itself (named_modules() calls it "")
QUANTITIES = ("act_size", "delta_size")
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

ModelFactory = Callable[[int], "nn.Module | tuple[nn.Module, torch.optim.Optimizer]"]
OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
ModuleFilter = Callable[[str], bool] | Iterable[str] | None


def _module_selector(
    modules: ModuleFilter, model: nn.Module | None = None
) -> Callable[[str, nn.Module], bool]:
    """Turn the user's filter (None, a predicate on names, or a list of names) into a test.

    The default (None) records every module but containers and the layer inside each
    `ScaledModule` (`Parametrization`'s wrappers): the wrapper's output, recorded under the
    layer's own name, is the layer's output times its multiplier, the coordinate the
    parametrization controls; the raw inner output would read as a failed check."""
    if modules is None:
        scaled = (
            [] if model is None else [m for m in model.modules() if isinstance(m, ScaledModule)]
        )
        inner = {id(m.module) for m in scaled}
        return lambda name, m: (
            name == ROOT
            or not (isinstance(m, _CONTAINERS) or (id(m) in inner and name.endswith(".module")))
        )
    if callable(modules):
        return lambda name, m: bool(modules(name))
    if isinstance(modules, str):
        raise TypeError("modules must be a callable or a list of module names, not a str")
    names = set(modules)
    return lambda name, m: name in names


def _check_selected(model: nn.Module, modules: ModuleFilter, select, logits: bool) -> None:
    """Refuse a filter that names modules the model lacks, or that selects nothing."""
    names = {name or ROOT: m for name, m in model.named_modules()}
    if modules is not None and not callable(modules):
        # `M.attn_logits` (and `M.attn_logits.k`) name logits recorded while module M runs
        unknown = sorted(
            n for n in set(modules) - set(names) if not (logits and _logits_owner(n) in names)
        )
        if unknown:
            some = list(names)[:6]
            raise ValueError(f"modules names modules the model lacks: {unknown} (it has {some}...)")
        if logits and any(_logits_owner(n) in names for n in modules):
            return  # attention logits are selected: something will be recorded
    if not any(select(name, m) for name, m in names.items()):
        raise ValueError("modules selects no module of the model: nothing would be recorded")


def _logits_owner(name: str) -> str | None:
    """The module M in an attention-logits name `M.attn_logits[.k]`, else None."""
    head, sep, tail = name.partition(".attn_logits")
    return head if sep and (not tail or tail[1:].isdigit()) else None


def _build(make_model: ModelFactory, width: int, optimizer: OptimizerFactory | None):
    out = make_model(width)
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[0], nn.Module):
            raise TypeError("make_model(width) must return a model or a (model, optimizer) pair")
        if out[1] is None:  # fine for steps=0 (measurements at initialization only)
            return out
        return out[0], check_optimizer("make_model(width)[1]", out[1])
    if not isinstance(out, nn.Module):
        raise TypeError(f"make_model(width) must return an nn.Module, got {type(out).__name__}")
    if optimizer is None:
        raise ValueError(
            "optimizer (a function model -> optimizer) is required when make_model "
            "returns only a model"
        )
    return out, check_optimizer("optimizer(model)", optimizer(out))


def coord_check(
    make_model: ModelFactory,
    widths: Sequence[int],
    data: tuple[Tensor, Tensor],
    *,
    optimizer: OptimizerFactory | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    steps: int = 3,
    seeds: Sequence[int] = (0,),
    modules: ModuleFilter = None,
    on_step: Callable[[nn.Module, int, int, int], None] | None = None,
    attention_logits: bool = True,
    progress: bool = False,
    axis: str = "width",
) -> pd.DataFrame:
    """Train each width for `steps` updates on the fixed batch `data`; record coordinate sizes.

    Args:
        make_model: `make_model(width)` returns a model, or a `(model, optimizer)` pair.
        widths: the widths to compare (any notion of width; it is the x axis of the fits).
        data: one batch `(x, y)`, reused at every step (as mup's default `fix_data=True`);
            the model is called as `model(x)`, or `model(**x)` when x is a dict (e.g. a
            tokenizer's output). x may have any shape and dtype (token ids stay integers).
        optimizer: `optimizer(model)` builds the optimizer when `make_model` returns a model.
        loss_fn: `loss_fn(model(x), y)`, a scalar; cross-entropy by default.
        steps: number of optimizer updates; records are taken at steps 0..steps.
        seeds: `torch.manual_seed(seed)` runs right before each `make_model(width)` call.
        modules: which modules to record: None (every non-container module and the model
            output, named `ROOT`), a predicate on names, or a list of names. A module that
            returns a tuple, list or dict (attention, Hugging Face blocks and outputs) gets one
            record per floating tensor in it, named `name[i]` or `name.key`.
        on_step: called as `on_step(model, width, seed, step)` after each forward pass at
            steps 0..steps (e.g. to log a `SpectralMonitor`).
        attention_logits: also record the attention logits s q k^T of every
            `F.scaled_dot_product_attention` and `nn.MultiheadAttention` call, as
            `<module>.attn_logits` (module_type "attn_logits"), over the positions that attend
            (`ntk.scaling.attention_logits`). Attention computed by hand is not seen; a warning
            names Hugging Face modules built with `attn_implementation="eager"`.
        progress: show a tqdm bar over (seed, width).
        axis: what `widths` sweeps, the name of its column: "width", or e.g. "depth" for a
            depth coordinate check (`make_model(depth)`, `ntk.scaling.depth`).

    Returns:
        a tidy DataFrame with columns width (named `axis`), module, module_type, step, seed,
        act_size, delta_size (one row per recorded tensor output).
    """
    check_positive_int("steps", steps, minimum=0)
    check_bool("attention_logits", attention_logits)
    if not isinstance(axis, str) or not axis.isidentifier():
        raise TypeError(f"axis must be a column name such as 'width' or 'depth', got {axis!r}")
    widths = check_number_list("widths", widths)
    if min(widths) <= 0:
        raise ValueError(f"widths must be > 0 (the x axis of log-log fits), got {widths}")
    widths = [int(w) if float(w).is_integer() else w for w in widths]
    seeds = check_int_list("seeds", seeds, minimum=0)
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("data must be one batch (x, y) of tensors")
    x, y = data
    for i, t in enumerate(data):  # integer data (token ids, labels) cannot be NaN
        if isinstance(t, Tensor) and (t.is_floating_point() or t.is_complex()):
            if not torch.isfinite(t).all():
                raise ValueError(f"data[{i}] ({'xy'[i]}) contains NaN or Inf values")
    _module_selector(modules)  # checks the filter's type before any model is built
    records: list[dict] = []
    jobs = [(seed, width) for seed in seeds for width in widths]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc="coord check", mininterval=1.0)
    warned = not attention_logits
    for seed, width in jobs:
        torch.manual_seed(seed)
        model, opt = _build(make_model, width, optimizer)
        if opt is None and steps:
            raise TypeError(f"make_model(width)[1] is None: steps={steps} needs an optimizer")
        select = _module_selector(modules, model)
        _check_selected(model, modules, select, attention_logits)
        if not warned:
            warned = _warn_eager_attention(model)
        model.train()
        hooks = dict(select=select, attention_logits=attention_logits)
        try:
            _run_one(model, opt, (x, y), loss_fn, steps, hooks, (width, seed), records, on_step)
        except TrainingDivergedError as err:
            err.add_note(f"coord_check: at width {width}, seed {seed}")
            raise
    df = pd.DataFrame.from_records(
        records,
        columns=["width", "module", "module_type", "step", "seed", *QUANTITIES],
    )
    return df.rename(columns={"width": axis})


def _run_one(model, opt, data, loss_fn, steps, hook_args, key, records, on_step) -> None:
    """Train one model, appending a record per recorded tensor and forward pass."""
    (x, y), (width, seed) = data, key
    init: dict[str, Tensor] = {}  # name -> h_0 on the fixed batch
    state = {"step": 0}

    def record(name: str, kind: str, h: Tensor) -> None:
        step = state["step"]
        if step == 0:
            init[name] = h.clone()
        h0 = init.get(name)
        delta = (h - h0).abs().mean().item() if h0 is not None and h0.shape == h.shape else math.nan
        records.append(
            dict(
                width=width,
                module=name,
                module_type=kind,
                step=step,
                seed=seed,
                act_size=h.abs().mean().item(),
                delta_size=delta,
            )
        )

    hooks = _Hooks(model, record=record, **hook_args)
    try:
        for step in range(steps + 1):
            state["step"] = step
            seen = len(records)
            with hooks:
                out = model(**x) if isinstance(x, dict) else model(x)
            if any(not math.isfinite(r["act_size"]) for r in records[seen:]):
                raise TrainingDivergedError(step, math.nan)  # an activation overflowed
            if on_step is not None:
                on_step(model, width, seed, step)
            if step == steps:
                break  # the last forward pass only measures
            loss = check_scalar_loss("loss_fn(model(x), y)", loss_fn(out, y))
            if not torch.isfinite(loss.detach()).all():
                raise TrainingDivergedError(step, float(loss.detach().sum()))
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        hooks.remove()


def _tensors(output: object, name: str) -> list[tuple[str, Tensor]]:
    """Every floating tensor in a module's output, named by its place: `name` for a tensor,
    `name[i]` in a tuple or list, `name.key` in a dict (e.g. a Hugging Face `ModelOutput`)."""
    if isinstance(output, Tensor):
        return [(name, output)] if output.is_floating_point() else []
    if isinstance(output, dict):
        items = [(f"{name}.{key}", v) for key, v in output.items()]
    elif isinstance(output, (tuple, list)):
        items = [(f"{name}[{i}]", v) for i, v in enumerate(output)]
    else:
        return []  # None, caches and other objects hold no coordinates
    return [found for key, v in items for found in _tensors(v, key)]


class _Hooks:
    """Forward hooks recording the selected modules' outputs and, inside `with hooks:`, the
    attention logits computed in the forward pass (`ntk.scaling.attention_logits`).

    Logits computed while module M runs (M the innermost module) are named `M.attn_logits`
    (`M.attn_logits.1`, ... for further calls in one pass) and recorded when M or that name
    is selected. Only the positions that may attend count (causal triangle, masks).
    """

    def __init__(self, model: nn.Module, *, select, record, attention_logits: bool) -> None:
        self.select, self.record = select, record
        self.stack: list[tuple[str, nn.Module]] = []  # modules running, outermost first
        self.calls: dict[str, int] = {}
        self.handles = []
        self.recorder = AttentionLogitRecorder(self._logits) if attention_logits else None
        for name, module in model.named_modules():
            name = name or ROOT
            if attention_logits:
                self.handles.append(module.register_forward_pre_hook(self._enter(name)))
                self.handles.append(module.register_forward_hook(self._exit, always_call=True))
            if select(name, module):
                self.handles.append(module.register_forward_hook(self._output(name, module)))

    def _enter(self, name: str):
        return lambda module, inputs: self.stack.append((name, module))

    def _exit(self, module: nn.Module, inputs: object, output: object) -> None:
        self.stack.pop()  # returns None: a forward hook's return value would replace output

    def _output(self, name: str, module: nn.Module):
        kind = type(module).__name__

        def hook(module, inputs, output):
            with torch.no_grad():
                for key, h in _tensors(output, name):
                    self.record(key, kind, h.detach())

        return hook

    def _logits(self, logits: Tensor, keep: Tensor | None) -> None:
        owner, module = self.stack[-1] if self.stack else (ROOT, None)
        k = self.calls[owner] = self.calls.get(owner, -1) + 1
        name = f"{owner}.attn_logits" + (f".{k}" if k else "")
        if self.select(owner, module) or self.select(name, None):
            if keep is not None:
                logits = logits[torch.broadcast_to(keep, logits.shape)]
            self.record(name, "attn_logits", logits)

    def __enter__(self) -> _Hooks:
        self.calls.clear()
        self.stack.clear()
        if self.recorder is not None:
            self.recorder.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.recorder is not None:
            self.recorder.__exit__(*exc)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _warn_eager_attention(model: nn.Module) -> bool:
    """Warn (once per coord_check) about attention whose logits cannot be recorded."""
    eager = eager_attention_modules(model)
    if eager:
        warnings.warn(
            f"attention logits of {', '.join(eager[:3])}{', ...' if len(eager) > 3 else ''} "
            "are not recorded: Hugging Face's eager attention computes them by hand; build the "
            'model with attn_implementation="sdpa" to record them',
            stacklevel=3,
        )
    return bool(eager)


def from_mup(df: pd.DataFrame) -> pd.DataFrame:
    """Convert `mup.coord_check.get_coord_data` output to this module's columns.

    mup's forward pass t (1-based) is our step t - 1, its `l1` our act_size, its root module ""
    our `ROOT`. Seeds are mup's loop index, which it passes to `torch.manual_seed`.
    """
    missing = {"width", "module", "t", "l1"} - set(getattr(df, "columns", ()))
    if missing:
        raise ValueError(
            f"df lacks columns {sorted(missing)}; pass mup.coord_check.get_coord_data() output"
        )
    out = pd.DataFrame(
        {
            "width": df["width"].to_numpy(),
            "module": df["module"].replace({"": ROOT}).to_numpy(),
            "step": df["t"].to_numpy() - 1,
            "act_size": df["l1"].to_numpy(),
        }
    )
    return out


def fit_exponents(
    df: pd.DataFrame,
    quantities: Sequence[str] = QUANTITIES,
    *,
    min_size: float = 0.0,
    axis: str = "width",
) -> pd.DataFrame:
    """Least-squares slope of log size against log width, per module, step and quantity.

    The seed mean of each quantity is fitted as `log size = c + exponent * log width`
    (`ntk.fitting.loglog_fit`); with `axis="depth"` (a depth check) against log depth.
    Points with size <= `min_size` (e.g. delta_size at step 0, which is exactly 0) are left
    out; a group with fewer than two widths left gets exponent NaN.

    Returns a DataFrame with columns module, step, quantity, exponent, stderr (the slope's
    standard error from the residuals; NaN with two widths), n_widths.
    """
    check_nonnegative("min_size", min_size)
    quantities = check_sequence("quantities", quantities, "column names")
    missing = {axis, "module", "step", *quantities} - set(getattr(df, "columns", ()))
    if missing:
        raise ValueError(f"df lacks columns {sorted(missing)}; pass a coord_check() table")
    df = df.rename(columns={axis: "width"}) if axis != "width" else df
    rows = []
    means = df.groupby(["module", "step", "width"], sort=True)[list(quantities)].mean()
    for (module, step), group in means.groupby(level=["module", "step"], sort=True):
        width = group.index.get_level_values("width").to_numpy(dtype=float)
        for q in quantities:
            size = group[q].to_numpy(dtype=float)
            keep = np.isfinite(size) & (size > min_size) & (size > 0)
            slope, _, stderr = loglog_fit(width[keep], size[keep])
            rows.append(
                dict(
                    module=module,
                    step=step,
                    quantity=q,
                    exponent=slope,
                    stderr=stderr,
                    n_widths=int(keep.sum()),
                )
            )
    return pd.DataFrame(
        rows, columns=["module", "step", "quantity", "exponent", "stderr", "n_widths"]
    )


def exponent_table(
    df: pd.DataFrame, quantities: Sequence[str] = QUANTITIES, *, axis: str = "width"
) -> pd.DataFrame:
    """Fitted width exponents of a coordinate check, the table to read: one row per (module,
    quantity), one column per step >= 1 (`fit_exponents`; the exponents of step 0, at
    initialization, say nothing about training). Near 0 everywhere under muP."""
    fits = fit_exponents(df, quantities, axis=axis).query("step > 0")
    return fits.pivot_table(index=["module", "quantity"], columns="step", values="exponent")


def plot_coord_check(
    df: pd.DataFrame,
    quantity: str = "act_size",
    *,
    steps: Sequence[int] | None = None,
    axes=None,
    title: str | None = None,
    axis: str = "width",
):
    """One log-log panel per step: seed-mean `quantity` against width, one line per module.

    Error bars are the standard error over seeds; `axis` names the x column ("depth" for a
    depth check). `steps` None draws every step with data (for delta_size, which is 0 at
    initialization, steps 1 on). Returns the matplotlib figure. Unlike
    `mup.coord_check.plot_coord_data`, this does not change the global plotting style.
    """
    import matplotlib.pyplot as plt

    if quantity not in df.columns:
        raise ValueError(f"quantity must be a column of df such as {QUANTITIES}, got {quantity!r}")
    df = df.rename(columns={axis: "width"}) if axis != "width" else df
    if steps is None:  # the steps with something to draw (delta_size is 0 at step 0)
        positive = df[df[quantity] > 0]
        steps = sorted(positive["step"].unique())
        if not steps:
            raise ValueError(f"df has no positive {quantity} at any step: nothing to plot")
    else:
        steps = list(steps)
    if axes is None:
        fig, axes = plt.subplots(
            1, len(steps), figsize=(3.2 * len(steps), 3.0), sharey=True, squeeze=False
        )
        axes = axes[0]
    fig = axes[0].figure
    modules = list(dict.fromkeys(df["module"]))  # first-seen order: input to output
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(modules), 1)))
    stats = df.groupby(["step", "module", "width"])[quantity].agg(["mean", "std", "count"])
    for ax, step in zip(axes, steps, strict=False):
        for module, color in zip(modules, colors, strict=True):
            if (step, module) not in stats.index.droplevel("width"):
                continue
            s = stats.loc[(step, module)]
            if not (s["mean"] > 0).any():
                continue  # nothing to draw on a log axis (delta at step 0)
            err = (s["std"] / np.sqrt(s["count"])).fillna(0.0)
            ax.errorbar(s.index, s["mean"], yerr=err, color=color, marker="o", ms=3, label=module)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_title(f"step {step}")
        ax.set_xlabel(axis)
    axes[0].set_ylabel(quantity)
    axes[-1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
