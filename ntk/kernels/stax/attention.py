"""Global self-attention over all positions, finite and at infinite width (Hron et al. 2020).

Per head h, with inputs x (C channels at P positions), tied key/query weights W_K^h (C x d_k)
and value weights W_V^h (C x d_v), all N(0, 1) (NTK parametrization, as neural-tangents'):

    G^h(x) = attn( qk_std (x W_K^h)(x W_K^h)^T / (C d_k) )         (P x P, rows: queries)
    f(x)   = ov_std / sqrt(C d_v H) [G^1 x W_V^1, ..., G^H x W_V^H] W_O + bias_std b

with attn the softmax over keys (or identity, relu, abs elementwise). This is the "linear
scaling" attention of Hron et al. 2020 (arXiv:2006.10540, sec. 3): the logits are divided by
d_k, not sqrt(d_k), and keys and queries share weights, so as d_k -> infinity the logits
converge to qk_std Sigma(x, x)(p, p'), the input's own position-position covariance (with
independent keys and queries they would converge to 0). The attention weights become
constants G(x) per input, and with H, d_v -> infinity the outputs are Gaussian with

    Sigma'(x1, x2) = ov_std^2 G(x1) Sigma(x1, x2) G(x2)^T + bias_std^2
    Theta'(x1, x2) = ov_std^2 G(x1) Theta(x1, x2) G(x2)^T + 2 (Sigma' - bias_std^2) + bias_std^2

(W_V and W_O each contribute one ov_std^2 G Sigma G^T; the key weights none, since the logits
no longer depend on them at infinite width). This is neural-tangents'
`stax.GlobalSelfAttention(linear_scaling=True, pos_emb_type="NONE")`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ntk._checks import check_choice, check_positive_int, check_std
from ntk.kernels.stax.base import Layer, State, VarianceTape, new_tag

MECHANISMS = ("softmax", "identity", "relu", "abs")


def _attend(logits: Tensor, mechanism: str) -> Tensor:
    """Attention weights from logits (..., P, P): softmax over the last axis (the keys)."""
    if mechanism == "softmax":
        return torch.softmax(logits, dim=-1)
    if mechanism == "relu":
        return torch.relu(logits)
    if mechanism == "abs":
        return logits.abs()
    return logits


class _Attention(nn.Module):
    def __init__(self, c_in, width, d_key, d_val, heads, qk_std, ov_std, b_std, mechanism):
        super().__init__()
        self.key = nn.Parameter(torch.randn(heads, c_in, d_key))  # tied: queries = keys
        self.value = nn.Parameter(torch.randn(heads, c_in, d_val))
        self.out = nn.Parameter(torch.randn(heads * d_val, width))
        self.bias = None if b_std is None else nn.Parameter(torch.randn(width))
        self.logit_mult = qk_std / (c_in * d_key)  # 1 / d_k, not 1 / sqrt(d_k): see above
        self.out_mult = ov_std / math.sqrt(c_in * d_val * heads)
        self.b_mult, self.mechanism = b_std or 0.0, mechanism

    def forward(self, x: Tensor) -> Tensor:
        n, c, *spatial = x.shape
        seq = x.reshape(n, c, -1).transpose(1, 2)  # (N, P, C)
        keys = torch.einsum("npc,hck->nhpk", seq, self.key)
        values = torch.einsum("npc,hcv->nhpv", seq, self.value)
        g = _attend(keys @ keys.transpose(-1, -2) * self.logit_mult, self.mechanism)
        heads = (g @ values).permute(0, 2, 1, 3).reshape(n, seq.shape[1], -1)  # (N, P, H d_v)
        y = heads @ self.out * self.out_mult
        if self.bias is not None:
            y = y + self.bias * self.b_mult
        return y.transpose(1, 2).reshape(n, -1, *spatial)


def _matrix(t: Tensor, batch_ndim: int, s: int) -> Tensor:
    """(*batch, n1, n1', ..., nS, nS') -> (*batch, P, P') with P = n1 ... nS."""
    b = batch_ndim
    perm = [*range(b), *[b + 2 * i for i in range(s)], *[b + 2 * i + 1 for i in range(s)]]
    t = t.permute(perm)
    p = math.prod(t.shape[b : b + s])
    return t.reshape(*t.shape[:b], p, -1)


def _unmatrix(t: Tensor, batch_ndim: int, spatial: tuple[int, ...]) -> Tensor:
    """The inverse of `_matrix`."""
    b, s = batch_ndim, len(spatial)
    t = t.reshape(*t.shape[:b], *spatial, *spatial)
    perm = [*range(b), *[a for i in range(s) for a in (b + i, b + s + i)]]
    return t.permute(perm).contiguous()


class GlobalSelfAttention(Layer):
    """Self-attention of every position to every position (Hron et al. 2020, linear scaling,
    tied keys and queries; see the module docstring). `width` output channels, `n_heads`
    heads of `key_dim` key and `value_dim` value channels (all infinite in the kernel);
    `attention` "softmax", "identity", "relu" or "abs". NTK parametrization only."""

    name = "GlobalSelfAttention"

    def __init__(
        self,
        width: int,
        key_dim: int | None = None,
        value_dim: int | None = None,
        n_heads: int = 1,
        qk_std: float = 1.0,
        ov_std: float = 1.0,
        bias_std: float | None = None,
        attention: str = "softmax",
    ) -> None:
        self.width = check_positive_int(f"{self.name} width", width)
        self.key_dim = check_positive_int(f"{self.name} key_dim", key_dim or width)
        self.value_dim = check_positive_int(f"{self.name} value_dim", value_dim or width)
        self.n_heads = check_positive_int(f"{self.name} n_heads", n_heads)
        self.qk_std = check_std("qk_std", qk_std)
        self.ov_std = check_std("ov_std", ov_std)
        self.bias_std = None if bias_std is None else check_std("bias_std", bias_std)
        self.attention = check_choice(f"{self.name} attention", attention, MECHANISMS)

    def _check(self, shape, parametrization: str) -> None:
        if parametrization != "ntk":
            raise ValueError(
                f"{self.name} has only the NTK parametrization (as neural-tangents'), got "
                f"parametrization={parametrization!r}; use parametrization='ntk'"
            )
        if len(shape) < 2:
            raise ValueError(
                f"{self.name} needs inputs with positions, (C, L) or (C, H, W) per example, "
                f"got per-example shape {tuple(shape)}"
            )

    def build(self, shape, parametrization):
        self._check(shape, parametrization)
        module = _Attention(
            shape[0],
            self.width,
            self.key_dim,
            self.value_dim,
            self.n_heads,
            self.qk_std,
            self.ov_std,
            self.bias_std,
            self.attention,
        )
        return module, (self.width, *shape[1:])

    def kernel(self, state: State, tape: VarianceTape, parametrization: str) -> State:
        self._check((state.channels, *state.spatial), parametrization)
        if state.averaged:
            raise ValueError(f"{self.name} directly after Flatten: it has no positions left")
        b, s = state.batch_ndim, len(state.spatial)

        def weights(own: Tensor) -> Tensor:  # own: (N, n1, n1', ...) each example with itself
            return _attend(self.qk_std * _matrix(own, 1, s), self.attention)  # (N, P, P)

        g1, g2 = tape.per_example(state, weights)
        ov2, b2 = self.ov_std**2, (self.bias_std or 0.0) ** 2

        def weigh(t: Tensor) -> Tensor:
            m = _matrix(t, b, s)
            if b == 1:  # each example with itself: G K G^T
                out = g1 @ m @ g1.transpose(-1, -2)
            else:  # rows (B, 1, P, P), columns (1, M, P, P)
                out = g1.unsqueeze(1) @ m @ g2.transpose(-1, -2).unsqueeze(0)
            return _unmatrix(out, b, state.spatial)

        gsg = weigh(state.nngp).mul_(ov2)
        nngp = gsg + b2
        ntk = 2 * gsg + b2
        if state.ntk is not None:
            ntk.add_(weigh(state.ntk), alpha=ov2)
        return state.with_(
            nngp=nngp,
            ntk=ntk,
            channels=self.width,
            gaussian=True,
            tag=frozenset({new_tag()}),
            averaged=False,
        )
