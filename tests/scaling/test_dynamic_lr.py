"""DynamicLR (ntk.scaling.dynamic_lr), the controller beside a Parametrization: measured
exponents applied beside LR schedulers that never see them, checkpoints that resume bit for
bit, errors that say why; the old spelling (param.step(), ...) warns for one release."""

from __future__ import annotations

import io

import pytest
import torch

from ntk.data import load_digits_task
from ntk.models import WideMLP
from ntk.scaling.dynamic_lr import DynamicLR
from ntk.scaling.lp import InfeasibleExponentsError
from ntk.scaling.parametrization import Parametrization, ParametrizationConfig

pytestmark = pytest.mark.usefixtures("single_thread")
STEPS = 24


def _data():
    task = load_digits_task(one_hot=True)
    batches = torch.randint(0, len(task.x_train), (STEPS, 32), generator=torch.Generator())
    return task.x_train, task.y_train, batches


def _setup(parametrization="mup", width=128, schedule="warmup-cosine", dynamic=True, every=5):
    torch.manual_seed(0)
    model = WideMLP(64, width, 10, depth=3)
    cfg = ParametrizationConfig(parametrization, "adam", lr=1e-2, base_width=32)
    param = Parametrization(model, cfg)
    opt = torch.optim.Adam(param.param_groups)
    if schedule == "warmup-cosine":
        warmup = torch.optim.lr_scheduler.LinearLR(opt, 0.1, 1.0, total_iters=5)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS - 5)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[5])
    else:  # a closed-form schedule: reads the initial lr, not the current one
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + t))
    dyn = None
    if dynamic:
        x = load_digits_task(one_hot=True).x_train
        dyn = DynamicLR(param, opt, x[:64], every=every)
    return model, dyn, opt, sched


