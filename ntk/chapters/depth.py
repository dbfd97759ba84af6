"""Chapter 12 experiments: hyperparameters that transfer across depth (depth-muP, CompleteP).

A pre-norm residual MLP (`ntk.models.residual`) on a synthetic regression task, in four
parametrizations: "sp" and "mup" (width rules only) and "depth-mup" / "completep" (muP plus the
branch multiplier (L / L0)^-alpha, alpha = 1/2 / 1, and its lr and Adam-eps factors:
`ntk.scaling.depth`). Every one of them is the same model at width `BASE_WIDTH` and depth
`BASE_DEPTH`. `depth_coord_check` records every block's output against depth; `train_residual`
is the sweep's training run (`ntk.scaling.depth.depth_sweep`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ntk._checks import check_choice
from ntk.data import Task, make_low_dim_task
from ntk.models.residual import ResidualMLP, parametrize_residual
from ntk.registry import DEPTH_RULES, PER_LAYER_SP, select
from ntk.scaling.coord_check import ROOT, coord_check, fit_exponents
from ntk.scaling.depth import at_relative_depth, depth_optima, depth_sweep
from ntk.scaling.sweep import lr_drift

PARAMETRIZATIONS = select("sp", "mup", "depth-mup", "completep")
# figure labels: "sp" here is SP with the engine's per-layer learning rates (lr_rule "abc")
LABELS = {"sp": PER_LAYER_SP, "mup": "muP", "depth-mup": "depth-muP", "completep": "CompleteP"}
DIM, WIDTH, BASE_WIDTH, BASE_DEPTH = 16, 64, 16, 2
STEPS, BATCH, EPS = 60, 64, 1e-8


@functools.cache
def task(seed: int = 0) -> Task:
    """The chapter's data: y = He_2(<u, x>) / sqrt(2) on the sphere in d = 16, 512 samples."""
    return make_low_dim_task(n_train=512, n_test=512, dim=DIM, degree=2, seed=seed)


def build(
    parametrization: str, width: int, depth: int, lr: float, seed: int | None
) -> tuple[ResidualMLP, torch.optim.Adam]:
    """A residual MLP in `parametrization` and its Adam (eps 1e-8 at the base shape, scaled
    by the width and depth rules), initialized from `seed` (None: the current RNG state)."""
    if seed is not None:
        torch.manual_seed(seed)
    model = ResidualMLP(DIM, width, 1, depth=depth)
    param = parametrize_residual(
        model,
        parametrization,
        lr=lr,
        base_width=BASE_WIDTH,
        base_depth=BASE_DEPTH,
        adam_eps=EPS,
    )
    return model, torch.optim.Adam(param.param_groups)


def _is_recorded(name: str) -> bool:
    return name == ROOT or (name.startswith("blocks.") and name.count(".") == 1)


def depth_coord_check(
    depths: Sequence[int],
    *,
    parametrizations: Sequence[str] = PARAMETRIZATIONS,
    width: int = WIDTH,
    lr: float = 2**-6,
    steps: int = 3,
    seeds: Sequence[int] = (0,),
) -> pd.DataFrame:
    """Every block's output (the stream h_l) and the model output, at `depths`, trained
    `steps` Adam steps at `lr` on one batch of 128 examples; a `coord_check` table
    (column depth) with a parametrization column."""
    t = task()
    data = (t.x_train[:128], t.y_train[:128])

    def make(p: str):
        return lambda depth: build(p, width, depth, lr, None)

    return _coord_check_by_parametrization(
        make, parametrizations, depths, data, F.mse_loss, steps, seeds
    )


def _coord_check_by_parametrization(
    make, parametrizations, depths, data, loss_fn, steps, seeds=(0,)
) -> pd.DataFrame:
    """`coord_check` over depth for each parametrization p (`make(p)(depth)` builds the model
    and optimizer), the tables stacked with a parametrization column."""
    tables = []
    for p in parametrizations:
        df = coord_check(
            make(p),
            depths,
            data,
            loss_fn=loss_fn,
            steps=steps,
            seeds=seeds,
            modules=_is_recorded,
            attention_logits=False,
            axis="depth",
        )
        tables.append(df.assign(parametrization=p))
    return pd.concat(tables, ignore_index=True)


