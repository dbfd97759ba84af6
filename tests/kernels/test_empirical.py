"""Empirical NTK: against neural_tangents.empirical_ntk_fn on the same weights, and self-checks."""

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from neural_tangents import stax
from torch import nn

from ntk.kernels.empirical import StructuredUnsupported, empirical_ntk

jax.config.update("jax_enable_x64", True)

METHODS = ("structured", "jacobian", "ntvp")
TORCH_ACT = {"relu": torch.relu, "erf": torch.erf, "tanh": torch.tanh}
STAX_ACT = {
    "relu": stax.Relu,
    "erf": stax.Erf,
    "tanh": lambda: stax.Elementwise(fn=jnp.tanh),
}


# neural-tangents calls SP "standard"
NT_NAMES = {"ntk": "ntk", "sp": "standard"}


class MLP(nn.Module):
    """Dense -> act, `depth` times, then a Dense readout; stax.Dense conventions.

    "ntk": z = (w_std / sqrt(fan_in)) x W^T + b_std b with W, b ~ N(0, 1); the constants are
    applied in forward, so all parameters stay in nn.Linear.  "sp": z = x W^T + b.
    """

    def __init__(self, d, width, out, depth, act, w_std, b_std, parametrization, bias_out=False):
        super().__init__()
        self.bias_out = bias_out  # add the NTK bias outside F.linear
        dims = [d] + [width] * depth + [out]
        self.layers = nn.ModuleList(
            nn.Linear(i, o, bias=b_std is not None)
            for i, o in zip(dims[:-1], dims[1:], strict=True)
        )
        self.act, self.w_std, self.b_std, self.par = TORCH_ACT[act], w_std, b_std, parametrization
        for lin in self.layers:
            w_scale = 1.0 if parametrization == "ntk" else w_std / math.sqrt(lin.in_features)
            nn.init.normal_(lin.weight, std=w_scale)
            if lin.bias is not None:
                nn.init.normal_(lin.bias, std=1.0 if parametrization == "ntk" else b_std)

    def dense(self, lin, x):
        if self.par == "sp":
            return lin(x)
        c_w = self.w_std / math.sqrt(lin.in_features)
        if self.b_std is None:
            return lin(c_w * x)
        if self.bias_out:
            return F.linear(x, lin.weight) * c_w + self.b_std * lin.bias
        # b_std * (x (c_w / b_std) W^T + b) = c_w x W^T + b_std b
        return self.b_std * lin(x * (c_w / self.b_std))

    def forward(self, x):
        for lin in self.layers[:-1]:
            x = self.act(self.dense(lin, x))
        return self.dense(self.layers[-1], x)


def stax_twin(model: MLP):
    """The same network in stax, with the torch weights copied in (W as (in, out))."""
    layers, params = [], []
    for i, lin in enumerate(model.layers):
        layers.append(
            stax.Dense(
                lin.out_features, model.w_std, model.b_std, parameterization=NT_NAMES[model.par]
            )
        )
        w = jnp.asarray(lin.weight.detach().numpy().T)
        b = None if lin.bias is None else jnp.asarray(lin.bias.detach().numpy()[None, :])
        params.append((w, b))
        if i < len(model.layers) - 1:
            layers.append(STAX_ACT[model.act.__name__]())
            params.append(())
    _, apply_fn, _ = stax.serial(*layers)
    return apply_fn, params


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize(
    "act,parametrization,w_std,b_std,depth,bias_out",
    [
        ("relu", "sp", 1.4, 0.3, 2, False),
        ("erf", "ntk", 1.3, 0.2, 3, False),
        ("tanh", "ntk", 0.9, None, 1, False),
        ("relu", "ntk", 2.0, 0.5, 2, True),
    ],
)
def test_matches_neural_tangents(act, parametrization, w_std, b_std, depth, bias_out):
    torch.manual_seed(0)
    model = MLP(4, 24, 3, depth, act, w_std, b_std, parametrization, bias_out).double()
    x1 = torch.randn(6, 4, dtype=torch.float64)
    x2 = torch.randn(5, 4, dtype=torch.float64)
    apply_fn, params = stax_twin(model)
    j1, j2 = jnp.asarray(x1.numpy()), jnp.asarray(x2.numpy())
    # the twins compute the same function
    assert rel_err(apply_fn(params, j1), model(x1).detach()) < 1e-12

    traced = nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,))(j1, j2, params)
    full = nt.empirical_ntk_fn(apply_fn, trace_axes=())(j1, j2, params)
    assert full.shape == (6, 5, 3, 3)
    for method in ("auto",) + METHODS:
        ours = empirical_ntk(model, x1, x2, method=method)
        assert ours.shape == (6, 5) and ours.dtype == torch.float64
        assert rel_err(ours, traced) < 1e-10, method
        ours_full = empirical_ntk(model, x1, x2, method=method, trace_outputs=False)
        assert rel_err(ours_full, full) < 1e-10, method
    # the traced kernel averages (not sums) the diagonal blocks, as neural-tangents does
    assert rel_err(ours, np.asarray(full).diagonal(axis1=2, axis2=3).mean(-1)) < 1e-12


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.gate = nn.Linear(width, width, bias=False)

    def forward(self, h):
        # residual, product of two branches, constant multiplier: all elementwise
        return h + 0.5 * torch.tanh(self.fc(h)) * torch.sigmoid(self.gate(h))


