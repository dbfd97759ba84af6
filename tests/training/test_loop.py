"""The training loop (ntk.training): divergence, seeding, learning, diagnostics, callbacks and
argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from ntk.data import load_digits_task, make_low_dim_task
from ntk.models import WideMLP, WideMLP_MuP
from ntk.training import EMA, TrainConfig, TrainingDivergedError, train

pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in conftest.py


@pytest.fixture(scope="module")
def task():
    return make_low_dim_task(n_train=128, n_test=256, dim=16, seed=3)


@pytest.fixture(scope="module")
def digits():
    return load_digits_task(seed=0)


def mlp(width=64, seed=0, **kwargs):
    torch.manual_seed(seed)
    return WideMLP(16, width, **kwargs)


# ---------------------------------------------------------------- divergence


def test_nan_loss_raises_with_the_step():
    """A parameter poisoned after update 3 makes the loss at step 3 NaN."""

    def poison(state):
        if state.step == 3:
            with torch.no_grad():
                state.model.readout.weight[0, 0] = float("nan")

    x, y = torch.randn(8, 16), torch.randn(8, 1)
    with pytest.raises(TrainingDivergedError, match="at step 3") as err:
        train(mlp(), x, y, steps=10, lr=0.01, callbacks=[poison], log_every=100)
    assert isinstance(err.value, FloatingPointError)
    assert err.value.step == 3
    assert math.isnan(err.value.loss)


def test_huge_learning_rate_diverges_with_a_clear_error(task):
    x, y, _, _ = task
    with pytest.raises(FloatingPointError, match=r"at step \d+") as err:
        train(mlp(parametrization="ntk"), x, y, steps=200, lr=1e4)
    assert 0 < err.value.step < 200


# ---------------------------------------------------------------- reproducibility


def test_divergence_with_ntk_tracking_is_still_a_training_error(task):
    """The kernel of a blown-up model overflows: logged as nan, the loss check then raises."""
    with pytest.raises(TrainingDivergedError, match=r"at step \d+"):
        train(
            mlp(width=128, depth=3),
            *task,
            steps=40,
            lr=1e3,
            track_ntk=True,
            log_every=1,
            ntk_probe_size=4,
        )


def test_same_seed_same_history(task):
    cfg = TrainConfig(steps=30, lr=0.05, optimizer="adam", batch_size=32, log_every=10, seed=7)
    h1 = train(mlp(seed=1), *task, config=cfg)
    h2 = train(mlp(seed=1), *task, config=cfg)
    for name in ("step", "train_loss", "test_loss", "train_metric", "test_metric"):
        assert getattr(h1, name) == getattr(h2, name)
    assert h1.feature_change == h2.feature_change
    assert h1.weight_change == h2.weight_change
    # another seed changes the mini-batch order, hence the trajectory
    h3 = train(mlp(seed=1), *task, config=cfg, seed=8)
    assert h3.train_loss[0] == h1.train_loss[0]
    assert h3.train_loss[-1] != h1.train_loss[-1]


# ---------------------------------------------------------------- learning


def test_full_batch_sgd_decreases_the_loss(task):
    hist = train(mlp(width=256, parametrization="ntk"), *task, steps=100, lr=1.0, log_every=25)
    assert hist.step == [0, 25, 50, 75, 100]
    assert hist.metric_name == "mse"
    assert np.all(np.diff(hist.train_loss) < 0)
    assert hist.train_loss[-1] < 0.7 * hist.train_loss[0]
    # metric "mse" = mean((f - y)^2) = 2 x the loss 0.5 * mean((f - y)^2)
    np.testing.assert_allclose(hist.train_metric, 2 * np.array(hist.train_loss), rtol=1e-5)


def test_mse_convention_matches_ntk_gradient_flow():
    """One small full-batch SGD step on 0.5 * mean((f - y)^2) moves the outputs by
    -lr / (N K) * Theta (f - y), the convention of neural-tangents' gradient_descent_mse."""
    torch.manual_seed(0)
    model = WideMLP(4, 32, 2, depth=2, bias_std=0.5, parametrization="ntk").double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)  # name -> (N, K, *shape)
    rows = torch.cat([j.reshape(6 * 2, -1) for j in jac.values()], dim=1)
    theta = rows @ rows.T  # (N K, N K)
    with torch.no_grad():
        f0 = model(x)
    lr = 1e-4
    train(model, x, y, steps=1, lr=lr, track_features=False, track_weights=False)
    with torch.no_grad():
        f1 = model(x)
    predicted = -lr / f0.numel() * theta @ (f0 - y).reshape(-1)
    torch.testing.assert_close((f1 - f0).reshape(-1), predicted, rtol=1e-3, atol=1e-12)


