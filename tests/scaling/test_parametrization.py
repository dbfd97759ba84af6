"""`Parametrization`: abc-rules (Everett et al. 2024) applied to real models, against `mup`.

Adam's epsilon and the abc-symmetry: Adam divides by sqrt(v) + eps, and sqrt(v) scales with the
gradient of the stored weight, which carries the multiplier n^-a. Two abc-equivalent models
(here ours and the `mup` package's, whose embedding and readout multipliers differ from ours by
sqrt(n / n0)) therefore see eps at different relative sizes. The equivalence tests handle it
two ways: (1) eps = 1e-30 in float64, negligible, so the trajectories must agree to rounding;
(2) the default eps = 1e-8, scaled per param group by the ratio of the two models' gradient
scales, which makes the match exact again; the plain 1e-8 shows the small, real discrepancy.
Between our own parametrizations `adam_eps` scales eps as n^-a per group, which restores the
symmetry exactly (test_symmetry_in_training).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from mup.optim import MuAdam, MuSGD
from torch import nn

from ntk.data import load_digits_task
from ntk.models import WideMLP, WideMLP_MuP
from ntk.scaling.geometry import WeightGeometry, register_geometry
from ntk.scaling.parametrization import Parametrization, ParametrizationConfig, ScaledModule
from ntk.scaling.sweep import lr_sweep, optima
from ntk.training import TrainConfig, TrainingDivergedError, train


# ---------------------------------------------------------------------------------- models
class SmallCNN(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.block = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        h = F.relu(self.block(F.relu(self.stem(x))))
        return self.head(h.mean((2, 3)))


class Gain(nn.Module):
    """A module type Parametrization knows nothing about (its width must be stated)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * self.gain


class Dense(nn.Module):
    """A dense layer storing its kernel as (in, out), described by `register_geometry`."""

    def __init__(self, fan_in: int, fan_out: int) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(fan_in, fan_out))
        self.offset = nn.Parameter(torch.ones(fan_out))

    def forward(self, x):
        return x @ self.kernel + self.offset


register_geometry(
    Dense,
    lambda m: [WeightGeometry("kernel", *m.kernel.shape, transposed=True, bias="offset")],
)


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.ffn = nn.ModuleDict(
            {"up": nn.Linear(width, 2 * width), "down": nn.Linear(2 * width, width)}
        )
        self.gain = Gain(width)
        self.mix = Dense(width, width)

    def forward(self, h):
        h = h + self.gain(self.ffn["down"](F.gelu(self.ffn["up"](self.norm(h)))))
        return self.mix(h)


class TinyLM(nn.Module):
    def __init__(self, width: int, vocab: int = 50) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList([Block(width), Block(width)])
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


LM_LAYERS = {
    "embed": "embedding",
    "blocks.*.ffn.*": "hidden",
    "blocks.1.mix": "hidden",
    "head": "readout",
}


def _expected(spec, width_dim, per_width, fan_in_finite, base, cfg):
    """Independent recomputation of n, init std, multiplier, lr from the rules."""
    n = width_dim * per_width
    n0 = 1 if base is None else base * per_width
    ratio = n / n0
    const = fan_in_finite**-0.5 if spec.role == "embedding" else n0**-0.5
    return (
        n,
        cfg.std_prefactor * const * ratio**-spec.b,
        ratio**-spec.a,
        cfg.lr * ratio**-spec.c,
    )


@pytest.mark.parametrize("base", [None, 32])
@pytest.mark.parametrize("name", ["mup", "ntk"])
def test_mlp_init_multiplier_lr(name, base):
    torch.manual_seed(0)
    d, width = 20, 256
    model = WideMLP(d, width, 5, depth=3, bias_std=0.3)
    cfg = ParametrizationConfig(name, lr=0.01, std_prefactor=1.5, base_width=base)
    param = Parametrization(model, cfg)
    assert [s.role for s in param.layers] == ["embedding", "hidden", "hidden", "readout"]
    groups = {g["name"]: g for g in param.param_groups}
    x = torch.randn(7, d)
    for spec, (wd, fin) in zip(
        param.layers, [(width, d), (width, 0), (width, 0), (width, 0)], strict=True
    ):
        n, std, mult, lr = _expected(spec, wd, 1, fin or 1, base, cfg)
        assert (
            spec.n == n
            and spec.init_std == pytest.approx(std)
            and spec.multiplier == pytest.approx(mult)
        )
        w = spec.module.weight
        assert w.std().item() == pytest.approx(std, rel=0.05)
        assert torch.all(spec.module.bias == 0)
        assert groups[spec.name]["lr"] == pytest.approx(lr) and groups[spec.name]["params"] == [w]
        wrapper = model.get_submodule(spec.name)
        assert isinstance(wrapper, ScaledModule) and wrapper.weight is w  # attribute fall-through
        h = torch.randn(7, w.shape[1])
        torch.testing.assert_close(wrapper(h), mult * spec.module(h))
    assert model(x).shape == (7, 5)
    assert "init_std" in param.table().columns and "hidden.0" in str(param)