def depth_exponents_table(df: pd.DataFrame, step: int) -> pd.DataFrame:
    """Fitted exponents of act_size and delta_size against depth at `step`, per
    parametrization and relative block depth (`at_relative_depth`): rows module, columns
    (quantity, parametrization)."""
    out = []
    for p, sub in df.groupby("parametrization", sort=False):
        fit = fit_exponents(at_relative_depth(sub), axis="depth")
        out.append(fit[fit["step"] == step].assign(parametrization=p))
    fits = pd.concat(out, ignore_index=True)
    return fits.pivot_table(
        index="module", columns=["quantity", "parametrization"], values="exponent", sort=False
    )


def train_residual(
    parametrization: str,
    depth: int,
    lr: float,
    seed: int,
    *,
    width: int = WIDTH,
    steps: int = STEPS,
) -> float:
    """Final training MSE of one run (inf if it diverged): `steps` Adam steps on mini-batches
    of `BATCH` (the order fixed by `seed`), learning rate decayed linearly to 0."""
    t = task()
    model, opt = build(parametrization, width, depth, lr, seed)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    gen = torch.Generator().manual_seed(seed)
    n = t.x_train.shape[0]
    for _ in range(steps):
        idx = torch.randint(0, n, (BATCH,), generator=gen)
        loss = F.mse_loss(model(t.x_train[idx]), t.y_train[idx])
        if not torch.isfinite(loss):
            return math.inf
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        final = float(F.mse_loss(model(t.x_train), t.y_train))
    return final if math.isfinite(final) else math.inf


def train_at_width(width: int):
    """`train_residual` with the width bound: a picklable `depth_sweep` train_fn."""
    return functools.partial(train_residual, width=width)


def depth_drift(opt: pd.DataFrame) -> pd.Series:
    """Per parametrization, the optimum's drift across depth (max - min log2 lr over the
    depths of a `depth_optima` table), in grid steps of one factor 2."""
    return lr_drift(opt).rename("drift")


def plot_depth_check(df: pd.DataFrame, step: int, module: str = "blocks@1"):
    """act_size and delta_size of `module` (default the last block) against depth at `step`,
    one line per parametrization (seed means). Returns the figure."""
    import matplotlib.pyplot as plt

    rel = pd.concat(
        at_relative_depth(sub).assign(parametrization=p)
        for p, sub in df.groupby("parametrization", sort=False)
    )
    rel = rel[(rel["module"] == module) & (rel["step"] == step)]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, q in zip(axes, ("act_size", "delta_size"), strict=True):
        for p, sub in rel.groupby("parametrization", sort=False):
            mean = sub.groupby("depth")[q].mean()
            ax.plot(mean.index, mean.to_numpy(), marker="o", label=LABELS.get(p, p))
        ax.set(xscale="log", yscale="log", xlabel="depth L (blocks)", title=f"{module}: {q}")
        ax.set_xscale("log", base=2)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"depth coordinate check, step {step}")
    fig.tight_layout()
    return fig


