"""Chapter 04 (ntk.chapters.lazy_to_rich): the alpha-scaled model and the lazy/rich measures."""

import math

import pandas as pd
import pytest
import torch

from ntk.chapters import lazy_to_rich as lr

pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in conftest.py

TINY = lr.Setup(dim=8, n_train=64, n_test=64, steps=20, probe_size=32)


def test_alpha_scaled_is_zero_at_init_and_trains_only_the_inner_weights():
    net = TINY.network(16)
    model = lr.AlphaScaled(net, 3.0)
    x = torch.randn(5, 8, dtype=torch.float64)
    assert torch.equal(model(x), torch.zeros(5, 1, dtype=torch.float64))
    assert [n for n, _ in model.named_parameters()] == [
        f"model.{n}" for n, _ in net.named_parameters()
    ]
    with torch.no_grad():
        net.readout.weight.add_(0.1)
    expected = 3.0 * (net(x) - torch.func.functional_call(net, model.initial_parameters(), (x,)))
    torch.testing.assert_close(model(x), expected)


def test_first_step_moves_weights_by_one_over_alpha():
    """At w_0, grad L_alpha = -(1 / (alpha N)) J^T y: alpha * |dw| is the same for every alpha."""
    task = TINY.task()
    scaled = []
    for alpha in (0.5, 2.0, 8.0):
        net = TINY.network(32)
        model = lr.AlphaScaled(net, alpha)
        loss = 0.5 * (model(task.x_train) - task.y_train).pow(2).mean() / alpha**2
        grads = torch.autograd.grad(loss, list(net.parameters()))
        scaled.append(alpha * math.sqrt(sum(float(g.pow(2).sum()) for g in grads)))
    assert max(scaled) - min(scaled) < 1e-12 * max(scaled)


def test_alignment_on_known_weights():
    u = torch.linalg.qr(torch.randn(10, 2, dtype=torch.float64))[0]
    inside = torch.randn(7, 2, dtype=torch.float64) @ u.T  # rows in span(U)
    assert lr.alignment(inside, u) == pytest.approx(1.0, abs=1e-12)
    outside = torch.randn(7, 10, dtype=torch.float64)
    outside = outside - outside @ u @ u.T
    assert lr.alignment(outside, u) == pytest.approx(0.0, abs=1e-12)
    isotropic = torch.randn(20000, 10, dtype=torch.float64)
    assert lr.alignment(isotropic, u) == pytest.approx(2 / 10, rel=0.03)
    with pytest.raises(ValueError, match="weight must be"):
        lr.alignment(torch.randn(3, 4), u)


def test_neuron_coordinates():
    u = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    w = torch.tensor([[2.0, 3.0, 4.0], [-1.0, 0.0, 0.0]])
    expected = torch.tensor([[2.0, 5.0], [-1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(lr.neuron_coordinates(w, u), expected)


def test_movement_falls_like_one_over_alpha_in_the_lazy_corner():
    task = TINY.task()
    rows = [lr.run_one(16, alpha, TINY, task).row for alpha in (64.0, 128.0)]
    for column in ("feature_change", "kernel_change"):
        assert rows[0][column] / rows[1][column] == pytest.approx(2.0, rel=0.05), column
    rich = lr.run_one(16, 0.25, TINY, task).row
    assert rich["feature_change"] > 30 * rows[0]["feature_change"]
    assert abs(rows[1]["alignment"] / rows[1]["alignment_init"] - 1) < 0.01


def test_phase_diagram_collapse_and_slope_on_a_known_table():
    table = pd.DataFrame(
        {
            "width": [16, 16, 64, 64],
            "alpha": [1.0, 2.0, 0.5, 1.0],
            "feature_change": [0.4, 0.2, 0.8, 0.44],
        }
    )
    table["alpha_sqrt_n"] = table.alpha * table.width**0.5
    diagram = lr.PhaseDiagram(table)
    pairs = diagram.collapse()
    assert list(pairs.alpha_sqrt_n) == [4.0, 8.0]
    assert list(pairs.ratio) == pytest.approx([0.8 / 0.4, 0.44 / 0.2])
    assert diagram.alpha_slope("feature_change", 16) == pytest.approx(-1.0)


def test_neuron_movement_on_known_coordinates():
    start = torch.tensor([[1.0, 2.0], [-1.0, 2.0], [0.5, 4.0], [0.0, 4.0]])  # mean norm ~3.3
    end = start.clone()
    end[0, 0], end[2, 1] = 3.0, 5.0  # one neuron grows along u (> 2 x 1.0), one across
    table = pd.DataFrame({"width": [4, 4], "alpha": [0.5, 8.0]})
    neurons = {(4, 0.5): {"init": start, "final": end}, (4, 8.0): {"init": start}}
    diagram = lr.PhaseDiagram(table, neurons=neurons)
    moved = diagram.neuron_movement(4, 0.5)
    mean_norm = torch.linalg.vector_norm(start, dim=1).mean().item()
    assert moved["largest_move"] == pytest.approx(2.0 / mean_norm)
    assert moved["grown_along"] == 0.25 and moved["grown_across"] == 0.25
    assert all(math.isnan(v) for v in diagram.neuron_movement(4, 8.0).values())  # diverged
    assert list(diagram.neuron_table().alpha) == [0.5, 8.0]


def test_setup_rejects_bad_values():
    with pytest.raises(ValueError, match="probe_size"):
        lr.Setup(n_train=10, probe_size=20)
    with pytest.raises(ValueError, match="lr"):
        lr.Setup(lr=0.0)
    with pytest.raises(ValueError, match="alpha"):
        lr.AlphaScaled(TINY.network(4), -1.0)
    with pytest.raises(ValueError, match="width"):
        lr.run_one(0, 1.0, TINY)


def test_main_writes_the_three_figures(tmp_path, capsys):
    argv = ["--widths", "8", "32", "--alphas", "0.5", "8", "--steps", "5", "--out", str(tmp_path)]
    results = lr.main(argv)
    names = {p.name for p in tmp_path.glob("*.png")}
    assert names == {"04_phase_diagram.png", "04_movement.png", "04_neurons.png"}
    assert len(results["phase_diagram"].table) == 4
    out = capsys.readouterr().out
    assert "slope across the two largest alphas" in out and "held-out loss of predicting 0" in out


def test_function_distance_against_own_and_analytic_kernels():
    target, own = torch.ones(4, 1), torch.full((4, 1), 2.0)
    table = pd.DataFrame({"width": [16, 16], "alpha": [1.0, 64.0]})
    diagram = lr.PhaseDiagram(
        table,
        predictions={(16, 1.0): torch.zeros(4, 1), (16, 64.0): 1.5 * target},
        kernel_prediction=target,
        own_kernel_predictions={16: own},
    )
    assert diagram.function_distance(16, 1.0, "analytic") == pytest.approx(1.0)  # predicts 0
    assert diagram.function_distance(16, 64.0, "analytic") == pytest.approx(0.5)
    assert diagram.function_distance(16, 64.0, "own") == pytest.approx(0.25)
    assert diagram.distance_table("own").loc[1.0, 16] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reference"):
        diagram.function_distance(16, 64.0, "nngp")


def test_lazy_net_is_its_own_kernels_regression():
    """At large alpha the trained net is regression with its own initial NTK (Chizat et al.)."""
    diagram = lr.run_grid((16,), (64.0,), TINY)
    assert diagram.function_distance(16, 64.0, "own") < 0.05
    assert diagram.function_distance(16, 64.0, "analytic") > 0.1  # width 16 is far from n = inf
