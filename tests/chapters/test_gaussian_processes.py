"""Chapter 01 (ntk.chapters.gaussian_processes): the experiment functions."""

import math

import numpy as np
import pytest
import torch

from ntk.chapters import gaussian_processes as gpd
from ntk.kernels import MLPKernel

F64 = torch.float64


def test_kurtosis_matches_one_layer_theory():
    assert gpd.one_layer_excess_kurtosis(10) == pytest.approx(1.5, rel=1e-6)  # 15 / n for ReLU
    net = dict(activation="erf", weight_std=1.2, bias_std=0.3)
    samples = gpd.sample_outputs([4, 64], n_members=4000, depth=1, seed=2, **net)
    kurt = gpd.kurtosis_vs_width(samples, depth=1, **net)
    np.testing.assert_allclose(kurt.excess_kurtosis, kurt.theory, rtol=0.15)
    assert samples.kernel_var == pytest.approx(float(MLPKernel(1, **net).nngp_diag(samples.x)[0]))


def test_deep_relu_kurtosis_formula():
    assert gpd.relu_excess_kurtosis(10, 1) == pytest.approx(1.5)  # 15 / n
    assert gpd.relu_excess_kurtosis(5, 3) == pytest.approx(21.0)  # 3 (2^3 - 1)
    # the formula from the product of L independent layer factors, sampled directly
    gen = torch.Generator().manual_seed(0)
    n, depth, e = 8, 3, 400_000
    x = torch.relu(torch.randn(depth, e, n, generator=gen, dtype=F64)).pow(2).mean(-1)
    s = x.prod(0)
    kappa = 3 * (s.pow(2).mean() / s.mean() ** 2 - 1)
    assert float(kappa) == pytest.approx(gpd.relu_excess_kurtosis(n, depth), rel=0.03)
    # and from real networks (the `theory` column of deeper bias-free ReLU networks)
    net = dict(activation="relu", weight_std=1.3, bias_std=0.0)
    samples = gpd.sample_outputs([8, 32], n_members=3000, depth=2, seed=1, **net)
    kurt = gpd.kurtosis_vs_width(samples, depth=2, **net)
    np.testing.assert_allclose(kurt.excess_kurtosis, kurt.theory, rtol=0.15)
    with pytest.raises(ValueError, match="depth"):
        gpd.relu_excess_kurtosis(8, 0)


def test_nngp_error_shrinks_with_width():
    errs = gpd.nngp_error_vs_width([16, 1024], n_networks=2, depth=1, seed=0)
    mean = errs.groupby("width").rel_error.mean()
    assert mean[1024] < mean[16] / 4  # theory: / 8


def test_kernel_vs_angle():
    df = gpd.kernel_vs_angle("relu", [1, 3], weight_std=math.sqrt(2), n_angles=7, width=512)
    assert np.allclose(df[df.angle == 0].correlation, 1.0)
    rho = df.pivot(index="angle", columns="depth", values="correlation")
    assert (rho[3] >= rho[1] - 1e-12).all()  # ReLU kernels flatten with depth
    assert (df.empirical - df.correlation).abs().max() < 0.15


def test_analytic_kernel_matches_neural_tangents():
    cfg = dict(depth=2, activation="relu", weight_std=1.3, bias_std=0.2, parametrization="ntk")
    df = gpd.compare_with_neural_tangents([cfg], n_inputs=4)
    assert df.nngp_rel_err.max() < 1e-10 and df.ntk_rel_err.max() < 1e-10


def test_bootstrap_se_of_the_kurtosis_estimate_matches_the_gaussian_formula():
    """For v ~ N(1, c^2), 3 Var[v] / E[v]^2 has standard error about 3 c^2 sqrt(2 / N) (the
    sample variance's, the mean's fluctuation being of lower order for small c)."""
    rng = np.random.default_rng(1)
    c = 0.2
    for n in (1000, 16000):
        v = 1 + c * rng.standard_normal(n)
        expected = 3 * c**2 * (2 / n) ** 0.5
        assert gpd.bootstrap_se(v) == pytest.approx(expected, rel=0.2), n