def test_exponents_across_widths():
    """Measured init variance, multipliers, lrs scale as n^-2b, n^-a, n^-c (CNN, absolute n)."""
    specs = {}
    for width in (64, 256):
        torch.manual_seed(1)
        model = SmallCNN(width)
        cfg = ParametrizationConfig(
            "mfp",
            optimizer="sgd",
            layers={"stem": "embedding", "block": "hidden", "head": "readout"},
        )
        p = Parametrization(model, cfg)
        specs[width] = {s.name: s for s in p.layers}
        assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
        assert specs[width]["block"].n == 9 * width and specs[width]["stem"].n == width
    for name in ("stem", "block", "head"):
        s1, s2 = specs[64][name], specs[256][name]
        w1, w2 = s1.module.weight, s2.module.weight
        var_ratio = w2.var().item() / w1.var().item()
        tol = 5 * math.sqrt(2 / w1.numel() + 2 / w2.numel())  # 5 standard errors
        assert var_ratio == pytest.approx(4.0 ** (-2 * s1.b), rel=tol), name
        assert s2.multiplier / s1.multiplier == pytest.approx(4.0**-s1.a)
        assert s2.lr / s1.lr == pytest.approx(4.0**-s1.c)
    stem = specs[64]["stem"]  # embedding constant: 1/sqrt(finite fan-in 3*3*3), b = 0
    assert stem.module.weight.std().item() == pytest.approx(27**-0.5, rel=5 * (2 * 64 * 27) ** -0.5)


def test_named_submodules_only_listed_layers_change():
    torch.manual_seed(2)
    width, base = 64, 16
    model = TinyLM(width)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = ParametrizationConfig("mup", layers=LM_LAYERS, base_width=base)
    param = Parametrization(model, cfg)
    names = [s.name for s in param.layers]
    assert names == [
        "embed",
        "blocks.0.ffn.up",
        "blocks.0.ffn.down",
        "blocks.1.ffn.up",
        "blocks.1.ffn.down",
        "blocks.1.mix",
        "head",
    ]
    spec = {s.name: s for s in param.layers}
    assert spec["blocks.0.ffn.down"].n == 2 * width  # fan-in
    assert spec["blocks.0.ffn.down"].n0 == 2 * base  # ... at the base width
    assert spec["embed"].init_std == pytest.approx((width / base) ** -0.5)  # one-hot fan-in 1
    after = {k.replace(".module", ""): v for k, v in model.state_dict().items()}
    assert after.keys() == before.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    expected = {f"{n}.{p}" for n in names for p in ("weight", "bias", "kernel", "offset")}
    assert changed == expected & before.keys()  # norms, gains, blocks.0.mix untouched
    # the registered layer: kernel stored (in, out), re-initialized by its fan-in, offset zeroed
    mix = model.blocks[1].mix
    assert isinstance(mix, ScaledModule) and not isinstance(model.blocks[0].mix, ScaledModule)
    assert spec["blocks.1.mix"].init_std == pytest.approx(width**-0.5)  # hidden: SP std
    assert mix.kernel.std().item() == pytest.approx(width**-0.5, rel=0.05)
    assert torch.all(mix.offset == 0)
    # param groups: each parameter exactly once; unlisted ones (norms, gains, blocks.0.mix) rest
    groups = param.param_groups
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    rest = next(g for g in groups if g["name"] == "rest")
    assert {id(p) for p in rest["params"]} == {
        id(p)
        for n, p in model.named_parameters()
        if "norm" in n or "gain" in n or n.startswith("blocks.0.mix")
    }
    by_name = {g["name"]: g for g in groups}
    assert by_name["blocks.1.mix"]["params"] == [mix.kernel]
    assert by_name["blocks.1.mix"]["lr"] == pytest.approx(cfg.lr * (width / base) ** -1.0)
    assert by_name["blocks.1.mix.offset"]["params"] == [mix.offset]
    assert model(torch.randint(0, 50, (3, 5))).shape == (3, 5, 50)