class ScaledReadout(nn.Linear):
    """A Linear subclass that rescales its input inside forward (like mup.MuReadout)."""

    def forward(self, x):
        return super().forward(x / 3.0)


class Net(nn.Module):
    def __init__(self, d=3, width=10, out=2):
        super().__init__()
        self.embed = nn.Linear(d, width)
        self.blocks = nn.ModuleDict({"first": Block(width), "second": Block(width)})
        self.head = ScaledReadout(width, out)

    def forward(self, x):
        h = F.gelu(self.embed(x))
        for block in self.blocks.values():
            h = block(h)
        return self.head(torch.relu(h).pow(2) + h)


@pytest.mark.parametrize("trace_outputs", [True, False])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_methods_agree_on_custom_module(trace_outputs, chunk_size):
    torch.manual_seed(1)
    model = Net().double()
    x1 = torch.randn(7, 3, dtype=torch.float64)
    x2 = torch.randn(4, 3, dtype=torch.float64)
    for y in (None, x2):
        ref = empirical_ntk(model, x1, y, method="jacobian", trace_outputs=trace_outputs)
        for method in ("auto",) + METHODS:
            k = empirical_ntk(
                model, x1, y, method=method, trace_outputs=trace_outputs, chunk_size=chunk_size
            )
            assert k.shape == ref.shape
            assert rel_err(k, ref) < 1e-12, method


def test_symmetric_psd_and_finite_corners():
    torch.manual_seed(2)
    model = MLP(5, 32, 2, 2, "relu", 1.5, 0.1, "sp").double()
    x = torch.randn(8, 5, dtype=torch.float64)
    x[3] = 0.0  # a zero vector
    x[5] = x[4]  # identical points
    k = empirical_ntk(model, x)
    assert torch.isfinite(k).all()
    assert torch.allclose(k, k.T, rtol=1e-12, atol=0)
    assert torch.linalg.eigvalsh(k).min() > -1e-10 * k.diagonal().max()
    assert torch.allclose(k[4], k[5]) and torch.allclose(k[:, 4], k[:, 5])
    full = empirical_ntk(model, x, trace_outputs=False)
    assert torch.allclose(full, full.permute(1, 0, 3, 2), rtol=1e-12, atol=1e-14)


def test_model_unchanged_and_trainable_only():
    torch.manual_seed(3)
    model = Net().double().train()
    model.embed.weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():  # works inside no_grad; does not leak into it
        ks = {m: empirical_ntk(model, x, method=m, trainable_only=True) for m in METHODS}
        k_all = empirical_ntk(model, x, method="structured")
    assert all(rel_err(k, ks["jacobian"]) < 1e-12 for k in ks.values())
    # leaving out embed.weight removes its (positive semi-definite) contribution
    assert torch.linalg.eigvalsh(k_all - ks["structured"]).min() > -1e-10
    assert not torch.allclose(k_all, ks["structured"])
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_float32_and_scalar_output():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(0))
    x = torch.randn(6, 3)
    k = empirical_ntk(model, x.numpy())  # numpy input, (N,) output
    assert k.dtype == torch.float32 and k.shape == (6, 6)
    ref = empirical_ntk(model.double(), x.double(), method="jacobian")
    assert rel_err(k, ref) < 1e-5


