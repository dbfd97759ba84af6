"""Shared checks of the layer algebra against neural-tangents (skipped without it)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RTOL = 1e-6  # the bar; closed forms agree to ~1e-15, quadrature to rounding


def nt_available() -> bool:
    try:
        from ntk.reference import load_neural_tangents

        load_neural_tangents()
    except ImportError:
        return False
    return True


needs_nt = pytest.mark.skipif(not nt_available(), reason="neural-tangents is not installed")


def nt_kernels(net, x1, x2, parametrization="ntk"):
    """neural-tangents' (nngp, ntk) of the same description on the same (channels-first) inputs."""
    import jax

    from ntk.kernels.stax.nt_bridge import to_neural_tangents, to_nhwc

    kernel_fn = to_neural_tangents(net, tuple(x1.shape[1:]), parametrization)[2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FanInSum's "assumes independent inputs" warning
        # jitted: one XLA compilation per network, several times faster than eager
        # neural-tangents, which compiles every primitive at every new shape
        k = jax.jit(kernel_fn, static_argnames="get")(to_nhwc(x1), to_nhwc(x2), get=("nngp", "ntk"))
    return np.asarray(k[0]), np.asarray(k[1])


def rel_err(ours: torch.Tensor, ref: np.ndarray) -> float:
    scale = float(np.max(np.abs(ref)))
    return float(np.max(np.abs(ours.numpy() - ref)) / scale) if scale else float(ours.abs().max())


def assert_matches_nt(net, x1, x2=None, parametrization="ntk", rtol=RTOL) -> None:
    ours = net.kernels(
        torch.as_tensor(x1), None if x2 is None else torch.as_tensor(x2), parametrization
    )
    ref = nt_kernels(net, np.asarray(x1), None if x2 is None else np.asarray(x2), parametrization)
    for name, a, b in zip(("nngp", "ntk"), ours, ref, strict=True):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        err = rel_err(a, b)
        assert err < rtol, f"{name} differs from neural-tangents by {err:.2e} for {net!r}"
