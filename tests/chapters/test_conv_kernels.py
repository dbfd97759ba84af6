"""Chapter 16 (ntk.chapters.conv_kernels): the experiment functions, at toy sizes."""

import pytest
import torch

from ntk.chapters import conv_kernels as ck


def test_shift_is_a_translation_with_zero_fill():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    down = ck.shift(x, 1, 0)
    assert torch.equal(down[0, 0, 1:], x[0, 0, :3]) and not down[0, 0, 0].any()
    left = ck.shift(x, 0, -1)
    assert torch.equal(left[0, 0, :, :3], x[0, 0, :, 1:]) and not left[0, 0, :, 3].any()
    assert torch.equal(ck.shift(ck.shift(x, 0, 2), 0, -2)[..., :2], x[..., :2])


def test_digit_images_split_and_scaling():
    data = ck.digit_images(n_train=40, n_test=12, seed=1)
    assert data.x_train.shape == (40, 1, 8, 8) and data.x_shifted.shape == (12, 1, 8, 8)
    assert torch.bincount(data.y_train, minlength=10).min() == 4  # stratified
    assert abs(float(data.x_train.mean())) < 1e-12
    assert abs(float(data.x_train.square().mean()) - 1) < 1e-12
    # the shifted images are the test images moved on their (constant) background
    background = float(data.x_test.min())
    moved = ck.shift(data.x_test[:1] - background, *ck.SHIFTS[0]) + background
    assert torch.allclose(moved, data.x_shifted[:1])
    with pytest.raises(ValueError, match="n_test"):
        ck.digit_images(n_train=40, n_test=5)
    t = data.targets(10)
    assert t.shape == (10, 10) and torch.allclose(t.sum(1), torch.zeros(10, dtype=t.dtype))


def test_kernel_accuracies_and_finite_runs():
    data = ck.digit_images(n_train=20, n_test=10, seed=0)
    nets = {"MLP": ck.FlatMLPKernel(1), "CNN, GAP": ck.cnn(depth=1, pool=True)}
    table = ck.kernel_accuracies(data, nets)
    assert len(table) == 4 and table.test.between(0, 1).all()
    assert (table.corr_shift <= 1 + 1e-12).all()
    # the MLP description in stax is the MLPKernel it stands for
    x = data.x_train[:5]
    assert torch.allclose(ck.mlp(1).kernels(x).ntk, ck.FlatMLPKernel(1).kernels(x).ntk)
    setup = ck.FiniteSetup(n_train=10, steps=3)
    result = ck.finite_vs_width(data, [8, 32], [0], setup)
    assert list(result.table.width) == [8, 32] and (result.table.gap > 0).all()
    assert 0 < result.learning_rate and 0 <= result.kernel_test <= 1