def _tied(width=6):
    lin = nn.Linear(width, width)
    return nn.Sequential(nn.Linear(3, width), nn.Tanh(), lin, nn.Tanh(), lin, nn.Linear(width, 2))


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return self.scale * self.lin(x)


class Sequence(nn.Module):  # a Linear on (N, T, d): rows are not examples
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x):
        return self.lin(x.reshape(len(x), 2, 3)).sum(1)


class InplaceBias(nn.Module):  # out.add_(b) would escape the recorder: refused
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4, bias=False)
        self.b = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return torch.tanh(self.lin(x).add_(self.b))


class BiasSum(nn.Module):  # a bias reduced before it meets the batch: not a per-unit bias
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.b = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return torch.tanh(self.lin(x)) + self.b.sum()


@pytest.mark.parametrize(
    "make,match",
    [
        (InplaceBias, "'b' is used in add_"),
        (BiasSum, "'b' is used in sum"),
        (_tied, "enters 2 linear maps"),
        (Scaled, "'scale' is used in"),
        (Sequence, "expected"),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)), "layer_norm"),
    ],
)
def test_structured_refuses_unfit_models_and_auto_falls_back(make, match):
    torch.manual_seed(5)
    model = make().double()
    x = torch.randn(4, 6 if isinstance(model, Sequence) else 3, dtype=torch.float64)
    with pytest.raises(StructuredUnsupported, match=match):
        empirical_ntk(model, x, method="structured")
    ref = empirical_ntk(model, x, method="jacobian")
    assert rel_err(empirical_ntk(model, x), ref) < 1e-12
    assert rel_err(empirical_ntk(model, x, method="ntvp"), ref) < 1e-12


def test_mup_readout():
    mup = pytest.importorskip("mup")

    class MuNet(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.fc = nn.Linear(3, width)
            self.readout = mup.MuReadout(width, 2, output_mult=2.0)

        def forward(self, x):
            return self.readout(torch.relu(self.fc(x)))

    torch.manual_seed(7)
    model = mup.set_base_shapes(MuNet(32), MuNet(8)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    ref = empirical_ntk(model, x, method="jacobian", trace_outputs=False)
    for method in ("structured", "ntvp"):
        k = empirical_ntk(model, x, method=method, trace_outputs=False)
        assert rel_err(k, ref) < 1e-12, method


def test_integer_inputs_for_embeddings():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.fc = nn.Linear(8, 2)

        def forward(self, t):
            return self.fc(torch.tanh(self.emb(t)).flatten(1))

    torch.manual_seed(8)
    model = Tokens().double()
    t = torch.randint(0, 10, (5, 2))
    with pytest.raises(StructuredUnsupported, match="'emb.weight' is used in embedding"):
        empirical_ntk(model, t, method="structured")
    k = empirical_ntk(model, t)
    assert k.dtype == torch.float64 and rel_err(k, empirical_ntk(model, t, method="ntvp")) < 1e-12


def test_batchnorm_and_dropout():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1))
    model.append(nn.Linear(8, 1))
    model = model.double()
    x = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="batch statistics"):
        empirical_ntk(model, x)
    model[1].eval()
    with pytest.raises(ValueError, match="dropout"):
        empirical_ntk(model, x)
    model.eval()  # running statistics: examples independent again
    ref = empirical_ntk(model, x, method="jacobian")
    assert rel_err(empirical_ntk(model, x), ref) < 1e-12
    assert rel_err(empirical_ntk(model, x, method="ntvp"), ref) < 1e-12


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"model": lambda x: x}, TypeError, "model"),
        ({"x1": torch.randn(4, 5)}, ValueError, "x1"),
        ({"x2": torch.randn(4, 2)}, ValueError, "x1 and x2"),
        ({"x1": torch.tensor([[0.0, float("nan"), 1.0]])}, ValueError, "x1 contains NaN"),
        ({"x2": torch.full((2, 3), float("inf"))}, ValueError, "x2 contains NaN or Inf"),
        ({"x1": torch.empty(0, 3)}, ValueError, "x1 is an empty batch"),
        ({"x1": torch.randn(3)}, ValueError, "x1 must have 2 dimensions"),
        ({"x1": "abc"}, TypeError, "x1"),
        ({"method": "fast"}, ValueError, "method must be one of"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"chunk_size": 2.5}, TypeError, "chunk_size"),
        ({"trace_outputs": "yes"}, TypeError, "trace_outputs"),
        ({"model": nn.ReLU()}, ValueError, "no parameters"),
    ],
)
def test_bad_input(kwargs, err, match):
    args = {"model": nn.Linear(3, 2), "x1": torch.randn(4, 3), "x2": None} | kwargs
    with pytest.raises(err, match=match):
        empirical_ntk(args.pop("model"), args.pop("x1"), args.pop("x2"), **args)


