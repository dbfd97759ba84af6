"""Per-example Jacobian rows: the vmap(jacrev) path and the autograd loop agree exactly in
float64 with a hand-written Jacobian of a two-layer network."""

import torch
from torch import nn

from ntk.kernels.jacobian import loop_rows, transform_failure, vmap_rows


def test_vmap_and_loop_rows_equal_the_analytic_jacobian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    params = dict(model.named_parameters())
    x = torch.randn(4, 3, dtype=torch.float64)
    w1, b1, w2 = params["0.weight"], params["0.bias"], params["2.weight"]
    h = torch.tanh(x @ w1.T + b1)  # (N, 5)
    dh = 1 - h**2
    # f_k = w2[k] . tanh(W1 x + b1) + b2[k]
    expected = {
        "2.weight": torch.einsum("kj,ni->nkji", torch.eye(2, dtype=x.dtype), h),
        "2.bias": torch.eye(2, dtype=x.dtype).expand(4, 2, 2),
        "0.weight": torch.einsum("kj,nj,ni->nkji", w2, dh, x).detach(),
        "0.bias": torch.einsum("kj,nj->nkj", w2, dh).detach(),
    }
    for rows in (vmap_rows(model, params), loop_rows(model, params)):
        got = rows(x)
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=1e-12, atol=1e-12)


def test_transform_failure_returns_the_error():
    assert transform_failure(lambda: None) is None
    err = transform_failure(lambda: torch.zeros(2) @ torch.zeros(3))
    assert isinstance(err, RuntimeError)
