"""3-D expert weights (E, in, out) read like E separate nn.Linear(in, out), to 1e-12."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ntk.lm.moe import ExpertLinear
from ntk.scaling import Parametrization, ParametrizationConfig, expert_geometry
from ntk.scaling.geometry import geometry_of

pytestmark = pytest.mark.usefixtures("single_thread")
E = 3


class Experts(nn.Module):
    """x -> readout(sum_e down_e(gelu(up_e(emb(x))))), experts batched or one Linear each."""

    def __init__(self, n: int, batched: bool) -> None:
        super().__init__()
        self.emb = nn.Linear(5, n, bias=False)
        self.batched = batched
        if batched:
            self.up, self.down = ExpertLinear(E, n, 2 * n), ExpertLinear(E, 2 * n, n)
        else:
            self.up = nn.ModuleList(nn.Linear(n, 2 * n, bias=False) for _ in range(E))
            self.down = nn.ModuleList(nn.Linear(2 * n, n, bias=False) for _ in range(E))
        self.head = nn.Linear(n, 2, bias=False)

    def forward(self, x):
        h = self.emb(x)
        if self.batched:
            y = self.down(F.gelu(self.up(h.expand(E, *h.shape)))).sum(0)
        else:
            y = sum(d(F.gelu(u(h))) for u, d in zip(self.up, self.down, strict=True))
        return self.head(y)


def parametrized(n: int, batched: bool, name: str):
    torch.manual_seed(0)
    model = Experts(n, batched).double()
    experts = (
        {"up": "hidden", "down": "hidden"} if batched else {"up.*": "hidden", "down.*": "hidden"}
    )
    layers = {"emb": "embedding", **experts, "head": "readout"}
    with torch.device("meta"):
        base = Experts(8, batched)
    cfg = ParametrizationConfig(name, lr=0.1, layers=layers, base_model=base)
    return model, Parametrization(model, cfg)


@pytest.mark.parametrize("name", ["mup", "sp", "ntk"])
def test_expert_tensor_matches_per_expert_linear_init_lr_and_step(name):
    n = 32
    model, p = parametrized(n, True, name)
    ref, pr = parametrized(n, False, name)
    rows = {s.name: s for s in p.layers}
    refs = {s.name: s for s in pr.layers}
    for part in ("up", "down"):
        for e in range(E):
            a, b = rows[part], refs[f"{part}.{e}"]
            for key in ("n", "n0", "a", "b", "c", "init_std", "multiplier", "lr"):
                assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-12, abs=1e-12)
    # the measured init std per expert is the row's (sampling spread at 32 x 64: ~2%)
    w = rows["up"].weight
    for e in range(E):
        assert w[e].std().item() == pytest.approx(rows["up"].init_std, rel=0.1)
    # same weights -> same function and the same Adam step, to 1e-12 in float64
    with torch.no_grad():
        for part in ("up", "down"):
            stacked = getattr(model, part).module.weight
            for e, lin in enumerate(getattr(ref, part)):
                lin.module.weight.copy_(stacked[e].T)
        ref.emb.module.weight.copy_(model.emb.module.weight)
        ref.head.module.weight.copy_(model.head.module.weight)
    x = torch.randn(7, 5, dtype=torch.float64)
    for m, param in ((model, p), (ref, pr)):
        opt = torch.optim.Adam(param.param_groups)
        m(x).square().mean().backward()
        opt.step()
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-12)
    for e, lin in enumerate(ref.up):
        torch.testing.assert_close(
            model.up.module.weight[e].T, lin.module.weight, rtol=0, atol=1e-12
        )


def test_expert_geometry_layout_and_errors():
    m = ExpertLinear(4, 3, 5)
    (g,) = geometry_of(m)
    assert (g.fan_in, g.fan_out, g.block_size, len(g.blocks)) == (3, 20, 5, 4)
    w = g.matrix(m.weight)  # (E out, in): expert e's W_e^T in rows 5e .. 5e + 4
    torch.testing.assert_close(w[5:10], m.weight[1].T)
    stored_out_in = expert_geometry("weight", 4, 5, 3, transposed=False)  # (E, out=3, in=5)
    torch.testing.assert_close(stored_out_in.matrix(m.weight)[3:6], m.weight[1])
    with pytest.raises(ValueError, match="fan_in"):
        expert_geometry("weight", 4, 0, 3)