def test_mini_batch_path_uses_batches(task):
    seen = []

    def record(state):
        seen.append(state.loss)

    hist = train(
        mlp(), *task, steps=40, lr=0.05, optimizer="adam", batch_size=16, callbacks=[record]
    )
    assert len(seen) == 40
    assert hist.train_loss[-1] < hist.train_loss[0]
    # per-batch losses differ from the full-batch loss logged at the same parameters
    assert seen[0] != pytest.approx(hist.train_loss[0], rel=1e-6)


def test_cross_entropy_path_on_digits(digits):
    torch.manual_seed(0)
    model = WideMLP(64, 128, 10, depth=1)
    hist = train(model, *digits, steps=60, lr=0.2, loss="cross_entropy", batch_size=128)
    assert hist.metric_name == "accuracy"
    assert hist.test_metric[0] < 0.4  # chance is 0.1
    assert hist.test_metric[-1] > 0.85
    # one-hot (class-probability) targets give the same first loss
    one_hot = load_digits_task(seed=0, one_hot=True)
    torch.manual_seed(0)
    hist2 = train(WideMLP(64, 128, 10, depth=1), *one_hot, steps=1, loss="cross_entropy")
    assert hist2.train_loss[0] == pytest.approx(hist.train_loss[0], rel=1e-6)


def test_mup_training_with_muadam_and_musgd(task):
    for opt in ("muadam", "musgd"):
        torch.manual_seed(0)
        model = WideMLP_MuP(16, 128, base_width=32, readout_zero_init=True)
        lr = 0.01 if opt == "muadam" else 0.5
        hist = train(model, *task, steps=40, lr=lr, optimizer=opt, log_every=20)
        assert hist.train_loss[-1] < 0.8 * hist.train_loss[0]
        # zero-initialized readout: relative weight change undefined -> nan, others finite
        assert math.isnan(hist.weight_change["readout.weight"][-1])
        assert hist.weight_change["hidden.1.weight"][-1] > 0
    with pytest.raises(ValueError, match="base shapes"):
        train(mlp(), *task, steps=1, optimizer="muadam")


# ---------------------------------------------------------------- diagnostics


def test_diagnostics_keys_zero_at_init_and_grow(task):
    model = mlp(width=64, depth=3)
    hist = train(model, *task, steps=20, lr=0.5, log_every=10, track_ntk=True, probe_size=32)
    assert list(hist.feature_change) == ["hidden.0", "hidden.1", "hidden.2"]
    assert list(hist.weight_change) == [
        "hidden.0.weight",
        "hidden.1.weight",
        "hidden.2.weight",
        "readout.weight",
    ]
    series = [*hist.feature_change.values(), *hist.weight_change.values(), hist.ntk_change]
    for values in series:
        assert len(values) == len(hist.step) == 3
        assert values[0] == 0.0
        assert 0 < values[-1] < 10
    final = hist.final()
    assert final["step"] == 20
    assert final["feature_change/hidden.2"] == hist.feature_change["hidden.2"][-1]


def test_feature_change_shrinks_with_width_in_ntk_parametrization(task):
    """Lazy regime: the relative change of hidden features falls roughly as 1/sqrt(width)."""
    widths, changes = [64, 256, 1024], []
    for width in widths:
        hist = train(mlp(width=width, parametrization="ntk"), *task, steps=20, lr=1.0, log_every=20)
        changes.append(hist.feature_change["hidden.1"][-1])
    slope = np.polyfit(np.log(widths), np.log(changes), 1)[0]
    assert -0.8 < slope < -0.3