def _train(model, dyn, opt, sched, steps, data, start=0, record=None):
    x, y, batches = data
    for t in range(start, start + steps):
        idx = batches[t]
        loss = 0.5 * ((model(x[idx]) - y[idx]) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        sched.step() if t > 0 else None  # the design's order: scheduler, controller, optimizer
        if dyn is not None:
            dyn.step()
        opt.step()
        if record is not None:
            record.append([g["lr"] for g in opt.param_groups])


@pytest.mark.parametrize("schedule", ["warmup-cosine", "lambda"])
def test_step_scales_the_schedulers_lr_without_touching_it(schedule):
    data = _data()
    plain = _setup(schedule=schedule, dynamic=False)
    dyn = _setup(schedule=schedule)
    model, controller, opt, sched = dyn
    param = controller.param
    used, sched_plain, sched_dyn = [], [], []
    opt.register_step_pre_hook(lambda o, *_: used.append([g["lr"] for g in o.param_groups]))
    _train(*plain, STEPS, data, record=sched_plain)
    _train(*dyn, STEPS, data, record=sched_dyn)
    # the scheduler's own values are exactly those of a run without dynamic learning rates
    assert sched_dyn == sched_plain
    assert [h["step"] for h in controller.history] == [1, 6, 11, 16, 21]
    hidden = [i for i, s in enumerate(param.layers) if s.role == "hidden"]
    assert all(controller.c[i] < 0.95 for i in hidden)  # measured alpha < 1: larger lrs
    # the update used lr (n / n0)^-c times the scheduler's factor
    last = used[-1]
    for spec, k, c in zip(param.layers, controller._groups, controller.c, strict=True):
        scheduler_factor = sched_plain[-1][k] / spec.lr
        expected = 1e-2 * spec.ratio**-c * scheduler_factor
        assert last[k] == pytest.approx(expected, rel=1e-12), spec.name
    rest = [k for k, g in enumerate(opt.param_groups) if g["role"] in (None, "bias")]
    assert all(last[k] == sched_plain[-1][k] for k in rest)
    assert controller.lrs()[param.layers[1].name] == pytest.approx(last[controller._groups[1]])


def test_checkpoint_resumes_exactly():
    data = _data()
    straight = _setup()
    _train(*straight, STEPS, data)

    first = _setup()
    _train(*first, STEPS // 2, data)
    model, controller, opt, sched = first
    buffer = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "dynamic_lr": controller.state_dict(),
        },
        buffer,
    )
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    model2, controller2, opt2, sched2 = _setup()  # fresh objects, references retaken at init
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    controller2.load_state_dict(state["dynamic_lr"])
    _train(model2, controller2, opt2, sched2, STEPS - STEPS // 2, data, start=STEPS // 2)

    for p, q in zip(straight[0].parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)
    assert controller2.c == straight[1].c
    assert controller2.history == straight[1].history


def test_infeasible_alignment_raises_or_keeps():
    # SP's readout (a + b = 1/2) with its measured omega > 1/2: features cannot move Theta(1)
    data = _data()
    model, dyn, opt, sched = _setup("sp")
    with pytest.raises(InfeasibleExponentsError, match="'readout' \\(readout\\).*W dx"):
        _train(model, dyn, opt, sched, 2, data)
    model, dyn, opt, sched = _setup("sp")
    dyn.remove()
    dyn = DynamicLR(dyn.param, opt, data[0][:64], every=5, on_infeasible="keep")
    _train(model, dyn, opt, sched, 2, data)
    record = dyn.history[-1]
    assert "feature learning" in record["error"]
    assert dyn.c == [s.c for s in dyn.param.layers]  # static exponents kept


def test_errors_say_what_to_do():
    torch.manual_seed(0)
    model = WideMLP(64, 32, 10, depth=2)
    param = Parametrization(model, ParametrizationConfig("mup", base_width=32))
    with pytest.raises(ValueError, match="in none of the optimizer's param groups"):
        DynamicLR(param, torch.optim.Adam(model.hidden.parameters()), torch.randn(4, 64))
    opt = torch.optim.Adam(param.param_groups)
    with pytest.raises(ValueError, match="every must be >= 1"):
        DynamicLR(param, opt, torch.randn(4, 64), every=0)
    with pytest.raises(TypeError, match="optimizer must be"):
        DynamicLR(param, param.param_groups, torch.randn(4, 64))
    with pytest.raises(TypeError, match="param must be an ntk.Parametrization"):
        DynamicLR(model, opt, torch.randn(4, 64))
    dyn = DynamicLR(param, opt, torch.randn(4, 64))
    with pytest.raises(ValueError, match="state is for layers"):
        dyn.load_state_dict({"names": ["x"]})


def test_the_old_spelling_warns_and_still_works():
    """param.enable_dynamic_lr / step / state_dict / load_state_dict: one release, FutureWarning
    (not DeprecationWarning, which Python hides by default), the same controller underneath."""
    data = _data()
    torch.manual_seed(0)
    model = WideMLP(64, 128, 10, depth=3)
    param = Parametrization(model, ParametrizationConfig("mup", lr=1e-2, base_width=32))
    opt = torch.optim.Adam(param.param_groups)
    with pytest.warns(FutureWarning, match="use DynamicLR.step"), pytest.raises(RuntimeError):
        param.step()  # not enabled: the old error, after the warning
    with pytest.warns(FutureWarning, match=r"param.enable_dynamic_lr\(optimizer, probe\)"):
        controller = param.enable_dynamic_lr(opt, data[0][:64], every=5)
    assert isinstance(controller, DynamicLR) and param.dynamic_lr is controller
    x, y, batches = data
    for t in range(7):
        loss = 0.5 * ((model(x[batches[t]]) - y[batches[t]]) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        with pytest.warns(FutureWarning):
            param.step()
        opt.step()
    assert [h["step"] for h in controller.history] == [1, 6]
    with pytest.warns(FutureWarning):
        state = param.state_dict()
    assert state == {"dynamic_lr": controller.state_dict()}
    with pytest.warns(FutureWarning), pytest.raises(RuntimeError, match="enable_dynamic_lr"):
        Parametrization(WideMLP(64, 32, 10, depth=2), ParametrizationConfig("mup")).load_state_dict(
            state
        )
    with pytest.warns(FutureWarning):
        param.load_state_dict(state)
    assert controller.history == state["dynamic_lr"]["history"]
