"""WideMLP and WideMLP_MuP: shapes, init scalings, neural-tangents equality, mup base shapes."""

from __future__ import annotations

import math

import mup
import numpy as np
import pytest
import torch

from ntk.models import WideMLP, WideMLP_MuP, setup_mup_scaling

pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in conftest.py


@pytest.fixture(scope="module")
def nt():
    from ntk.reference import load_neural_tangents

    return load_neural_tangents(x64=True)


def sphere(n: int, d: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """n points on the sphere of radius sqrt(d): ||x||^2 / d = 1."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return x * (math.sqrt(d) / x.norm(dim=1, keepdim=True))


# ---------------------------------------------------------------- shapes and arguments


@pytest.mark.parametrize("parametrization", ["sp", "ntk"])
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_widemlp_shapes(parametrization, depth):
    model = WideMLP(5, 17, 3, depth=depth, parametrization=parametrization)
    x = torch.randn(4, 5)
    assert model(x).shape == (4, 3)
    assert len(model.hidden) == depth
    assert model.features(x).shape == ((4, 17) if depth else (4, 5))
    acts = model.hidden_activations(x)
    assert [a.shape for a in acts] == [(4, 17)] * depth
    if depth:
        torch.testing.assert_close(acts[-1], model.features(x))
    # parameters only in nn.Linear modules
    assert all(isinstance(m, torch.nn.Linear) for m in model.layers)
    n_params = sum(p.numel() for m in model.layers for p in m.parameters())
    assert n_params == sum(p.numel() for p in model.parameters())


def test_widemlp_no_bias_and_callable_activation():
    model = WideMLP(3, 8, depth=2, activation=torch.sin, bias=False)
    assert all(layer.bias is None for layer in model.layers)
    x = torch.randn(2, 3)
    h = torch.sin(model.hidden[0](x))
    torch.testing.assert_close(model.hidden_activations(x)[0], h)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(width=0), ValueError, "width"),
        (dict(width=2.5), TypeError, "width"),
        (dict(depth=-1), ValueError, "depth"),
        (dict(weight_std=-1.0), ValueError, "weight_std"),
        (dict(bias_std=float("nan")), ValueError, "bias_std"),
        (dict(parametrization="mup"), ValueError, "parametrization"),
        (dict(activation="swishy"), ValueError, "activation"),
        (dict(bias="no"), TypeError, "bias"),
    ],
)
def test_widemlp_bad_arguments(kwargs, error, match):
    args = dict(in_features=3, width=8) | kwargs
    with pytest.raises(error, match=match):
        WideMLP(**args)


def test_mup_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        WideMLP_MuP(3, 8, depth=0)
    with pytest.raises(ValueError, match="base_width"):
        WideMLP_MuP(3, 8, base_width=0)
    with pytest.raises(ValueError, match="delta_width"):
        setup_mup_scaling(lambda w: WideMLP_MuP(3, w, set_base_shapes=False), 8, 4, delta_width=4)
    with pytest.raises(TypeError, match="model_fn"):
        setup_mup_scaling(8, 8, 4)
    for bad in (-1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="output_mult"):
            WideMLP_MuP(3, 8, base_width=4, output_mult=bad)
    with pytest.raises(TypeError, match="output_mult"):  # a string is a type error, as everywhere
        WideMLP_MuP(3, 8, base_width=4, output_mult="2")
    with pytest.raises(TypeError, match="readout_zero_init"):
        WideMLP_MuP(3, 8, base_width=4, readout_zero_init="yes")


@pytest.mark.parametrize("make", [lambda: WideMLP(3, 8), lambda: WideMLP_MuP(3, 8, base_width=4)])
def test_forward_input_errors_name_x(make):
    """Wrong feature count or dtype: a ValueError / TypeError naming x, not a torch matmul error."""
    model = make()
    for call in (model, model.features, model.hidden_activations):
        with pytest.raises(ValueError, match=r"x must have shape \(N, 3\).*\(4, 5\)"):
            call(torch.randn(4, 5))
        with pytest.raises(TypeError, match="x has dtype torch.float64.*float32"):
            call(torch.randn(4, 3, dtype=torch.float64))
        with pytest.raises(TypeError, match="x must be a torch.Tensor"):
            call([[0.0, 1.0, 2.0]])
    assert model.double()(torch.randn(4, 3, dtype=torch.float64)).shape == (4, 1)


# ---------------------------------------------------------------- init scalings


@pytest.mark.parametrize("width", [128, 512, 2048])
def test_init_weight_std(width):
    torch.manual_seed(0)
    ws, bs = 1.7, 0.3
    std = WideMLP(10, width, 4, depth=2, weight_std=ws, bias_std=bs, parametrization="sp")
    ntk = WideMLP(10, width, 4, depth=2, weight_std=ws, bias_std=bs, parametrization="ntk")
    for s_layer, n_layer in zip(std.layers, ntk.layers, strict=True):
        fan_in = s_layer.in_features
        n = s_layer.weight.numel()
        # the sample std of n Gaussians has relative error ~ 1/sqrt(2n)
        tol = 5 / math.sqrt(2 * n)
        assert s_layer.weight.std().item() == pytest.approx(ws / math.sqrt(fan_in), rel=tol)
        assert n_layer.weight.std().item() == pytest.approx(1.0, rel=tol)
        # effective weights (multiplier x parameter) have the same law in both
        w_mult, b_mult = ntk.multipliers(n_layer)
        assert w_mult == pytest.approx(ws / math.sqrt(fan_in))
        assert b_mult == bs
        assert std.multipliers(s_layer) == (1.0, 1.0)


@pytest.mark.parametrize("parametrization", ["sp", "ntk"])
def test_preactivation_variance_matches_relu_recursion(parametrization):
    """q_1 = ws^2 ||x||^2/d + bs^2, q_{l+1} = ws^2 q_l / 2 + bs^2 (ReLU), at several widths."""
    ws, bs, d = 1.4, 0.5, 20
    x = sphere(8, d, dtype=torch.float32)
    q = [ws**2 + bs**2]
    q.append(ws**2 * q[0] / 2 + bs**2)
    for width in (256, 1024, 4096):
        torch.manual_seed(width)
        model = WideMLP(
            d, width, 1, depth=2, weight_std=ws, bias_std=bs, parametrization=parametrization
        )
        with torch.no_grad():
            z1 = model.dense(model.hidden[0], x)  # (8, width)
            z2 = model.dense(model.hidden[1], torch.relu(z1))
        for z, q_l in zip((z1, z2), q, strict=True):
            var = z.pow(2).mean().item()  # average over units and inputs
            assert var == pytest.approx(q_l, rel=6 / math.sqrt(width))


def nt_network(nt, width, out, depth, activation, ws, bs, parametrization):
    stax = nt.stax
    act = {"relu": stax.Relu(), "erf": stax.Erf(), "gelu": stax.Gelu(approximate=False)}[activation]
    name = {"ntk": "ntk", "sp": "standard"}[parametrization]  # neural-tangents' name for SP
    layers = [stax.Dense(width, ws, bs, parameterization=name), act] * depth
    return stax.serial(*layers, stax.Dense(out, ws, bs, parameterization=name))


@pytest.mark.parametrize("parametrization", ["sp", "ntk"])
@pytest.mark.parametrize(("activation", "bs"), [("relu", 0.2), ("erf", 0.0), ("gelu", 0.7)])
def test_widemlp_equals_neural_tangents_network(nt, parametrization, activation, bs):
    """Same parameters in neural-tangents' layout give the same function (float64)."""
    import jax.numpy as jnp

    ws, d, width, out, depth = 1.3, 6, 32, 3, 3
    torch.manual_seed(0)
    model = WideMLP(d, width, out, depth, activation, ws, bs, parametrization).double()
    _, apply_fn, _ = nt_network(nt, width, out, depth, activation, ws, bs, parametrization)
    params = []
    for layer in model.layers:  # NT Dense params: W (fan_in, fan_out), b (1, fan_out)
        w = jnp.asarray(layer.weight.detach().numpy().T)
        params += [(w, jnp.asarray(layer.bias.detach().numpy()[None, :])), ()]
    params = params[:-1]  # no activation after the readout
    x = sphere(5, d)
    expected = np.asarray(apply_fn(params, jnp.asarray(x.numpy())))
    np.testing.assert_allclose(model(x).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("parametrization", ["sp", "ntk"])
def test_output_covariance_matches_nngp(nt, parametrization):
    """E_k f_k(x) f_k(x') over many readout units = NNGP K(x, x') up to O(1/sqrt(width)).

    Compared with neural-tangents' analytic kernel_fn and with ntk.kernels.MLPKernel.
    """
    import jax.numpy as jnp

    from ntk.kernels import MLPKernel

    ws, bs, d, depth, width, out = 1.5, 0.3, 10, 2, 4096, 2048
    x = sphere(4, d)
    torch.manual_seed(0)
    model = WideMLP(d, width, out, depth, "erf", ws, bs, parametrization).double()
    with torch.no_grad():
        f = model(x)  # (4, out)
    empirical = (f @ f.T / out).numpy()
    _, _, kernel_fn = nt_network(nt, width, 1, depth, "erf", ws, bs, parametrization)
    reference = np.asarray(kernel_fn(jnp.asarray(x.numpy()), None, "nngp"))
    ours = MLPKernel(depth, "erf", ws, bs, parametrization, width=width).nngp(x).numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    # Monte Carlo error: readout average over `out` units and hidden-layer average over width.
    np.testing.assert_allclose(empirical, reference, atol=0.08 * reference.max())
    assert np.abs(empirical - reference).max() > 0  # a real sample, not the kernel itself


# ---------------------------------------------------------------- muP on the mup package


def test_mup_shapes_and_infshapes():
    base, width, d, out = 16, 64, 5, 3
    model = WideMLP_MuP(d, width, out, depth=2, base_width=base)
    assert model(torch.randn(7, d)).shape == (7, out)
    assert model.features(torch.randn(7, d)).shape == (7, width)
    assert isinstance(model.readout, mup.MuReadout)
    assert all(type(layer) is torch.nn.Linear for layer in model.hidden)
    mult = width / base
    shapes = {n: p.infshape for n, p in model.named_parameters()}
    # input layer: (inf, fin) "vector-like"; hidden: (inf, inf); readout: (fin, inf)
    assert [dim.isinf() for dim in shapes["hidden.0.weight"]] == [True, False]
    assert [dim.isinf() for dim in shapes["hidden.1.weight"]] == [True, True]
    assert [dim.isinf() for dim in shapes["readout.weight"]] == [False, True]
    assert [dim.isinf() for dim in shapes["readout.bias"]] == [False]
    for name in ("hidden.0.weight", "hidden.0.bias", "hidden.1.weight", "readout.weight"):
        assert shapes[name].width_mult() == pytest.approx(mult)
        assert shapes[name].main.base_dim == base
    assert shapes["readout.bias"].width_mult() == 1
    assert model.width_mult() == pytest.approx(mult)


@pytest.mark.parametrize("width", [64, 256, 1024])
def test_mup_init_std_and_readout_multiplier(width):
    base, ws, d = 32, 1.2, 8
    torch.manual_seed(1)
    model = WideMLP_MuP(d, width, 512, depth=2, weight_std=ws, base_width=base)
    mult = width / base
    w_in, w_hid, w_out = (layer.weight for layer in model.layers)
    tol = lambda w: 5 / math.sqrt(2 * w.numel())  # noqa: E731
    assert w_in.std().item() == pytest.approx(ws / math.sqrt(d), rel=tol(w_in))
    assert w_hid.std().item() == pytest.approx(ws / math.sqrt(width), rel=tol(w_hid))
    # readout weights keep their base-width variance; the 1/width_mult is in forward
    assert w_out.std().item() == pytest.approx(ws / math.sqrt(base), rel=tol(w_out))
    h = torch.randn(3, width)
    with torch.no_grad():
        torch.testing.assert_close(
            model.readout(h), torch.nn.functional.linear(h / mult, w_out, model.readout.bias)
        )


def test_mup_output_scale_shrinks_as_inverse_sqrt_width_mult():
    """At init the muP output has std ~ width_mult^(-1/2): fitted log-log slope near -0.5."""
    base, d = 32, 8
    x = sphere(16, d, dtype=torch.float32)
    widths = [64, 256, 1024, 4096]
    stds = []
    for width in widths:
        torch.manual_seed(width)
        with torch.no_grad():
            stds.append(WideMLP_MuP(d, width, 256, base_width=base)(x).std().item())
    slope = np.polyfit(np.log(widths), np.log(stds), 1)[0]
    assert slope == pytest.approx(-0.5, abs=0.08)


def test_mup_equals_sp_widemlp_at_base_width():
    base, d = 24, 5
    torch.manual_seed(0)
    mu = WideMLP_MuP(d, base, 2, depth=3, activation="tanh", bias_std=0.4, base_width=base)
    sp = WideMLP(d, base, 2, depth=3, activation="tanh", bias_std=0.4, parametrization="sp")
    sp.load_state_dict(mu.state_dict())
    x = torch.randn(6, d)
    torch.testing.assert_close(mu(x), sp(x))


def test_mup_readout_zero_init():
    model = WideMLP_MuP(4, 128, 3, base_width=32, readout_zero_init=True, bias_std=1.0)
    assert torch.count_nonzero(model.readout.weight) == 0
    assert torch.count_nonzero(model.readout.bias) == 0
    assert torch.count_nonzero(model.hidden[0].bias) > 0
    assert torch.count_nonzero(model(torch.randn(3, 4))) == 0


def test_mup_optimizer_learning_rates_scale_with_width_mult():
    """MuAdam: lr / width_mult on hidden (inf x inf) weights, lr elsewhere; MuSGD: lr on hidden
    weights, lr * width_mult on vector-like parameters (input weights, biases, readout)."""
    lr, base = 0.01, 32
    for width in (64, 256):
        model = WideMLP_MuP(5, width, 2, base_width=base)
        mult = width / base
        names = {id(p): n for n, p in model.named_parameters()}

        def lr_of(opt, names=names):
            return {names[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}

        adam = lr_of(mup.MuAdam(model.parameters(), lr=lr))
        assert adam["hidden.1.weight"] == pytest.approx(lr / mult)
        for name in ("hidden.0.weight", "hidden.0.bias", "readout.weight", "readout.bias"):
            assert adam[name] == pytest.approx(lr)
        sgd = lr_of(mup.MuSGD(model.parameters(), lr=lr))
        assert sgd["hidden.1.weight"] == pytest.approx(lr)
        for name in ("hidden.0.weight", "hidden.0.bias", "readout.weight"):
            assert sgd[name] == pytest.approx(lr * mult)
        assert sgd["readout.bias"] == pytest.approx(lr)


def test_setup_mup_scaling_on_a_plain_model():
    """The helper tags any model_fn's parameters and rescales PyTorch's default init (mup's
    default), e.g. the readout weights grow by sqrt(width_mult)."""

    def model_fn(width):
        return torch.nn.Sequential(
            torch.nn.Linear(3, width), torch.nn.ReLU(), mup.MuReadout(width, 2)
        )

    torch.manual_seed(0)
    reference = model_fn(400)
    torch.manual_seed(0)
    model = setup_mup_scaling(model_fn, 400, 100)
    assert model[0].weight.infshape.width_mult() == pytest.approx(4.0)
    torch.testing.assert_close(model[2].weight, reference[2].weight * 2.0)


def test_standard_is_an_alias_of_sp():
    torch.manual_seed(0)
    sp = WideMLP(3, 8, parametrization="sp")
    torch.manual_seed(0)
    alias = WideMLP(3, 8, parametrization="standard")
    assert alias.parametrization == "sp"
    x = torch.randn(4, 3)
    torch.testing.assert_close(alias(x), sp(x), rtol=0, atol=0)