def test_param_groups_with_optimizer_and_scheduler():
    torch.manual_seed(3)
    model = WideMLP(4, 128, 2, depth=2)
    param = Parametrization(model, ParametrizationConfig("mup", lr=0.1, base_width=32))
    groups = param.param_groups
    assert [g["name"] for g in groups] == [
        "hidden.0",
        "hidden.0.bias",
        "hidden.1",
        "hidden.1.bias",
        "readout",
        "readout.bias",
    ]
    assert param.param_groups[0] is not groups[0]  # fresh dicts for every optimizer
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    lrs0 = [g["lr"] for g in opt.param_groups]
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    for _ in range(3):
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    factor = (1 + math.cos(math.pi * 3 / 10)) / 2
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr * factor for lr in lrs0])


def test_errors():
    def mlp():
        return WideMLP(3, 16, 1, depth=2)

    cases = [
        (dict(layers={"nothing*": "hidden"}), "match no module"),
        (dict(layers={"hidden.*": "hidden", "hidden.0": "embedding"}), "several patterns"),
        (dict(layers={"hidden": "hidden", "hidden.0": "embedding"}), "parent"),
        (dict(layers={"readout": "output"}), "readout"),
        (dict(parametrization="spp"), "parametrization"),
        (dict(optimizer="lion"), "optimizer"),
        (dict(alignment="some"), "alignment"),
        (dict(parametrization=None, a=[0, 0], b=[0, 0.5, 0.5]), r"config\.a"),
        (dict(parametrization=None, a=[0, 0, 0], b=[0, 0.5, 0.5], c=[0]), r"config\.c"),
        (dict(a=[0, 0, 0], b=[0, 0.5, 0.5]), "not both"),
        (dict(lr=-1.0), "lr"),
        (dict(base_width=0), "base_width"),
        (dict(parametrization=None, a=[0, float("nan"), 0], b=[0, 0.5, 0.5]), r"config\.a\[1\]"),
        (dict(parametrization=None, a=[0, 0, 0], b=[0, "x", 0.5]), r"config\.b\[1\]"),
        (dict(base_std={"hidden.*": -1.0}), r"config\.base_std\['hidden\.\*'\]"),
        (dict(attention_scale="sqrt"), r"config\.attention_scale"),
        (dict(width=0), r"config\.width"),
        (dict(base_head_dim=0), r"config\.base_head_dim"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            Parametrization(mlp(), ParametrizationConfig(**kwargs))
    type_cases = [
        (dict(widths=None), "config.widths"),
        (dict(apply_multipliers="no"), "config.apply_multipliers"),
        (dict(reinit=1), "config.reinit"),
        (dict(zero_query="yes"), "config.zero_query"),
        (dict(base_std=[0.02]), "config.base_std"),
        (dict(layers=["hidden.0"]), "config.layers"),
        (dict(parametrization=None, a=0.5, b=[0, 0.5, 0.5]), r"config\.a must be a list"),
    ]
    for kwargs, match in type_cases:
        with pytest.raises(TypeError, match=match):
            Parametrization(mlp(), ParametrizationConfig(**kwargs))
    conv_only = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match="nn.Linear"):
        Parametrization(conv_only)
    with pytest.raises(ValueError, match="Embedding"):
        Parametrization(
            TinyLM(8), ParametrizationConfig(layers={"embed": "hidden", "head": "readout"})
        )
    with pytest.raises(ValueError, match=r"'blocks.0.gain' is a Gain.*register_geometry"):
        Parametrization(TinyLM(8), ParametrizationConfig(layers={"blocks.0.gain": "hidden"}))
    model = mlp()
    Parametrization(model)
    with pytest.raises(ValueError, match="already"):
        Parametrization(model)
    with pytest.raises(TypeError, match="config"):
        Parametrization(mlp(), {"parametrization": "mup"})


# ---------------------------------------------------------------------------------- training
def _copy_from_mup(ref: WideMLP_MuP, mine: WideMLP, param: Parametrization) -> None:
    """Give `mine` the same function as `ref`: effective weights equal layer by layer."""
    with torch.no_grad():
        for layer_ref, spec in zip(ref.layers, param.layers, strict=True):
            # MuReadout multiplies its input (not its bias) by 1 / width_mult
            mult_ref = 1.0 / ref.width_mult() if layer_ref is ref.readout else 1.0
            spec.module.weight.copy_(layer_ref.weight * mult_ref / spec.multiplier)
            spec.module.bias.copy_(layer_ref.bias / spec.multiplier)


def _losses(model, opt, x, y, steps):
    out = []
    for _ in range(steps):
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("opt_name", ["adam", "sgd", "adam_eps"])
def test_matches_mup_package(opt_name):
    """mup + base_width trains exactly like WideMLP_MuP with MuAdam / MuSGD (biases included)."""
    d, width, base, lr, steps = 6, 128, 32, (0.05 if opt_name == "sgd" else 3e-3), 15
    with torch.random.fork_rng():
        torch.set_default_dtype(torch.float64)
        try:
            torch.manual_seed(4)
            ref = WideMLP_MuP(d, width, 3, depth=3, base_width=base, bias_std=0.5)
            mine = WideMLP(d, width, 3, depth=3)
            optimizer = "sgd" if opt_name == "sgd" else "adam"
            param = Parametrization(
                mine, ParametrizationConfig("mup", optimizer, lr=lr, base_width=base)
            )
            _copy_from_mup(ref, mine, param)
            x, y = torch.randn(32, d), torch.randn(32, 3)
            torch.testing.assert_close(mine(x), ref(x), rtol=1e-12, atol=1e-12)
            if opt_name == "sgd":
                ours = _losses(mine, torch.optim.SGD(param.param_groups), x, y, steps)
                theirs = _losses(ref, MuSGD(ref.parameters(), lr=lr), x, y, steps)
            elif opt_name == "adam":
                ours = _losses(mine, torch.optim.Adam(param.param_groups, eps=1e-30), x, y, steps)
                theirs = _losses(ref, MuAdam(ref.parameters(), lr=lr, eps=1e-30), x, y, steps)
            else:  # default eps: scale it per group by our gradient scale / theirs
                state = {k: v.clone() for k, v in mine.state_dict().items()}
                groups = param.param_groups
                wm = width / base
                # gradient scale ours / theirs = our multiplier / theirs: sqrt(wm) for the
                # embedding (weight, bias) and readout weight, 1/sqrt(wm) for the readout bias
                # (MuReadout leaves its bias unscaled), 1 for hidden layers
                ratio = {
                    "hidden.0": wm**0.5,
                    "hidden.0.bias": wm**0.5,
                    "readout": wm**0.5,
                    "readout.bias": wm**-0.5,
                }
                for g in groups:
                    g["eps"] = 1e-8 * ratio.get(g["name"], 1.0)
                ours = _losses(mine, torch.optim.Adam(groups, eps=1e-8), x, y, steps)
                theirs = _losses(ref, MuAdam(ref.parameters(), lr=lr, eps=1e-8), x, y, steps)
                mine.load_state_dict(state)
                plain = _losses(mine, torch.optim.Adam(param.param_groups, eps=1e-8), x, y, steps)
                gap = (plain - theirs).abs().max().item()
                assert 0 < gap < 1e-4 * theirs.max().item()  # eps breaks the symmetry, slightly
        finally:
            torch.set_default_dtype(torch.float32)
    assert theirs[-1] < 0.9 * theirs[0]  # it trains
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=0)