def test_overflow_and_nan_parameters_are_clear_errors():
    from ntk.models import WideMLP

    torch.manual_seed(5)
    x = torch.randn(4, 3)
    model = WideMLP(3, 64, 1, depth=3, weight_std=1e8)  # f ~ 1e24 in float32: Θ ~ 1e48 overflows
    for method in METHODS:
        with pytest.raises(FloatingPointError, match="Inf or NaN.*float32"):
            empirical_ntk(model, x, method=method)
    assert torch.isfinite(empirical_ntk(model.double(), x)).all()  # float64 has the range
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with torch.no_grad():  # (a NaN in a linear model's own weight would not reach its NTK)
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        empirical_ntk(model, x)


def test_width_one_network():
    """A width-1 hidden layer (rank-1 layers, possibly dead ReLU units) is still exact."""
    from ntk.models import WideMLP

    torch.manual_seed(6)
    x = torch.randn(6, 3, dtype=torch.float64)
    for parametrization in ("sp", "ntk"):
        model = WideMLP(3, 1, 2, depth=2, bias_std=0.5, parametrization=parametrization).double()
        ref = empirical_ntk(model, x, method="jacobian", trace_outputs=False)
        assert torch.isfinite(ref).all()
        for method in ("structured", "ntvp"):
            k = empirical_ntk(model, x, method=method, trace_outputs=False)
            assert rel_err(k, ref) < 1e-12
        # the readout bias (forward multiplier c: 1 in sp, bias_std in ntk) adds c^2 to
        # every traced entry, and is all that is left for inputs where the unit is dead
        floor = model.multipliers(model.readout)[1] ** 2
        k = empirical_ntk(model, x)
        assert (k.diagonal() >= floor - 1e-12).all() and (k.diagonal() > floor + 1e-3).any()


class _CNN(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)
        self.fc = nn.Linear(width, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).mean((2, 3)))


def test_auto_says_which_method_it_chose_and_agrees_with_it():
    """No structured path for convolutions: "auto" times Jacobian rows and NTK-vector products
    on two examples and says what it chose (the speed itself: bench/empirical.py)."""
    torch.manual_seed(0)
    model, x = _CNN(16).double(), torch.randn(6, 2, 5, 5, dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"method='auto'\) chose '(jacobian|ntvp)': estimated"):
        k = empirical_ntk(model, x)
    ref = empirical_ntk(model, x, method="jacobian")
    assert torch.allclose(k, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("n1", "n2", "symmetric", "chunk"), [(7, 7, True, 3), (5, 7, False, 2)])
def test_cost_model_counts_the_rows_blocked_computes(n1, n2, symmetric, chunk):
    from ntk.kernels import empirical as emp

    seen = []

    def feats(x):
        seen.append(len(x))
        return x

    x1 = torch.randn(n1, 2)
    x2 = x1 if symmetric else torch.randn(n2, 2)
    emp._blocked(x1, x2, symmetric, chunk, feats, feats, lambda a, b: a @ b.T, True, 1)
    assert sum(seen) == emp._jacobian_feature_rows(n1, n2, symmetric, chunk)
