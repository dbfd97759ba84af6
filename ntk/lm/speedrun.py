"""The modded-nanogpt speedrun's block components, as options of `ntk.lm.model.GPT`.

Followed: the record of 2025-01-16 ("Sub3Min", track 1) of KellerJordan/modded-nanogpt's
`train_gpt.py`: ReLU^2 MLP (So et al. 2021, "Primer", arXiv:2109.08668), RMSNorm without gain
(Zhang & Sennrich 2019, arXiv:1910.07467) for every norm, QK-norm (Dehghani et al. 2023,
arXiv:2302.05442), half-truncated RoPE, value embeddings (after the value residual of Zhou et
al. 2024, arXiv:2410.17897) in the first and last blocks with the table of block j shared with
block L - k + j, U-Net skips (Ronneberger et al. 2015) from the first half of the blocks to
the second, x0 mixing of each block's input, the logit soft-cap c tanh(z / c) (Gemma 2,
arXiv:2408.00118), untied embedding and readout, sliding-window attention
(`ntk.lm.attention`). Each is one `GPTConfig` field, off by default. For blocks l = 0..L-1:

    x_0 = wte[idx],   ve_j = value_embeds[j][idx]            (B, T, C)
    x   <- x + u_i x_{L/2 - 1 - i}         before decoder block i  (U-Net skip, u_i init 1)
    x   <- lam_l x + mu_l x_0              at each block's input   (x0 mix, init (1, 0))
    v   <- g_l v + e_l ve_j                 in blocks with a table  (value mix, init (1/2, 1/2))
    q, k <- rms(q), rms(k)                  QK-norm, before RoPE
    logits = c tanh(z / c),  z = lm_head(norm(x))            soft-cap

Left out, and why: Muon (its own issue), the FP8 readout matmul (needs a GPU), document masks
(the corpus here has no documents), the long/short window alternation across blocks, the
attention-free block 7, the scalar on v in blocks without a value embedding, the merged qkv
matrix (muP zero-initializes the query alone), the
fixed attention scale 0.12 and the 0.5 init scale (the parametrization sets both), the shift
of the cap to 30 sigmoid(z / 7.5) (= 15 tanh(z / 15) + 15: the same softmax) and the norm of
the embedding output.

muP roles (Yang et al. 2022, arXiv:2203.03466; the engine's rules, `ntk.lm.parametrize`):
- value embeddings: a lookup from the finite vocabulary into the width, like wte: role
  "embedding" (output coordinates Theta(1) at init and after each step).
- the scalar gates u, lam, mu, g, e: no width dimension. A scalar w times a vector h with
  Theta(1) coordinates moves the output by dw h; Adam moves w by Theta(lr) whatever its
  gradient's size, so the base lr at every width keeps dw h = Theta(1): they stay in the
  engine's rest group (a = b = c = 0), as norm gains do. A matrix's rule lr ~ 1/m would freeze
  them at large width (the broken-muP row of chapter 13).
- QK-norm has no weights (the speedrun's norm has no gain; a gain would be vector-like, rest
  group). It fixes |q| = |k| = sqrt(d), so the logit q.k / d' is Theta(sqrt(d)) / d' for
  independent q, k and Theta(d) / d' once training aligns them: muP's 1/d scaling (the engine's
  sqrt(d0)/d, anchored at the base head size) keeps it Theta(1), 1/sqrt(d) does not.
  The zero-initialized query stays: rms(0) = 0, and after the first Adam step q is the update
  alone, aligned with k, as muP intends.
- the soft-cap c: a fixed function of the effective logits, c width-independent. It does not
  commute with the readout multiplier m^-a: c tanh(m^-a z / c) != m^-a c tanh(z / c), so the
  cap is applied to the output of the wrapped readout (multiplier included), whose
  coordinates muP keeps Theta(1). Capping the raw z and multiplying afterwards would send the
  logits to 0 like m^-a.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntk._checks import check_bool, check_choice, check_positive, check_positive_int
from ntk.lm.attention import IMPLS, check_window

MLPS = ("gelu", "relu2")
NORMS = ("layernorm", "rms")


def check_options(prefix: str, options: object, n_layer: int, block_size: int | None) -> None:
    """Validate the speedrun fields of a `GPTConfig` (or the YAML model section): errors name
    `prefix` + field. block_size None skips the window's upper bound (set later)."""
    check_choice(f"{prefix}mlp", options.mlp, MLPS)
    check_choice(f"{prefix}norm", options.norm, NORMS)
    for key in ("qk_norm", "unet_skips", "x0_mix"):
        check_bool(f"{prefix}{key}", getattr(options, key))
    frac = options.rope_truncate
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac <= 1:
        raise ValueError(f"{prefix}rope_truncate must be a fraction in [0, 1], got {frac!r}")
    k = check_positive_int(f"{prefix}value_embeds", options.value_embeds, minimum=0)
    if 2 * k > n_layer:
        raise ValueError(
            f"{prefix}value_embeds ({k}) puts tables in the first and last {k} blocks: needs "
            f"2 * {k} <= n_layer ({n_layer})"
        )
    if options.logit_softcap is not None:
        check_positive(f"{prefix}logit_softcap", options.logit_softcap)
    check_window(f"{prefix}attn_window", options.attn_window, block_size or math.inf)
    check_choice(f"{prefix}attn_impl", options.attn_impl, IMPLS)


