"""Analytic NNGP/NTK kernels (ntk.kernels) against neural-tangents' stax kernel_fn."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import torch

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from neural_tangents import stax  # noqa: E402

from ntk.kernels import Kernels, MLPKernel  # noqa: E402

CLOSED = ["relu", "erf", "gelu", "identity"]


def nt_layer(activation: str, deg: int = 25):
    """The neural-tangents layer that matches one of our activations."""
    if activation == "relu":
        return stax.Relu()
    if activation == "erf":
        return stax.Erf()
    if activation == "identity":
        return stax.Identity()
    if activation == "gelu":
        return stax.Gelu()
    fn = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}[activation]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return stax.ElementwiseNumerical(fn, deg)  # same Gauss-Hermite rule as ours


# neural-tangents calls SP "standard"
NT_NAMES = {"ntk": "ntk", "sp": "standard"}


def nt_kernel_fn(depth, activation, w, b, parametrization, width, deg=25):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, w, b, parameterization=NT_NAMES[parametrization])]
        layers += [nt_layer(activation, deg)]
    layers += [stax.Dense(1, w, b, parameterization=NT_NAMES[parametrization])]
    return stax.serial(*layers)[2]


def rel_err(ours: torch.Tensor, ref) -> float:
    ref = np.asarray(ref)
    return float(np.max(np.abs(ours.numpy() - ref)) / np.max(np.abs(ref)))


def random_config(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return dict(
        depth=seed % 5,
        activation=CLOSED[seed % 4],
        weight_std=float(rng.uniform(0.5, 2.0)),
        bias_std=[None, 0.0, float(rng.uniform(0.05, 1.0))][int(rng.integers(0, 3))],
        parametrization=["ntk", "sp"][(seed // 4) % 2],
        width=int(rng.integers(1, 1000)),
    )


def data(seed: int, n1: int = 9, n2: int = 7, d: int = 5):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.3, 3.0)
    return scale * rng.standard_normal((n1, d)), scale * rng.standard_normal((n2, d))


@pytest.mark.parametrize("seed", range(16))
def test_closed_forms_match_neural_tangents(seed):
    cfg = random_config(seed)
    x1, x2 = data(seed)
    x1[0] = 0.0  # a zero-norm input in every case
    kernel = MLPKernel(**cfg)
    kf = nt_kernel_fn(
        cfg["depth"],
        cfg["activation"],
        cfg["weight_std"],
        cfg["bias_std"],
        cfg["parametrization"],
        cfg["width"],
    )
    for a, b in [(x1, x2), (x1, None)]:
        ref = kf(a, b, ("nngp", "ntk"))
        ours = kernel.kernels(torch.tensor(a), None if b is None else torch.tensor(b))
        assert ours.nngp.dtype == torch.float64
        assert rel_err(ours.nngp, ref.nngp) <= 1e-6, cfg
        assert rel_err(ours.ntk, ref.ntk) <= 1e-6, cfg


@pytest.mark.parametrize(
    "activation, parametrization", [("tanh", "ntk"), ("tanh", "sp"), ("sigmoid", "ntk")]
)
def test_quadrature_matches_elementwise_numerical(activation, parametrization):
    # Same Gauss-Hermite rule as NT's ElementwiseNumerical: equal up to float rounding.
    # NT's symmetric Gram is not exactly symmetric (it is off by the quadrature error below
    # the diagonal); ours mirrors the upper triangle, so compare x1 != x2 and the upper part.
    x1, x2 = data(1, 6, 5)
    deg = 12
    kernel = MLPKernel(2, activation, 1.5, 0.2, parametrization, width=50, quadrature_degree=deg)
    kf = nt_kernel_fn(2, activation, 1.5, 0.2, parametrization, 50, deg)
    ours = kernel.kernels(torch.tensor(x1), torch.tensor(x2))
    ref = kf(x1, x2, ("nngp", "ntk"))
    assert rel_err(ours.nngp, ref.nngp) <= 1e-10
    assert rel_err(ours.ntk, ref.ntk) <= 1e-10
    ours, ref = kernel.kernels(torch.tensor(x1)), kf(x1, None, ("nngp", "ntk"))
    iu = np.triu_indices(len(x1))
    assert rel_err(ours.ntk[iu], np.asarray(ref.ntk)[iu]) <= 1e-10


def test_gelu_quadrature_converges_to_closed_form():
    # A gelu callable takes the quadrature path; NT's Gelu is exact (Tsuchida et al. 2020).
    # The Gauss-Hermite error falls with the degree: degree 100 reaches the 1e-6 target with
    # O(1) variances (25 gives only ~1e-3).
    x1, x2 = data(2, 5, 4, d=3)
    kf = nt_kernel_fn(2, "gelu", 1.3, 0.1, "ntk", 1)
    ref = kf(x1, x2, ("nngp", "ntk"))
    errors = []
    for deg in (25, 100):
        ours = MLPKernel(2, torch.nn.functional.gelu, 1.3, 0.1, quadrature_degree=deg).kernels(
            torch.tensor(x1), torch.tensor(x2)
        )
        errors.append(max(rel_err(ours.nngp, ref.nngp), rel_err(ours.ntk, ref.ntk)))
    assert errors[1] <= 1e-6 < errors[0]


@pytest.mark.parametrize("activation", ["relu", "erf", "gelu", "identity", "tanh"])
@pytest.mark.parametrize("parametrization", ["ntk", "sp"])
def test_diagonals_equal_gram_diagonals(activation, parametrization):
    x = torch.tensor(data(3, 8)[0])
    x[1] = 0.0
    kernel = MLPKernel(3, activation, 1.2, 0.3, parametrization, width=100, quadrature_degree=10)
    gram = kernel.kernels(x)
    gram2 = kernel.kernels(x, x.clone())  # the general (non-symmetric) path
    diag = kernel.diag(x)
    assert torch.equal(diag.nngp, kernel.nngp_diag(x))
    assert torch.equal(diag.ntk, kernel.ntk_diag(x))
    for g in (gram, gram2):
        # identical points sit at cos = 1, where arccos loses half the digits: 1e-7, not 1e-15
        torch.testing.assert_close(g.nngp.diagonal(), diag.nngp, rtol=1e-7, atol=0)
        torch.testing.assert_close(g.ntk.diagonal(), diag.ntk, rtol=1e-7, atol=0)


@pytest.mark.parametrize("activation", ["relu", "erf", "gelu", "tanh"])
def test_symmetry_psd_and_blocking(activation):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    x[5] = x[4]  # identical points make the Gram singular: PSD check at its edge
    y = torch.randn(23, 6, generator=g, dtype=torch.float64)
    kernel = MLPKernel(3, activation, 1.4, 0.1, quadrature_degree=10)
    k = kernel.kernels(x)
    for m in k:
        assert torch.equal(m, m.T)
        eig = torch.linalg.eigvalsh(m)
        assert eig.min() >= -1e-10 * eig.max()
    # nngp()/ntk() alone, the two orders of (x, y) and any blocking give the same numbers
    torch.testing.assert_close(kernel.nngp(x), k.nngp, rtol=1e-14, atol=0)
    torch.testing.assert_close(kernel.ntk(x), k.ntk, rtol=1e-14, atol=0)
    kxy, kyx = kernel.kernels(x, y), kernel.kernels(y, x)
    if activation != "tanh":  # the quadrature rule is not symmetric in (x, y) (nor is NT's)
        for a, b in zip(kxy, kyx, strict=True):
            torch.testing.assert_close(a, b.T, rtol=1e-12, atol=1e-15)
    for block_size in (1, 7):
        # rtol 1e-7: the matmul rounds differently per block, and at the identical pair
        # (4, 5), cos = 1 - O(eps) moves arccos by O(sqrt(eps))
        blocked = MLPKernel(3, activation, 1.4, 0.1, quadrature_degree=10, block_size=block_size)
        for a, b in zip(blocked.kernels(x), k, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-15)
        for a, b in zip(blocked.kernels(x, y), kxy, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-15)


@pytest.mark.parametrize("activation", ["relu", "erf", "gelu", "identity", "tanh"])
@pytest.mark.parametrize("parametrization", ["ntk", "sp"])
def test_zero_vectors_and_identical_points_are_finite(activation, parametrization):
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    kernel = MLPKernel(2, activation, 1.0, 0.0, parametrization, width=10, quadrature_degree=8)
    k = kernel.kernels(x)
    for m in (*k, *kernel.kernels(x, x), *kernel.diag(x)):
        assert torch.isfinite(m).all()
    # with no bias a zero input has zero NNGP with everything (and zero NTK in "ntk")
    assert torch.all(k.nngp[0] == 0) and torch.all(k.nngp[:, 3] == 0)
    if parametrization == "ntk":
        assert torch.all(k.ntk[0] == 0)
    torch.testing.assert_close(k.ntk[1, 2], k.ntk[1, 1], rtol=1e-7, atol=0)


@pytest.mark.parametrize("parametrization", ["ntk", "sp"])
@pytest.mark.parametrize("bias_std", [0.0, None, 0.5])
def test_zero_variance_inputs_match_neural_tangents(parametrization, bias_std):
    # x = 0 with bias_std = 0: the ReLU sees zero-variance pre-activations, where K(x) and
    # K(x, x) once disagreed (Kdot 1/2 on the diagonal, 1/4 off it)
    x = np.zeros((3, 4))
    x[2] = 1.0
    kernel = MLPKernel(2, "relu", 1.3, bias_std, parametrization, width=50)
    kf = nt_kernel_fn(2, "relu", 1.3, bias_std, parametrization, 50)
    for a, b in [(x, None), (x, x)]:
        ref = kf(a, b, ("nngp", "ntk"))
        ours = kernel.kernels(torch.tensor(a), None if b is None else torch.tensor(b))
        assert rel_err(ours.nngp, ref.nngp) <= 1e-7 and rel_err(ours.ntk, ref.ntk) <= 1e-7


def test_dtypes():
    x32 = torch.randn(5, 3)  # float32 in, float64 out (computed in float64)
    k64 = MLPKernel(2).kernels(x32)
    assert k64.nngp.dtype == torch.float64 and k64.ntk.dtype == torch.float64
    k32 = MLPKernel(2, dtype=torch.float32).kernels(x32.double())
    assert k32.ntk.dtype == torch.float32
    torch.testing.assert_close(k32.ntk.double(), k64.ntk, rtol=1e-5, atol=1e-6)
    assert isinstance(k64, Kernels) and MLPKernel(2).nngp(x32.int()).dtype == torch.float64


def test_bad_input():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="activation"):
        MLPKernel(activation="swishy")
    with pytest.raises(ValueError, match="parametrization"):
        MLPKernel(parametrization="mup")
    with pytest.raises(ValueError, match="weight_std"):
        MLPKernel(weight_std=-1.0)
    with pytest.raises(ValueError, match="bias_std"):
        MLPKernel(bias_std=-0.1)
    with pytest.raises(TypeError, match="weight_std"):
        MLPKernel(weight_std="1")
    with pytest.raises(ValueError, match="depth"):
        MLPKernel(depth=-1)
    with pytest.raises(TypeError, match="depth"):
        MLPKernel(depth=1.5)
    with pytest.raises(ValueError, match="width"):
        MLPKernel(depth=2, parametrization="sp")
    with pytest.raises(ValueError, match="width"):
        MLPKernel(width=0)
    with pytest.raises(ValueError, match="quadrature_degree"):
        MLPKernel(activation="tanh", quadrature_degree=0)
    with pytest.raises(TypeError, match="dtype"):
        MLPKernel(dtype=torch.int64)
    kernel = MLPKernel(2)
    with pytest.raises(ValueError, match="x1 and x2"):
        kernel.kernels(x, torch.randn(4, 5))
    for bad in (float("nan"), float("inf")):
        y = x.clone()
        y[1, 2] = bad
        with pytest.raises(ValueError, match="x1"):
            kernel.ntk(y)
        with pytest.raises(ValueError, match="x2"):
            kernel.nngp(x, y)
        with pytest.raises(ValueError, match="x"):
            kernel.ntk_diag(y)
    with pytest.raises(ValueError, match="x1.*empty"):
        kernel.kernels(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="x2.*empty"):
        kernel.kernels(x, torch.zeros(0, 3))
    with pytest.raises(ValueError, match="x1.*dimensions"):
        kernel.nngp(torch.randn(3))
    with pytest.raises(TypeError, match="x1"):
        kernel.nngp("not a tensor")


def test_depth_zero_is_the_linear_model():
    x = torch.randn(6, 4, dtype=torch.float64)
    ntk_param = MLPKernel(0, weight_std=2.0, bias_std=0.5).kernels(x)
    torch.testing.assert_close(ntk_param.nngp, 4.0 * x @ x.T / 4 + 0.25)
    torch.testing.assert_close(ntk_param.ntk, ntk_param.nngp)
    sp = MLPKernel(0, weight_std=2.0, bias_std=0.5, parametrization="sp")
    torch.testing.assert_close(sp.ntk(x), x @ x.T + 1.0)  # grads: x for W, 1 for b


def test_huge_variances_stay_finite_and_accurate():
    """Pre-activation variances ~1e17 (weight_std 1e5, depth 3) and identical points on the
    general (x1, x2) path: the GELU and erf formulas must not cancel to 0 (then NaN/Inf)."""
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[3] = x[2]
    # at such variances gelu(u) = u Phi(u) is relu(u) up to O(1/sqrt(variance)): the GELU
    # kernels must approach the (independent, arc-cosine) ReLU kernels
    for args in [(3, 1e5, "sp", 7), (2, 1e4, "ntk", None)]:
        depth, ws, param, width = args
        gelu = MLPKernel(depth, "gelu", ws, 0.5, param, width=width)
        relu = MLPKernel(depth, "relu", ws, 0.5, param, width=width)
        for ours, ref in [
            (gelu.kernels(x, x.clone()), relu.kernels(x, x.clone())),
            (gelu.kernels(x), relu.kernels(x)),
        ]:
            for a, b in zip(ours, ref, strict=True):
                assert torch.isfinite(a).all()
                assert float((a - b).abs().max() / b.abs().max()) < 1e-4
    # erf, depth 1, "ntk", no bias, at identical points (cos = 1) with q = ws^2 |x|^2 / d:
    # NNGP = ws^2 (2/pi) asin(2q / (1 + 2q)), NTK = NNGP + ws^2 (4/pi) q / sqrt(1 + 4q)
    ws = 1e6  # q ~ 1e12: the old 1/sqrt(1 - u^2) form hit u = 1 exactly and returned Inf
    kernel = MLPKernel(1, "erf", ws)
    q = ws**2 * (x * x).sum(1) / x.shape[1]
    nngp = ws**2 * (2 / math.pi) * torch.asin(2 * q / (1 + 2 * q))
    ntk = nngp + ws**2 * (4 / math.pi) * q / torch.sqrt(1 + 4 * q)
    sym, general = kernel.kernels(x), kernel.kernels(x, x.clone())
    torch.testing.assert_close(sym.nngp.diagonal(), nngp, rtol=1e-9, atol=0)
    torch.testing.assert_close(sym.ntk.diagonal(), ntk, rtol=1e-9, atol=0)
    # off the exact diagonal, Kdot needs q1 q2 - s^2 at cos = 1, which rounding fixes only to
    # ~eps q^2 against 1 + 4q (the same O(eps q) ill-conditioning as arccos near 1): finite,
    # and within ~eps * q = 1e-4
    for k in (general.ntk.diagonal(), sym.ntk[2, 3:4]):
        assert torch.isfinite(k).all()
        torch.testing.assert_close(k, ntk[: len(k)] if len(k) > 1 else ntk[2:3], rtol=1e-3, atol=0)
    torch.testing.assert_close(general.nngp.diagonal(), nngp, rtol=1e-6, atol=0)


@pytest.mark.parametrize("activation", ["relu", "erf", "gelu", "softplus"])
def test_overflow_is_a_clear_error(activation):
    if activation == "softplus":  # unbounded, through the quadrature path
        activation = torch.nn.functional.softplus
    x = torch.randn(4, 3, dtype=torch.float64)
    kernel = MLPKernel(3, activation, 1e100, quadrature_degree=8)  # Sigma ~ 1e600
    for compute in (kernel.kernels, kernel.nngp, kernel.ntk_diag, lambda x: kernel.ntk(x, x)):
        with pytest.raises(FloatingPointError, match="overflowed torch.float64.*weight_std"):
            compute(x)
    k32 = MLPKernel(3, activation, 1e10, dtype=torch.float32, quadrature_degree=8)
    with pytest.raises(FloatingPointError, match="float32"):
        k32.ntk(x)


def test_standard_is_an_alias_of_sp():
    x = torch.randn(5, 3, dtype=torch.float64)
    sp = MLPKernel(2, "relu", 1.4, 0.1, "sp", width=64)
    alias = MLPKernel(2, "relu", 1.4, 0.1, "standard", width=64)
    assert alias.parametrization == "sp"
    torch.testing.assert_close(alias.ntk(x), sp.ntk(x), rtol=0, atol=0)