def test_hooks_fallback_for_generic_models(task):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Linear(32, 1)
    )
    hist = train(model, *task, steps=5, lr=0.1)
    assert list(hist.feature_change) == ["0", "2"]  # every Linear but the readout
    assert hist.feature_change["0"][0] == 0.0 and hist.feature_change["0"][-1] > 0


# ---------------------------------------------------------------- extension points


def test_lr_schedule_callbacks_and_ema(task):
    frozen = train(mlp(), *task, steps=5, lr=0.1, lr_schedule=lambda step: 0.0)
    assert all(v[-1] == 0.0 for v in frozen.weight_change.values())

    def stop_at_7(state):
        return state.step == 7

    model = mlp()
    ema = EMA(model, decay=0.5)
    hist = train(model, *task, steps=50, lr=0.1, callbacks=[ema, stop_at_7], log_every=5)
    assert hist.step == [0, 5, 7]
    avg = ema.copy_to(mlp(seed=99))
    w, w_avg = model.readout.weight, avg.readout.weight
    assert not torch.equal(w, w_avg)
    assert torch.linalg.vector_norm(w - w_avg) < 0.5 * torch.linalg.vector_norm(w)


def test_user_built_optimizer_with_param_groups(task):
    model = mlp()
    groups = [
        {"params": [p for layer in model.hidden for p in layer.parameters()], "lr": 0.0},
        {"params": list(model.readout.parameters()), "lr": 0.1},
    ]
    hist = train(model, *task, steps=5, optimizer=torch.optim.SGD(groups))
    assert hist.weight_change["hidden.0.weight"][-1] == 0.0
    assert hist.weight_change["readout.weight"][-1] > 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(loss="hinge"), "loss"),
        (dict(batch_size=10_000), "batch_size"),
        (dict(steps=-1), "steps"),
        (dict(lr=-0.1), "lr"),
    ],
)
def test_bad_config(task, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train(mlp(), *task, **kwargs)


def test_bad_data(task):
    x, y, x_test, y_test = task
    with pytest.raises(ValueError, match="rows"):
        train(mlp(), x, y[:-1], steps=1)
    with pytest.raises(ValueError, match="x_test"):
        train(mlp(), x, y, x_test, None, steps=1)
    with pytest.raises(ValueError, match="NaN"):
        train(mlp(), torch.full_like(x, float("nan")), y, steps=1)


def test_bad_arguments_are_named_before_training(task):
    """Each of these used to fail deep inside torch (or silently, for the metrics)."""
    x, y, _, _ = task
    labels = torch.randint(0, 3, (len(x),))
    cases = [
        (lambda: train("model", x, y), TypeError, "model must be a torch.nn.Module"),
        (lambda: train(torch.nn.ReLU(), x, y), ValueError, "no parameters"),
        (lambda: train(mlp(), x[:, :-1], y, steps=1), ValueError, "x_train.*does not fit"),
        (lambda: train(mlp(), x, y, config={"steps": 1}), TypeError, "config"),
        (lambda: train(mlp(), x, y, stepz=1), TypeError, "unknown TrainConfig fields.*stepz"),
        (lambda: train(mlp(), x, y, optimizer=3), TypeError, "optimizer"),
        (lambda: train(mlp(), x, y, callbacks=[1]), TypeError, r"callbacks\[0\]"),
        (lambda: train(mlp(), x, y, lr_schedule=0.5), TypeError, "lr_schedule"),
        (lambda: train(mlp(), x, y, track_ntk="yes"), TypeError, "track_ntk"),
        (lambda: train(mlp(), x, y, progress=1), TypeError, "progress"),
        # labels beyond the model's K outputs (was an IndexError from cross_entropy)
        (
            lambda: train(mlp(out_features=2), x, labels, loss="cross_entropy", steps=1),
            ValueError,
            "labels up to 2.*only 2 outputs",
        ),
        # (N, K) - (N,) would broadcast silently when N == K
        (
            lambda: train(mlp(out_features=3), x, labels, loss="cross_entropy", metric="mse"),
            ValueError,
            "metric='mse'",
        ),
        # argmax over one output is always 0: accuracy would read 1.0 whatever the model
        (lambda: train(mlp(), x, y, metric="accuracy"), ValueError, "accuracy.*K >= 2"),
        (lambda: EMA(mlp(), decay="0.9"), TypeError, "decay"),
    ]
    for fn, error, match in cases:
        with pytest.raises(error, match=match):
            fn()


# ---------------------------------------------------------------- inputs of any shape


class TinyLM(torch.nn.Module):
    """Token ids (N, T) -> next-token logits (N, T, V)."""

    def __init__(self, vocab=7, width=16):
        super().__init__()
        self.embed, self.head = torch.nn.Embedding(vocab, width), torch.nn.Linear(width, vocab)

    def forward(self, ids):
        return self.head(torch.tanh(self.embed(ids)))


def _sequences(n=32, t=6, vocab=7):
    """Counting mod vocab from random starts: the next token is a function of the current."""
    g = torch.Generator().manual_seed(0)
    ids = (torch.randint(0, vocab, (n, 1), generator=g) + torch.arange(t + 1)) % vocab
    return ids[:, :-1], ids[:, 1:]  # inputs, next-token targets


def test_token_ids_with_builtin_cross_entropy_over_positions():
    x, y = _sequences()
    torch.manual_seed(0)
    model = TinyLM()
    with torch.no_grad():  # every (example, position) counts once: the flattened mean
        expected = torch.nn.functional.cross_entropy(model(x).reshape(-1, 7), y.reshape(-1))
        accuracy = (model(x).argmax(-1) == y).double().mean().item()
    hist = train(model, x, y, x, y, loss="cross_entropy", optimizer="adam", lr=0.05, steps=20)
    assert hist.train_loss[0] == pytest.approx(expected.item(), rel=1e-6)
    assert hist.train_metric[0] == pytest.approx(accuracy)
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0]
    assert hist.train_metric[-1] == 1.0  # counting is learnt
    assert hist.test_loss == hist.train_loss  # the same data as test set


