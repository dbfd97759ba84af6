"""The squared-error conventions, one per name: "half_mse" (train's loss) and `half_sse`."""

import pytest
import torch

from ntk.training.losses import half_sse, loss_value


def test_half_sse_is_k_times_the_mse_loss_and_its_gradient_is_the_residual():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(8, 10, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, 10, generator=g, dtype=torch.float64)
    torch.testing.assert_close(half_sse(out, y), 10 * loss_value(out, y, "half_mse"))
    half_sse(out, y).backward()
    torch.testing.assert_close(out.grad, (out - y).detach() / 8)  # per example: out - y


def test_the_old_loss_name_mse_warns_and_means_half_mse():
    """One meaning per name: loss "mse" was 0.5 * mean, the metric "mse" is mean."""
    from ntk.training.config import TrainConfig

    with pytest.warns(DeprecationWarning, match="half_mse"):
        cfg = TrainConfig(loss="mse").validate()
    assert cfg.loss == "half_mse"