OPTIONS = {
    "mlp": "gelu",
    "norm": "layernorm",
    "qk_norm": False,
    "rope_truncate": 0.0,
    "value_embeds": 0,
    "unet_skips": False,
    "x0_mix": False,
    "logit_softcap": None,
    "attn_window": None,
}  # field -> its "off" value (attn_impl only picks a kernel)


# The value-embedding tables' abc role (added to `ntk.lm.model.LAYERS`)
LAYERS: dict[str, str] = {"value_embeds.*": "embedding"}  # muP: vocab -> width, like wte


def active_options(config: object) -> list[str]:
    """The speedrun fields of `config` set away from the plain GPT."""
    return [key for key, off in OPTIONS.items() if getattr(config, key) != off]


def value_embed_blocks(n_layer: int, k: int) -> dict[int, int]:
    """block -> value-embedding table: tables 0..k-1 in the first k blocks, again in the last k."""
    return {**{j: j for j in range(k)}, **{n_layer - k + j: j for j in range(k)}}


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) over the last dimension, no gain (the speedrun's norm)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (self.dim,), eps=self.eps)


def make_norm(config) -> nn.Module:
    """The residual-stream norm of `config`: LayerNorm (gain, bias if config.bias) or RMSNorm."""
    if config.norm == "rms":
        return RMSNorm(config.n_embd, config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


def relu2(x: Tensor) -> Tensor:
    """ReLU(x)^2 (So et al. 2021): 2-homogeneous, so Theta(1) inputs stay Theta(1)."""
    return F.relu(x).square()


class Scalar(nn.Module):
    """w * x for one learnable scalar w (shape (1,)), initialized to `init`.

    # muP: no width dimension: the engine's rest group, base lr at every width
    """

    def __init__(self, init: float) -> None:
        super().__init__()
        self.init = float(init)
        self.weight = nn.Parameter(torch.full((1,), self.init))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight.fill_(self.init)

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * x


class Mix(nn.Module):
    """a x + b y with learnable scalars a, b (`Scalar`s named `a` and `b`, recorded apart)."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a, self.b = Scalar(a), Scalar(b)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.a(x) + self.b(y)


class SoftCap(nn.Module):
    """c tanh(z / c): logits bounded by c, the identity for |z| << c (Gemma 2)."""

    def __init__(self, cap: float) -> None:
        super().__init__()
        self.cap = float(cap)

    def forward(self, z: Tensor) -> Tensor:
        # muP: applied to the effective logits, readout multiplier included (module docstring)
        return self.cap * torch.tanh(z / self.cap)


_TRUNCATED: dict[tuple[int, float], tuple[Tensor, Tensor]] = {}


def truncate_rope(rotation: Tensor, fraction: float) -> Tensor:
    """The (T, D/2, 2) RoPE table with its last round(fraction D/2) pairs (lowest frequencies)
    at zero angle: those coordinates carry no position, so q.k mixes relative-position and
    position-free terms (the speedrun's half-truncated RoPE: fraction 1/2).

    Cached per table (`cached_rotation`'s tables live for the process, so their ids do)."""
    if fraction == 0:
        return rotation
    key = (id(rotation), float(fraction))
    hit = _TRUNCATED.get(key)
    if hit is None or hit[0] is not rotation:
        with torch.inference_mode(False), torch.no_grad():
            pairs = rotation.shape[1]
            zero = round(pairs * fraction)
            out = rotation.clone()
            if zero:  # angle 0: cos 1, sin 0
                out[:, pairs - zero :, 0] = 1.0
                out[:, pairs - zero :, 1] = 0.0
        hit = _TRUNCATED[key] = (rotation, out)
    return hit[1]
