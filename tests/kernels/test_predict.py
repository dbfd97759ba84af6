"""ntk.predict against neural_tangents.predict (same kernel matrices), plus exact properties."""

import os
from collections import namedtuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from ntk.kernels.predict import (
    LinearizedModel,
    Prediction,
    gp_posterior,
    gradient_descent_mse,
    gradient_descent_mse_ensemble,
)

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
nt = pytest.importorskip("neural_tangents")
stax = nt.stax

N, M, D, K = 10, 6, 4, 2  # train points, test points, input dim, outputs
LR = 0.5
TIMES = [0.0, 1.0, 10.0, 100.0, 1e3, 1e4, float("inf")]  # τ = LR t / (N K): λ_min τ ≈ 90 at 1e4
TOL = 1e-6
Kernels = namedtuple("Kernels", "nngp ntk")


def tt(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def assert_rel(ours: torch.Tensor, ref, tol: float = TOL) -> None:
    """||ours - ref|| <= tol ||ref|| (Frobenius), slice by slice along a leading time axis."""
    ref = tt(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    for a, b in zip(
        ours.reshape(-1, *ours.shape[-2:]), ref.reshape(-1, *ref.shape[-2:]), strict=True
    ):
        err = (a - b).norm().item()
        assert err <= tol * b.norm().item() + 1e-13, (
            f"rel err {err / max(b.norm().item(), 1e-300):.3g}"
        )


@pytest.fixture(scope="module")
def problem():
    """A depth-2 ReLU MLP's exact kernels from neural-tangents on random inputs.

    NT's predictors receive a `kernel_fn` that looks the same kernel matrices up by point index
    (the inputs are indices), so both libraries see identical kernels and stax runs only once.
    """
    rng = np.random.default_rng(0)
    x_all = rng.normal(size=(N + M, D))
    y_train = rng.normal(size=(N, K))
    layers = [stax.Dense(512, W_std=1.5, b_std=0.2), stax.Relu()] * 2
    _, _, stax_kernel_fn = stax.serial(*layers, stax.Dense(K, W_std=1.5, b_std=0.2))
    k_all = stax_kernel_fn(x_all, None, ("nngp", "ntk"))
    kernels = {"nngp": np.asarray(k_all.nngp), "ntk": np.asarray(k_all.ntk)}

    def kernel_fn(x1, x2=None, get=None):
        i = np.asarray(x1)[:, 0].astype(int)
        j = i if x2 is None else np.asarray(x2)[:, 0].astype(int)
        if isinstance(get, str):
            return jax.numpy.asarray(kernels[get][np.ix_(i, j)])
        return Kernels(*(jax.numpy.asarray(kernels[g][np.ix_(i, j)]) for g in Kernels._fields))

    train, test = slice(0, N), slice(N, N + M)
    return {
        "kernel_fn": kernel_fn,
        "x_train": np.arange(N)[:, None],
        "x_test": np.arange(N, N + M)[:, None],
        "y_np": y_train,
        "y": tt(y_train),
        **{f"{g}_train": tt(kernels[g][train, train]) for g in kernels},
        **{f"{g}_test_train": tt(kernels[g][test, train]) for g in kernels},
        "nngp_test": tt(kernels["nngp"][test, test]),
    }


def ensemble(p, t, mode="ntk", **kw) -> Prediction:
    """Our ensemble on p's kernels; mode "nngp" trains with the NNGP as tangent kernel."""
    return gradient_descent_mse_ensemble(
        p[f"{mode}_train"],
        p[f"{mode}_test_train"],
        p["y"],
        t,
        nngp_train=p["nngp_train"],
        nngp_test_train=p["nngp_test_train"],
        nngp_test=p["nngp_test"],
        learning_rate=LR,
        **kw,
    )


# ----------------------------------------------------------------------------- vs neural-tangents


# NNGP kernels as tangent kernels give NT's get="nngp" (readout-only training); with a ridge NT's
# nngp covariance also puts the ridge in K's place, so that mode is compared at diag_reg = 0 only.
@pytest.mark.parametrize(("mode", "diag_reg"), [("ntk", 0.0), ("ntk", 1e-2), ("nngp", 0.0)])
def test_ensemble_matches_neural_tangents(problem, mode, diag_reg):
    p = problem
    predict_fn = nt.predict.gradient_descent_mse_ensemble(
        p["kernel_fn"], p["x_train"], p["y_np"], learning_rate=LR, diag_reg=diag_reg
    )
    ref = predict_fn(np.array(TIMES), p["x_test"], mode, compute_cov=True)
    ours = ensemble(p, torch.tensor(TIMES), mode, diag_reg=diag_reg)
    assert_rel(ours.mean, ref.mean)
    assert_rel(ours.cov, ref.covariance)
    # t = None is the linear-solve end of training, a scalar t drops the time axis
    ref_inf = predict_fn(None, p["x_test"], mode, compute_cov=True)
    ours_inf = ensemble(p, None, mode, diag_reg=diag_reg)
    assert_rel(ours_inf.mean, ref_inf.mean)
    assert_rel(ours_inf.cov, ref_inf.covariance)
    ours_10 = ensemble(p, 10.0, mode, diag_reg=diag_reg)
    assert_rel(ours_10.mean, ref.mean[2])
    # train-set predictions (NT's x_test=None)
    ref_train = predict_fn(np.array(TIMES[:-1]), None, mode, compute_cov=True)
    ours_train = gradient_descent_mse_ensemble(
        p[f"{mode}_train"],
        None,
        p["y"],
        torch.tensor(TIMES[:-1]),
        nngp_train=p["nngp_train"],
        learning_rate=LR,
        diag_reg=diag_reg,
    )
    assert_rel(ours_train.mean, ref_train.mean)
    assert_rel(ours_train.cov, ref_train.covariance)


@pytest.mark.parametrize(("diag_reg", "absolute"), [(0.0, False), (1e-3, False), (0.3, True)])
def test_gp_posterior_matches_neural_tangents(problem, diag_reg, absolute):
    p = problem
    predict_fn = nt.predict.gp_inference(
        p["nngp_train"].numpy(), p["y_np"], diag_reg=diag_reg, diag_reg_absolute_scale=absolute
    )
    ref = predict_fn("nngp", p["nngp_test_train"].numpy(), p["nngp_test"].numpy())
    ours = gp_posterior(
        p["nngp_train"],
        p["nngp_test_train"],
        p["y"],
        p["nngp_test"],
        diag_reg=diag_reg,
        diag_reg_absolute_scale=absolute,
    )
    assert_rel(ours.mean, ref.mean)
    assert_rel(ours.cov, ref.covariance)
    assert gp_posterior(p["nngp_train"], p["nngp_test_train"], p["y"]).cov is None


@pytest.mark.parametrize("diag_reg", [0.0, 1e-2])
def test_gradient_descent_mse_matches_neural_tangents(problem, diag_reg):
    p = problem
    rng = np.random.default_rng(1)
    f0_train, f0_test = rng.normal(size=(N, K)), rng.normal(size=(M, K))
    ntk_td = p["ntk_test_train"].numpy()
    predict_fn = nt.predict.gradient_descent_mse(
        p["ntk_train"].numpy(), p["y_np"], learning_rate=LR, diag_reg=diag_reg
    )
    ref_train, ref_test = predict_fn(np.array(TIMES), f0_train, f0_test, ntk_td)
    args = (p["ntk_train"], p["ntk_test_train"], p["y"], tt(f0_train), tt(f0_test))
    ours = gradient_descent_mse(*args, torch.tensor(TIMES), learning_rate=LR, diag_reg=diag_reg)
    assert_rel(ours, ref_test)
    ours_train = gradient_descent_mse(
        p["ntk_train"],
        None,
        p["y"],
        tt(f0_train),
        None,
        torch.tensor(TIMES),
        learning_rate=LR,
        diag_reg=diag_reg,
    )
    assert_rel(ours_train, ref_train)
    _, ref_inf = predict_fn(None, f0_train, f0_test, ntk_td)
    assert_rel(gradient_descent_mse(*args, learning_rate=LR, diag_reg=diag_reg), ref_inf)


def test_gradient_descent_mse_full_kernels_match_neural_tangents():
    """Full (N, N, K, K) kernels of random features vs NT's trace_axes=()."""
    rng = np.random.default_rng(2)
    n, m, k, p = 7, 4, 3, 40
    jac_train, jac_test = rng.normal(size=(n, k, p)), rng.normal(size=(m, k, p))
    ntk_dd = np.einsum("iap,jbp->ijab", jac_train, jac_train) / p
    ntk_td = np.einsum("iap,jbp->ijab", jac_test, jac_train) / p
    y, f0_train, f0_test = (rng.normal(size=s) for s in [(n, k), (n, k), (m, k)])
    ts = np.array([0.0, 3.0, 30.0, np.inf])
    ref_train, ref_test = nt.predict.gradient_descent_mse(ntk_dd, y, 2.0, trace_axes=())(
        ts, f0_train, f0_test, ntk_td
    )
    ours = gradient_descent_mse(
        tt(ntk_dd),
        tt(ntk_td),
        tt(y),
        tt(f0_train),
        tt(f0_test),
        torch.tensor(ts),
        learning_rate=2.0,
    )
    assert_rel(ours, ref_test)
    ours_train = gradient_descent_mse(
        tt(ntk_dd), None, tt(y), tt(f0_train), None, torch.tensor(ts), learning_rate=2.0
    )
    assert_rel(ours_train, ref_train)


# ----------------------------------------------------------------------------- properties


def test_ensemble_starts_at_the_prior(problem):
    p = problem
    out = ensemble(p, 0.0)
    assert torch.equal(out.mean, torch.zeros(M, K))
    torch.testing.assert_close(out.cov, p["nngp_test"], rtol=1e-14, atol=0)


def test_ensemble_interpolates_train_targets_at_infinity(problem):
    """Test inputs = train inputs through the general formula: mean -> y, cov -> 0."""
    p = problem
    for t in [None, torch.tensor([float("inf")]), 1e7]:
        out = gradient_descent_mse_ensemble(
            p["ntk_train"],
            p["ntk_train"],
            p["y"],
            t,
            nngp_train=p["nngp_train"],
            nngp_test_train=p["nngp_train"],
            nngp_test=p["nngp_train"],
            learning_rate=LR,
        )
        torch.testing.assert_close(out.mean.reshape(N, K), p["y"], rtol=0, atol=1e-9)
        assert out.cov.abs().max() < 1e-9 * p["nngp_train"].abs().max()
    # a finite network's linearized outputs interpolate too, from any initialization
    f0 = torch.randn(N, K, dtype=torch.float64)
    fx = gradient_descent_mse(p["ntk_train"], p["ntk_train"], p["y"], f0, f0)
    torch.testing.assert_close(fx, p["y"], rtol=0, atol=1e-9)


def test_ensemble_converges_monotonically(problem):
    p = problem
    ts = torch.logspace(-2, 5, 40, dtype=torch.float64)
    train = gradient_descent_mse_ensemble(
        p["ntk_train"], None, p["y"], ts, nngp_train=p["nngp_train"], learning_rate=LR
    )
    residual = (train.mean - p["y"]).norm(dim=(1, 2))  # ||e^{-Θτ} y||
    variance = torch.diagonal(train.cov, dim1=1, dim2=2).sum(-1)  # tr(K e^{-2Θτ})
    assert (residual.diff() <= 1e-12).all() and residual[0] > 0.9 * p["y"].norm()
    assert (variance.diff() <= 1e-12).all() and variance[-1] < 1e-9 * variance[0]
    test = ensemble(p, ts)
    limit = ensemble(p, None)
    gap = (test.mean - limit.mean).norm(dim=(1, 2))
    assert gap[-1] < 1e-9 * limit.mean.norm() and gap[0] > 0.5 * limit.mean.norm()
    torch.testing.assert_close(test.cov[-1], limit.cov, rtol=1e-8, atol=1e-12)


def test_ensemble_covariance_is_symmetric_psd(problem):
    p = problem
    ts = torch.tensor([0.0, 0.3, 3.0, 30.0, 300.0, float("inf")])
    for mode in ["ntk", "nngp"]:
        cov = ensemble(p, ts, mode).cov
        assert torch.equal(cov, cov.transpose(-1, -2))
        scale = p["nngp_test"].abs().max()
        assert (torch.linalg.eigvalsh(cov) >= -1e-10 * scale).all()


def test_nngp_ensemble_at_infinity_is_the_gp_posterior(problem):
    p = problem
    inf = ensemble(p, None, "nngp")
    gp = gp_posterior(p["nngp_train"], p["nngp_test_train"], p["y"], p["nngp_test"])
    torch.testing.assert_close(inf.mean, gp.mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(inf.cov, gp.cov, rtol=1e-9, atol=1e-12)


def test_singular_train_kernel():
    """A duplicated train point makes Θ singular: finite t is exact, t = inf needs diag_reg."""
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    feats = torch.cat([feats, feats[:1]])  # 7 train points, rank 5
    test = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    theta, theta_tx = feats @ feats.T, test @ feats.T
    y = torch.randn(7, generator=gen, dtype=torch.float64)
    y[-1] = y[0]  # consistent targets for the duplicate
    t, lr = 4.0, 1.0
    out = gradient_descent_mse_ensemble(theta, theta_tx, y, t, learning_rate=lr).mean
    # independent check: ∫_0^τ e^{-Θs} ds is the top-right block of exp([[-Θ, I], [0, 0]] τ)
    tau = lr * t / y.numel()
    block = torch.zeros(14, 14, dtype=torch.float64)
    block[:7, :7], block[:7, 7:] = -theta, torch.eye(7, dtype=torch.float64)
    integral = torch.linalg.matrix_exp(block * tau)[:7, 7:]
    torch.testing.assert_close(out, theta_tx @ integral @ y, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="diag_reg"):
        gradient_descent_mse_ensemble(theta, theta_tx, y)
    with pytest.raises(ValueError, match="diag_reg"):
        gp_posterior(theta, theta_tx, y)
    assert torch.isfinite(
        gradient_descent_mse_ensemble(theta, theta_tx, y, diag_reg=1e-6).mean
    ).all()
    assert torch.isfinite(gp_posterior(theta, theta_tx, y, diag_reg=1e-6).mean).all()


# ----------------------------------------------------------------------------- linearized network


def empirical_ntk_full(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Θ[i, j, a, b] = Σ_p ∂f_a(x1_i)/∂θ_p ∂f_b(x2_j)/∂θ_p, by Jacobian contraction."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def jac(x):
        j = jacrev(lambda q: functional_call(model, q, (x,)))(params)
        return torch.cat([v.reshape(x.shape[0], -1, v[0, 0].numel()) for v in j.values()], dim=-1)

    return torch.einsum("iap,jbp->ijab", jac(x1), jac(x2))


def test_linearized_model_trains_like_the_closed_form():
    torch.manual_seed(0)
    n, m, d, k, width = 8, 5, 3, 2, 32
    model = nn.Sequential(
        nn.Linear(d, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, k)
    ).double()
    x, x_test = torch.randn(n, d, dtype=torch.float64), torch.randn(m, d, dtype=torch.float64)
    y = torch.randn(n, k, dtype=torch.float64)
    lin = LinearizedModel(model)
    assert [q.shape for q in lin.parameters()] == [q.shape for q in model.parameters()]
    with torch.no_grad():
        f0, f0_test = model(x), model(x_test)
        torch.testing.assert_close(lin(x), f0, rtol=1e-14, atol=1e-14)
    theta = empirical_ntk_full(model, x, x)  # (N, N, K, K)
    theta_tx = empirical_ntk_full(model, x_test, x)
    theta2 = theta.permute(0, 2, 1, 3).reshape(n * k, n * k)
    theta2_tx = theta_tx.permute(0, 2, 1, 3).reshape(m * k, n * k)
    lam_max = torch.linalg.eigvalsh(theta2)[-1].item()
    horizon = 2.0 * n * k / lam_max  # η t: the top eigenmode decays by e^{-2}

    def train(steps: int):
        """Full-batch GD on 0.5 * mean((f - y)^2), the loss NT's time convention refers to."""
        lin_k = LinearizedModel(model)
        lr = horizon / steps
        opt = torch.optim.SGD(lin_k.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            (0.5 * ((lin_k(x) - y) ** 2).mean()).backward()
            opt.step()
        with torch.no_grad():
            return lr, lin_k(x), lin_k(x_test)

    steps = 100  # η λ_max / (N K) = 0.02 per step
    lr, fx, fx_test = train(steps)
    # exactly linear dynamics with the empirical NTK: f <- f - (η / NK) Θ (f - y)
    f, g = f0.reshape(-1), f0_test.reshape(-1)
    for _ in range(steps):
        r = f - y.reshape(-1)
        f, g = f - lr / (n * k) * theta2 @ r, g - lr / (n * k) * theta2_tx @ r
    torch.testing.assert_close(fx.reshape(-1), f, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(fx_test.reshape(-1), g, rtol=1e-9, atol=1e-11)
    # gradient flow is the small-step limit, with first-order error in the step size
    flow = gradient_descent_mse(theta, theta_tx, y, f0, f0_test, steps, learning_rate=lr)
    err = (fx_test - flow).norm() / (flow - f0_test).norm()
    lr2, _, fx_test2 = train(2 * steps)
    flow2 = gradient_descent_mse(theta, theta_tx, y, f0, f0_test, 2 * steps, learning_rate=lr2)
    torch.testing.assert_close(flow2, flow, rtol=1e-12, atol=1e-12)  # same η t
    err2 = (fx_test2 - flow).norm() / (flow - f0_test).norm()
    assert err < 0.05 and 1.6 < err / err2 < 2.4, (err, err2)


def test_linearized_model_is_first_order_in_the_parameters():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    lin = LinearizedModel(model)
    direction = [torch.randn_like(q) for q in model.parameters()]
    gaps = []
    for eps in [1e-2, 1e-3]:
        with torch.no_grad():
            for q, q0, v in zip(lin.parameters(), model.parameters(), direction, strict=True):
                q.copy_(q0 + eps * v)
            moved = functional_call(
                model,
                {
                    k: q0 + eps * v
                    for (k, q0), v in zip(model.named_parameters(), direction, strict=True)
                },
                (x,),
            )
            gaps.append((lin(x) - moved).norm().item())
    assert 50 < gaps[0] / gaps[1] < 200  # O(eps^2)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_names_the_argument(problem):
    p = problem
    kd, ktd, y = p["ntk_train"], p["ntk_test_train"], p["y"]
    cases = [
        (lambda: gp_posterior(kd[:, :-1], ktd, y), ValueError, "k_train"),
        (lambda: gp_posterior(kd, ktd[:, :-1], y), ValueError, "k_test_train"),
        (lambda: gp_posterior(kd, ktd, y[:-1]), ValueError, "y_train"),
        (lambda: gp_posterior(kd, ktd, y, p["nngp_test"][:-1]), ValueError, "k_test"),
        (lambda: gp_posterior(kd, ktd, y, diag_reg=-1.0), ValueError, "diag_reg"),
        (lambda: gp_posterior(kd + torch.triu(kd, 1), ktd, y), ValueError, "symmetric"),
        (lambda: gp_posterior("kernel", ktd, y), TypeError, "k_train"),
        (lambda: gradient_descent_mse_ensemble(kd * np.nan, ktd, y), ValueError, "ntk_train"),
        (lambda: gradient_descent_mse_ensemble(kd, ktd, y, -1.0), ValueError, "t must"),
        (lambda: gradient_descent_mse_ensemble(kd, ktd, y, float("nan")), ValueError, "t must"),
        (lambda: gradient_descent_mse_ensemble(kd, ktd, y, torch.ones(2, 2)), ValueError, "t must"),
        (lambda: gradient_descent_mse_ensemble(kd, ktd, y, "1"), TypeError, "t must"),
        (
            lambda: gradient_descent_mse_ensemble(kd, ktd, y, learning_rate=0.0),
            ValueError,
            "learning_rate",
        ),
        (
            lambda: gradient_descent_mse_ensemble(kd, ktd, y, diag_reg=float("inf")),
            ValueError,
            "diag_reg",
        ),
        (lambda: gradient_descent_mse_ensemble(kd, ktd, y, nngp_train=kd), ValueError, "nngp_test"),
        (lambda: gradient_descent_mse_ensemble(kd, None, y, nngp_test=kd), ValueError, "nngp_test"),
        (
            lambda: gradient_descent_mse_ensemble(
                kd, ktd, y, nngp_train=kd[:-1, :-1], nngp_test_train=ktd, nngp_test=p["nngp_test"]
            ),
            ValueError,
            "nngp_train",
        ),
        (lambda: gradient_descent_mse(kd, ktd, y, y, None), ValueError, "f0_test"),
        (lambda: gradient_descent_mse(kd, ktd, y, y[:-1], y[:M]), ValueError, "f0_train"),
        (lambda: gradient_descent_mse(kd, ktd, y, y, y), ValueError, "f0_test"),
        (lambda: gradient_descent_mse(kd[None], ktd, y, y, y[:M]), ValueError, "ntk_train"),
        (
            lambda: gradient_descent_mse(kd, ktd[..., None, None], y, y, y[:M]),
            ValueError,
            "ntk_test_train",
        ),
        (lambda: LinearizedModel(lambda x: x), TypeError, "model"),
        (
            lambda: gp_posterior(kd, ktd, y, diag_reg=1e-3, diag_reg_absolute_scale="yes"),
            TypeError,
            "diag_reg_absolute_scale",
        ),
        (
            lambda: gradient_descent_mse_ensemble(
                kd, ktd, y, diag_reg=1e-3, diag_reg_absolute_scale=1
            ),
            TypeError,
            "diag_reg_absolute_scale",
        ),
    ]
    for fn, error, name in cases:
        with pytest.raises(error, match=name):
            fn()


def test_linearized_model_casts_float64_inputs():
    """float64 data into a float32 network: cast like ntk.empirical does (was a dtype error)."""
    from ntk.models import WideMLP

    torch.manual_seed(0)
    model = WideMLP(3, 16, 2, depth=1)
    lin = LinearizedModel(model)
    x = torch.randn(4, 3, dtype=torch.float64)
    out = lin(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(x.float()))  # at θ = θ_0, f_lin = f