def test_user_loss_on_token_ids_and_images():
    x, y = _sequences()
    calls = []

    def lm_loss(out, targets):
        calls.append(targets.dtype)
        return torch.nn.functional.cross_entropy(out.transpose(1, 2), targets)

    torch.manual_seed(0)
    hist = train(TinyLM(), x, y, loss_fn=lm_loss, optimizer="adam", lr=0.05, steps=5)
    assert set(calls) == {torch.int64}  # the targets stay token ids
    assert hist.metric_name == "none" and all(math.isnan(m) for m in hist.train_metric)
    assert hist.train_loss[-1] < hist.train_loss[0]

    images = torch.randn(16, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    labels = (images.mean((1, 2, 3)) > 0).long()
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 2)
    )
    hist = train(cnn, images, labels, loss="cross_entropy", lr=0.1, steps=10, batch_size=8)
    assert hist.metric_name == "accuracy" and hist.train_loss[-1] < hist.train_loss[0]


def test_shapes_and_user_losses_are_checked_before_training():
    x, y = _sequences()
    cases = [
        (dict(loss="cross_entropy", y=y[:, :-1]), "labels with shape .2, 5. .*outputs .2, 6, 7."),
        (dict(loss="half_mse", y=y.float()), "targets must have the output's shape"),
        (dict(loss_fn=lambda out, t: out), "must return a scalar tensor, got .2, 6, 7."),
        (dict(loss_fn=lambda out, t: out.foo), "loss_fn.*fails on the first 2 rows"),
        (dict(loss_fn="ce"), "loss_fn must be a callable"),
        (dict(x=x.float()), "x_train"),
        (dict(loss="cross_entropy", metric="mse"), "metric='mse'"),
    ]
    for kw, match in cases:
        args = dict(x=x, y=y) | {k: kw.pop(k) for k in ("x", "y") if k in kw}
        with pytest.raises((ValueError, TypeError), match=match):
            train(TinyLM(), args["x"], args["y"], steps=1, **kw)
    with pytest.raises(ValueError, match="returns a dict, not a tensor"):

        class DictOut(TinyLM):
            def forward(self, ids):
                return {"logits": super().forward(ids)}

        train(DictOut(), x, y, loss="cross_entropy", steps=1)
    with pytest.raises(ValueError, match="same feature shape"):
        train(TinyLM(), x, y, x[:, :3], y[:, :3], loss="cross_entropy", steps=1)
