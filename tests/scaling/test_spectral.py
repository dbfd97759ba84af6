"""Spectral monitor: power iteration against the exact norm, logging, the spectral condition."""

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from mup import MuAdam, MuReadout, set_base_shapes
from torch import nn

from ntk.scaling.spectral import SpectralMonitor, lanczos, plot_spectral, power_iteration


def exact(w):
    return torch.linalg.matrix_norm(w, ord=2).item()


def test_power_iteration_matches_exact_norm():
    g = torch.Generator().manual_seed(0)
    # known spectrum with a gap: converges to float precision
    u, _ = torch.linalg.qr(torch.randn(60, 40, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    s = torch.cat([torch.tensor([3.0]), torch.linspace(2.0, 0.1, 39)]).double()
    w = u @ torch.diag(s) @ v.T
    sigma, vec = power_iteration(w, n_iter=60, generator=g)
    assert sigma == pytest.approx(3.0, rel=1e-10)
    assert abs(vec @ v[:, 0]).item() == pytest.approx(1.0, rel=1e-8)
    sigma, vec = lanczos(w, n_iter=20, generator=g)
    assert sigma == pytest.approx(3.0, rel=1e-10)
    assert abs(vec @ v[:, 0]).item() == pytest.approx(1.0, rel=1e-8)
    # a Gaussian matrix (no gap at the spectral edge): lower bounds that warm restarts sharpen;
    # Lanczos gets much closer than power iteration for the same number of products
    w = torch.randn(300, 200, generator=g)
    ref = exact(w)
    v0 = torch.randn(200, generator=g)
    p_sigma, p_vec = power_iteration(w, v0, n_iter=20)
    l_sigma, l_vec = lanczos(w, v0, n_iter=20)
    assert p_sigma < l_sigma <= ref * (1 + 1e-5)
    assert ref - l_sigma < 0.1 * (ref - p_sigma)
    assert l_sigma > 0.995 * ref
    for _ in range(20):
        p_sigma, p_vec = power_iteration(w, p_vec, n_iter=20)
        l_sigma, l_vec = lanczos(w, l_vec, n_iter=20)
    assert p_sigma == pytest.approx(ref, rel=1e-3)
    assert l_sigma == pytest.approx(ref, rel=1e-5)
    for f in (power_iteration, lanczos):
        assert f(torch.zeros(5, 3))[0] == 0.0
        assert f(torch.ones(1, 1))[0] == pytest.approx(1.0)
        with pytest.raises(ValueError, match="matrix"):
            f(torch.ones(3))


def _train(model, opt, monitor, steps, g):
    for _ in range(steps):
        x = torch.randn(32, model[0].in_features, generator=g)
        loss = (model(x) - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_monitor_tracks_exact_norms_during_training():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 128), nn.Tanh(), nn.Linear(128, 64), nn.Tanh(), nn.Linear(64, 3)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    cheap = SpectralMonitor(model, every=2)
    power = SpectralMonitor(model, every=2, n_iter=5, method="power")
    slow = SpectralMonitor(model, every=2, exact=True)
    state = torch.get_rng_state()
    cheap.attach(opt)
    assert torch.equal(state, torch.get_rng_state())  # the monitor leaves the global RNG alone
    slow.attach(opt)
    power.attach(opt)
    _train(model, opt, None, 20, torch.Generator().manual_seed(1))
    a, b, c = cheap.dataframe(), slow.dataframe(), power.dataframe()
    assert sorted(a["step"].unique()) == list(range(0, 21, 2))
    assert list(a["layer"].unique()) == ["0", "2", "4"]
    assert (a.query("step == 0")["sigma_dw"] == 0).all()
    late = a["step"] >= 6
    for col in ["sigma_w", "sigma_dw", "rel_w", "rel_dw"]:
        ratio = a.loc[late, col].to_numpy() / b.loc[late, col].to_numpy()
        assert ratio.max() <= 1 + 1e-5 and ratio.min() > 0.995, (col, ratio.min())
        power_ratio = c.loc[late, col].to_numpy() / b.loc[late, col].to_numpy()
        assert power_ratio.max() <= 1 + 1e-5 and power_ratio.min() > 0.9, col
        assert power_ratio.min() <= ratio.min()  # same cost, Lanczos is the closer bound
    row = a.iloc[1]  # layer "2": Linear(128, 64)
    assert (row["fan_in"], row["fan_out"]) == (128, 64)
    assert row["scale"] == pytest.approx(math.sqrt(64 / 128))
    assert row["rel_w"] == pytest.approx(row["sigma_w"] / row["scale"])


def test_multipliers_filters_and_bad_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    mon = SpectralMonitor(model, layers=["2"], multipliers={"2": -0.5}, exact=True)
    mon(0)
    (row,) = mon.records
    assert row["layer"] == "2" and row["sigma_w"] == pytest.approx(0.5 * exact(model[2].weight))
    mon = SpectralMonitor(model, every=3, exact=True)
    assert [mon() for _ in range(7)] == [True, False, False, True, False, False, True]
    conv = SpectralMonitor(nn.Conv2d(3, 8, 3), exact=True)
    (row,) = conv.log(0)
    assert (row["fan_in"], row["fan_out"]) == (27, 8)
    with pytest.raises(ValueError, match="weight matrix"):
        SpectralMonitor(nn.ReLU())
    with pytest.raises(TypeError, match="model"):
        SpectralMonitor("model")
    with pytest.raises(ValueError, match="every"):
        SpectralMonitor(model, every=0)


class Scaled(nn.Module):
    """A wrapper that multiplies its module's output and forwards attribute access."""

    def __init__(self, module, multiplier):
        super().__init__()
        self.module, self.multiplier = module, multiplier

    def forward(self, x):
        return self.module(x) * self.multiplier

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)


def test_wrapped_layers_counted_once_with_their_multiplier():
    torch.manual_seed(0)
    readout = MuReadout(32, 3, output_mult=2.0)
    model = nn.Sequential(Scaled(nn.Linear(4, 32), 0.25), nn.ReLU(), readout)
    set_base_shapes(model, None)  # width_mult = 1
    readout.width_mult = lambda: 4.0  # as if width = 4 x base width
    (first, last) = SpectralMonitor(model, exact=True).log(0)
    assert first["layer"] == "0.module" and last["layer"] == "2"
    assert first["sigma_w"] == pytest.approx(0.25 * exact(model[0].module.weight), rel=1e-6)
    assert last["sigma_w"] == pytest.approx(0.5 * exact(readout.weight), rel=1e-6)


def _mup_mlp(width, mup=True):
    def build(w):
        readout = MuReadout(w, 4, readout_zero_init=True) if mup else nn.Linear(w, 4)
        return nn.Sequential(nn.Linear(8, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), readout)

    model = build(width)
    set_base_shapes(model, build(16) if mup else None, delta=build(32) if mup else None)
    return model


def test_spectral_condition_mup_vs_sp():
    """After a few Adam steps, ||Delta W|| / sqrt(fan_out / fan_in) of the hidden and readout
    layers is width-independent under muP and grows ~ width under SP (Yang et al. 2023)."""
    rel = {}
    for mup in (True, False):
        for width in (64, 512):
            torch.manual_seed(0)
            model = _mup_mlp(width, mup)
            opt = (MuAdam if mup else torch.optim.Adam)(model.parameters(), lr=1e-2)
            mon = SpectralMonitor(model)
            mon.attach(opt)
            _train(model, opt, mon, 3, torch.Generator().manual_seed(1))
            last = mon.dataframe().query("step == 3").set_index("layer")["rel_dw"]
            rel[mup, width] = last
    for layer in ["2", "4"]:
        mup_growth = rel[True, 512][layer] / rel[True, 64][layer]
        sp_growth = rel[False, 512][layer] / rel[False, 64][layer]
        assert 0.5 < mup_growth < 2.0, (layer, mup_growth)
        assert sp_growth > 4.0, (layer, sp_growth)  # 8x the width


def test_plot_spectral():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    mon = SpectralMonitor(model, exact=True)
    mon(0)
    fig = plot_spectral(mon.dataframe(), x="step")
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="x must"):
        plot_spectral(mon.dataframe(), x="width")