def plot_depth_transfer(df: pd.DataFrame, parametrizations: Sequence[str] | None = None):
    """Seed-mean final loss against log2 lr, one panel per parametrization, one curve per
    depth (dark shallow, light deep), stars at each depth's optimum. Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = (
        list(dict.fromkeys(df["parametrization"]))
        if parametrizations is None
        else list(parametrizations)
    )
    opt = depth_optima(df, n_boot=0)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), sharey=True)
    axes = np.atleast_1d(axes)
    depths = sorted(df["depth"].unique())
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(depths)))
    for ax, p in zip(axes, names, strict=True):
        for d, color in zip(depths, colors, strict=True):
            sub = df[(df["parametrization"] == p) & (df["depth"] == d)]
            mean = sub.groupby("log2_lr")["loss"].mean()
            mean = mean[np.isfinite(mean)]
            ax.plot(mean.index, mean.to_numpy(), color=color, label=f"L = {d}")
            o = opt[(opt["parametrization"] == p) & (opt["depth"] == d)]
            if len(o) and np.isfinite(o["log2_lr_opt"].iloc[0]):
                ax.plot(o["log2_lr_opt"], o["loss_opt"], "*", ms=11, color=color, mec="black")
        ax.set(yscale="log", xlabel="log2 learning rate", title=LABELS.get(p, p))
    axes[0].set_ylabel("final training MSE")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def run_transfer(
    *,
    depths: Sequence[int],
    log2_lrs: Sequence[float],
    seeds: Sequence[int] = (0, 1, 2),
    model: str = "mlp",
    width: int | None = None,
    parametrizations: Sequence[str] = PARAMETRIZATIONS,
    cache: str | Path | None = None,
    workers: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """`depth_sweep` of `train_residual` ("mlp", default width `WIDTH`) or `train_gpt`
    ("gpt", default `GPT_WIDTH`) at `width`: the depth-transfer table."""
    train_at = {"mlp": (train_at_width, WIDTH), "gpt": (gpt_at_width, GPT_WIDTH)}
    make, default_width = train_at[check_choice("model", model, tuple(train_at))]
    width = default_width if width is None else width
    return depth_sweep(
        make(width),
        depths=depths,
        log2_lrs=log2_lrs,
        seeds=seeds,
        parametrizations=parametrizations,
        cache=cache,
        workers=workers,
        progress=progress,
    ).assign(width=width)


def cost_of_depth(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per parametrization and seed: the loss at the deepest depth minus the loss at the
    shallowest, both at the learning rate optimal (seed mean) at the shallowest depth, i.e.
    what going deeper costs when the learning rate is transferred from the shallow model.
    Rows parametrization, columns seed, plus the transferred log2 lr."""
    shallow, deep = sweep["depth"].min(), sweep["depth"].max()
    opt = depth_optima(sweep, n_boot=0)
    rows = {}
    for p, sub in sweep.groupby("parametrization", sort=False):
        lr = float(opt.query("parametrization == @p and depth == @shallow")["log2_lr_opt"].iloc[0])
        at = sub[sub["log2_lr"] == lr].pivot(index="seed", columns="depth", values="loss")
        rows[p] = {**(at[deep] - at[shallow]).to_dict(), "log2_lr": lr}
    return pd.DataFrame(rows).T


def transfer_over_widths(
    model: str,
    *,
    width: int,
    depths: Sequence[int],
    widths: Sequence[int],
    joint_depths: Sequence[int],
    log2_lrs: Sequence[float],
    seeds: Sequence[int],
    cache: Path | None,
    workers: int,
) -> pd.DataFrame:
    """`run_transfer` of `model` at `width` over `depths` and at the other `widths` over
    `joint_depths` (one SQLite file per model and width under the folder `cache`),
    concatenated."""
    tables = []
    for w in sorted(set(widths) | {width}):
        file = None
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            file = cache / f"12_depth_{model}_w{w}.sqlite"
        tables.append(
            run_transfer(
                model=model,
                width=w,
                depths=depths if w == width else joint_depths,
                log2_lrs=log2_lrs,
                seeds=seeds,
                cache=file,
                workers=workers,
                progress=True,
            )
        )
    return pd.concat(tables, ignore_index=True)