@pytest.mark.parametrize(
    "pair,opt", [(("mup", "mfp"), "adam"), (("sp", "ntk"), "sgd"), (("sp", "ntk"), "adam")]
)
def test_symmetry_in_training(pair, opt):
    """abc-equivalent parametrizations train identically (Adam: with `adam_eps` scaling)."""
    x, y = torch.randn(32, 5, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
    runs = []
    for name in pair:
        torch.manual_seed(5)
        model = WideMLP(5, 96, 2, depth=2).double()
        cfg = ParametrizationConfig(name, opt, lr=0.01, base_width=24, adam_eps=1e-8)
        param = Parametrization(model, cfg)
        opt_cls = torch.optim.Adam if opt == "adam" else torch.optim.SGD
        runs.append(_losses(model, opt_cls(param.param_groups), x, y, 12))
    assert runs[0][-1] < runs[0][0]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-10, atol=0)


# ---------------------------------------------------------------------------------- transfer
@functools.cache
def _digits():
    return load_digits_task(one_hot=True)


def _digits_final_loss(
    parametrization: str, width: int, lr: float, seed: int, steps: int = 40
) -> float:
    """Train a depth-2 MLP on digits (MSE, Adam, batch 64) with `Parametrization`; final loss."""
    task = _digits()
    torch.manual_seed(seed)
    model = WideMLP(64, width, 10, depth=2)
    param = Parametrization(model, ParametrizationConfig(parametrization, lr=lr, base_width=64))
    cfg = TrainConfig(
        steps=steps,
        loss="half_mse",
        batch_size=64,
        log_every=steps,
        seed=seed,
        track_features=False,
        track_weights=False,
        progress=False,
    )
    try:
        hist = train(
            model,
            task.x_train,
            task.y_train,
            config=cfg,
            optimizer=torch.optim.Adam(param.param_groups),
        )
    except TrainingDivergedError:
        return math.inf
    return hist.train_loss[-1]