class Kernel(nn.Module):
    """An unregistered layer with a 2-D weight stored (out, in): read in PyTorch's layout."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 5))

    def forward(self, x):
        return x @ self.weight.T


def test_unregistered_layers_are_named_in_a_warning():
    model = nn.Sequential(nn.Linear(4, 5), Kernel())
    with pytest.warns(UserWarning, match=r"\['1'\] have no registered geometry"):
        mon = SpectralMonitor(model, exact=True)
    (_, row) = mon.log(0)
    assert (row["layer"], row["fan_in"], row["fan_out"]) == ("1", 5, 3)
    # stacked weights are monitored per block, labelled name.param[block]
    mon = SpectralMonitor(nn.GRU(4, 6), exact=True, layers=lambda name: "hh" in name)
    assert list(mon.matrices) == ["weight_hh_l0[r]", "weight_hh_l0[z]", "weight_hh_l0[n]"]


def test_state_dict_carries_the_warm_starts_bitwise():
    """A monitor restored from another's state measures what that one measures, bit for bit; a
    fresh one (random starts, n_iter_init products) measures something else."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.Linear(64, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    first = SpectralMonitor(model, seed=3, n_iter=2, n_iter_init=3)

    def train_step():
        opt.zero_grad()
        model(torch.randn(8, 20)).pow(2).mean().backward()
        opt.step()

    for step in range(3):
        train_step()
        first(step)
    restored = SpectralMonitor(model, seed=3, n_iter=2, n_iter_init=3)
    restored.w0 = first.w0
    restored.load_state_dict(first.state_dict())
    fresh = SpectralMonitor(model, seed=3, n_iter=2, n_iter_init=3)
    fresh.w0 = first.w0
    train_step()
    a, b, c = first.log(3), restored.log(3), fresh.log(3)
    assert a == b
    assert [r["sigma_w"] for r in a] != [r["sigma_w"] for r in c]
    with pytest.raises(ValueError, match="layers this monitor lacks"):
        SpectralMonitor(model, layers=["0"]).load_state_dict(first.state_dict())


def test_step_must_be_an_int():
    monitor = SpectralMonitor(nn.Linear(4, 4))
    with pytest.raises(TypeError, match="step must be an int, got str"):
        monitor(step="a")
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        monitor.log(-1)
