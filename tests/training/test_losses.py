"""The squared-error conventions, one per name: "mse" (train's loss) and `half_sse`."""

import torch

from ntk.training.losses import half_sse, loss_value


def test_half_sse_is_k_times_the_mse_loss_and_its_gradient_is_the_residual():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(8, 10, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, 10, generator=g, dtype=torch.float64)
    torch.testing.assert_close(half_sse(out, y), 10 * loss_value(out, y, "mse"))
    half_sse(out, y).backward()
    torch.testing.assert_close(out.grad, (out - y).detach() / 8)  # per example: out - y