def test_mup_lr_transfers_from_64_to_1024():
    """An LR tuned at width 64 stays near-optimal at width 1024 under muP (Adam, digits)."""
    df = lr_sweep(
        _digits_final_loss,
        log2_lrs=range(-8, -2),
        widths=(64, 1024),
        parametrizations=("mup",),
        workers=2,
        progress=False,
    )
    print(df.pivot(index="log2_lr", columns="width", values="loss"))
    opt = optima(df).set_index("width")
    lr64 = opt.loc[64, "log2_lr_opt"]
    assert not opt["at_edge"].any()
    wide = df[df["width"] == 1024].set_index("log2_lr")["loss"]
    assert abs(opt.loc[1024, "log2_lr_opt"] - lr64) <= 1  # optimum moves at most one octave
    assert wide[lr64] <= 1.15 * wide.min()  # the transferred LR costs at most 15% in loss
    assert wide.min() < opt.loc[64, "loss_opt"]  # and wider is better


def _bottleneck(width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(5, width),
        nn.ReLU(),
        nn.Linear(width, 4 * width),
        nn.ReLU(),
        nn.Linear(4 * width, width),  # an MLP down-projection: fan-in 4n, width ratio n / n0
        nn.ReLU(),
        nn.Linear(width, 3),
    )


@pytest.mark.parametrize("width", [32, 64])
def test_down_projection_takes_the_models_width_ratio(width):
    """n0 of a 4n -> n layer is its fan-in at the base width (4 n0), not base_width: at the base
    width its lr is lr and its std 1/sqrt(fan_in); at 2x, lr / 2 (Adam)."""
    base, lr = 32, 0.01
    model = _bottleneck(width)
    param = Parametrization(model, ParametrizationConfig("mup", lr=lr, base_width=base))
    down = param.layers[2]
    assert (down.n, down.n0) == (4 * width, 4 * base)
    assert down.lr == pytest.approx(lr * base / width)
    assert down.init_std == pytest.approx((4 * width) ** -0.5)
    if width == base:
        assert {s.lr for s in param.layers} == {lr}


def test_embedding_padding_row_stays_zero():
    model = nn.Sequential(nn.Embedding(10, 16, padding_idx=0), nn.Linear(16, 4))
    layers = {"0": "embedding", "1": "readout"}
    Parametrization(model, ParametrizationConfig(layers=layers, base_width=8))
    emb = model[0].module
    assert torch.all(emb.weight[0] == 0) and emb.weight[1:].abs().min() > 0


@pytest.mark.parametrize("name", ["sp", "mup"])
def test_global_lr_rule_keeps_the_rules_init_and_multipliers_with_one_learning_rate(name):
    """lr_rule "global": the rule's a and b, c = 0 (one lr at every width); "abc": its c."""
    per_layer = Parametrization(
        WideMLP(8, 256, 3, depth=2), ParametrizationConfig(name, base_width=32)
    )
    one = Parametrization(
        WideMLP(8, 256, 3, depth=2), ParametrizationConfig(name, lr_rule="global", base_width=32)
    )
    assert [(s.a, s.b) for s in one.layers] == [(s.a, s.b) for s in per_layer.layers]
    assert [s.c for s in one.layers] == [0.0, 0.0, 0.0]
    weights = [g for g in one.param_groups if g["role"] in ("embedding", "hidden", "readout")]
    assert {g["lr"] for g in weights} == {1e-3}  # (biases keep c = -a: width-free updates)
    assert per_layer.layers[1].lr == pytest.approx(1e-3 / 8)  # hidden Adam lr ~ 1/n in both
    assert "global lr" in str(one)
    with pytest.raises(ValueError, match="lr_rule='global' takes a named parametrization"):
        ParametrizationConfig(None, a=[0, 0, 0], b=[0, 0, 0], lr_rule="global").validate()
    with pytest.raises(ValueError, match="lr_rule must be one of"):
        ParametrizationConfig(name, lr_rule="per-layer").validate()


def test_the_old_spelling_lr_prefactor_warns_and_sets_lr():
    with pytest.warns(DeprecationWarning, match="lr="):
        cfg = ParametrizationConfig("mup", lr_prefactor=0.25)
    assert cfg.lr == 0.25