def main(argv: Sequence[str] | None = None) -> dict:
    """Chapter 12 at full scale, for the residual MLP and the GPT (`--models`): depth
    coordinate checks, depth transfer over `--depths` (`--gpt-depths`) at the main width, and
    the width x depth optima over `--widths` (`--gpt-widths`) and `--joint-depths`; figures
    to `--out`. Returns every table, keyed by model."""
    from ntk.chapters import _cli

    p = _cli.parser(
        "Depth transfer: per-layer SP vs muP vs depth-muP vs CompleteP, residual MLP and GPT."
    )
    p.add_argument("--models", nargs="+", choices=("mlp", "gpt"), default=["mlp", "gpt"])
    _cli.add_int_list(p, "--depths", [2, 4, 8, 16], "depths of the MLP transfer sweep")
    _cli.add_int_list(p, "--gpt-depths", [2, 4, 8, 16], "depths of the GPT transfer sweep")
    _cli.add_int_list(p, "--check-depths", [2, 4, 8, 16, 32], "depths of the coordinate check")
    _cli.add_int_list(p, "--widths", [32, 64, 128], "MLP widths of the width x depth picture")
    _cli.add_int_list(p, "--gpt-widths", [32, 64, 128], "GPT widths of the same")
    _cli.add_int_list(p, "--joint-depths", [2, 16], "depths of the width x depth picture")
    _cli.add_int_list(p, "--seeds", [0, 1, 2], "seeds of every sweep cell")
    _cli.add_int_list(p, "--log2-lrs", list(range(-10, -1)), "the learning-rate grid (log2)")
    p.add_argument("--cache", type=Path, default=None, help="folder for the SQLite caches")
    p.add_argument("--workers", type=int, default=1, help="processes of the sweep")
    args = p.parse_args(argv)
    t0 = _cli.start(args)
    torch.set_num_threads(1)
    models = {  # coordinate check, main width, depths, widths, figure-name suffix
        "mlp": (
            functools.partial(depth_coord_check, seeds=args.seeds),
            WIDTH,
            args.depths,
            args.widths,
            "",
        ),
        "gpt": (gpt_depth_coord_check, GPT_WIDTH, args.gpt_depths, args.gpt_widths, "_gpt"),
    }
    out, names = {}, []
    for model in args.models:
        check, width, depths, widths, tag = models[model]
        print(f"== {model} ==", flush=True)
        cc = check([d for d in args.check_depths if model == "mlp" or d <= 16])
        print(depth_exponents_table(cc, step=1).round(2).to_string(), flush=True)
        names.append(_cli.save(plot_depth_check(cc, 1), args.out, f"12_depth_coord_check{tag}.png"))
        sweep = transfer_over_widths(
            model,
            width=width,
            depths=depths,
            widths=widths,
            joint_depths=args.joint_depths,
            log2_lrs=[float(a) for a in args.log2_lrs],
            seeds=args.seeds,
            cache=args.cache,
            workers=args.workers,
        )
        main_sweep = sweep[sweep["width"] == width].drop(columns="width")
        opt = depth_optima(main_sweep)
        print(opt.to_string(), "\ndrift (log2 lr, max - min over depths):", flush=True)
        print(depth_drift(opt).to_string(), flush=True)
        names.append(
            _cli.save(plot_depth_transfer(main_sweep), args.out, f"12_depth_transfer{tag}.png")
        )
        joint = joint_optima(sweep)
        print(joint.to_string(), flush=True)
        names.append(_cli.save(plot_joint(joint), args.out, f"12_width_depth{tag}.png"))
        out[model] = dict(coord_check=cc, sweep=sweep, optima=opt, joint=joint)
    _cli.finish(args.out, [n.name for n in names], t0)
    return out


def joint_optima(sweep: pd.DataFrame) -> pd.DataFrame:
    """The optimal log2 lr per (parametrization, width, depth) of sweeps at several widths
    (rows of `run_transfer`); columns as `depth_optima` plus width."""
    parts = [
        depth_optima(sub.drop(columns="width"), n_boot=0).assign(width=w)
        for w, sub in sweep.groupby("width", sort=True)
    ]
    return pd.concat(parts, ignore_index=True)


def plot_joint(joint: pd.DataFrame):
    """One panel per parametrization: optimal log2 lr on the width x depth grid. Returns the
    figure."""
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(joint["parametrization"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.0), sharey=True)
    for ax, p in zip(axes, names, strict=True):
        sub = joint[joint["parametrization"] == p]
        for d, g in sub.groupby("depth"):
            ax.plot(g["width"], g["log2_lr_opt"], marker="o", label=f"L = {d}")
        ax.set(xscale="log", xlabel="width", title=LABELS.get(p, p))
        ax.set_xscale("log", base=2)
    axes[0].set_ylabel("optimal log2 lr")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---- the GPT (ntk.lm): the same comparison on a transformer ---------------------------------
GPT_WIDTH, GPT_BASE_WIDTH, GPT_HEAD_DIM, GPT_BLOCK, GPT_BATCH, GPT_STEPS = 32, 16, 8, 32, 16, 60
GPT_BRANCHES = ["blocks.*.attn", "blocks.*.mlp"]


@functools.cache
def _gpt_tokens() -> tuple[torch.Tensor, int]:
    """100,000 characters of the default word chain (`ntk.lm.corpus`), as token ids."""
    from ntk.lm.data import CharTokenizer, default_text

    text = default_text(n_chars=100_000)
    tokenizer = CharTokenizer.from_text(text)
    return tokenizer.encode(text), tokenizer.vocab_size


def build_gpt(parametrization: str, width: int, depth: int, lr: float, seed: int | None):
    """A GPT (head size 8) in `parametrization` (as `build`, with the depth rule on both
    branches of every block) and its Adam, initialized from `seed` (None: the RNG state)."""
    from ntk.lm.model import GPTConfig
    from ntk.lm.parametrize import gpt_recipe
    from ntk.scaling.depth import DepthConfig

    _, vocab = _gpt_tokens()
    cfg = GPTConfig(vocab, GPT_BLOCK, depth, width, n_head=None, head_dim=GPT_HEAD_DIM)
    dc = None
    if parametrization in DEPTH_RULES:
        dc = DepthConfig(parametrization, GPT_BRANCHES, base_depth=BASE_DEPTH, depth=depth)
    name = "mup" if dc is not None else parametrization
    # random query and readout (not muP's optional zero inits): every block moves at step 1
    model, _, groups = gpt_recipe(
        cfg,
        name,
        base_width=GPT_BASE_WIDTH,
        lr=lr,
        seed=seed,
        adam_eps=EPS,
        depth=dc,
        zero_query=False,
        zero_readout=False,
    )
    return model, torch.optim.Adam(groups)


def gpt_depth_coord_check(
    depths: Sequence[int],
    *,
    parametrizations: Sequence[str] = PARAMETRIZATIONS,
    lr: float = 2**-6,
    steps: int = 1,
) -> pd.DataFrame:
    """`depth_coord_check` for the GPT: every block's output at `depths` on one batch of 16
    windows of 32 characters, `steps` Adam steps at `lr` (next-token cross-entropy)."""
    from ntk.lm.data import sample_batch
    from ntk.lm.step import lm_loss

    tokens, _ = _gpt_tokens()
    data = sample_batch(tokens, GPT_BATCH, GPT_BLOCK, torch.Generator().manual_seed(0))

    def make(p: str):
        return lambda depth: build_gpt(p, GPT_WIDTH, depth, lr, None)

    return _coord_check_by_parametrization(make, parametrizations, depths, data, lm_loss, steps)


def train_gpt(
    parametrization: str,
    depth: int,
    lr: float,
    seed: int,
    *,
    width: int = GPT_WIDTH,
    steps: int = GPT_STEPS,
) -> float:
    """Mean next-token loss (nats) of the last 10 steps of one GPT run (inf if it diverged).

    A pre-norm GPT (`ntk.lm.GPT`, head size 8) of `depth` blocks, parametrized by
    `ntk.lm.parametrize`: "sp" / "mup" (width rules, base width 16) or "depth-mup" /
    "completep" (muP plus `DepthConfig` on both branches of every block, base depth 2).
    `steps` Adam steps on random windows of 32 characters, batch 16, lr decayed linearly to 0.
    """
    from ntk.lm.data import sample_batch
    from ntk.lm.step import lm_loss

    tokens, _ = _gpt_tokens()
    model, opt = build_gpt(parametrization, width, depth, lr, seed)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    gen = torch.Generator().manual_seed(seed)
    last = []
    for _ in range(steps):
        x, y = sample_batch(tokens, GPT_BATCH, GPT_BLOCK, gen)
        loss = lm_loss(model(x), y)
        if not torch.isfinite(loss):
            return math.inf
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        last.append(loss.item())
    return sum(last[-10:]) / len(last[-10:])


def gpt_at_width(width: int):
    """`train_gpt` with the width bound: a picklable `depth_sweep` train_fn."""
    return functools.partial(train_gpt, width=width)


if __name__ == "__main__":  # python -m ntk.chapters.depth
    # run the imported module's main: the sweep workers then unpickle its functions by their
    # module name (ntk.chapters.depth), not as __main__ attributes
    from ntk.chapters._cli import run
    from ntk.chapters.depth import main as _main

    run(_main)
