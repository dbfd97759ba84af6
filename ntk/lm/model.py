"""A decoder-only transformer language model in the nanoGPT shape, ready for muP.

The architecture of Vaswani et al. 2017 ("Attention Is All You Need", arXiv:1706.03762) as
GPT-2 and nanoGPT use it, with two modern changes: pre-norm blocks and rotary position
embeddings (RoPE, Su et al. 2021, "RoFormer", arXiv:2104.09864) instead of a learned
position table. For token ids x of shape (B, T):

    h_0 = wte[x]                                         (B, T, C)   C = n_embd
    h_l = h_{l-1} + o(attn(rope(q(n1)), rope(k(n1)), v(n1))),  n1 = norm(h_{l-1})
    h_l = h_l + down(gelu(up(norm(h_l))))                4x MLP
    logits = lm_head(norm(h_L))                          (B, T, vocab)

with causal attention softmax(s * q k^T + mask) v per head, s = `softmax_scale`.

Width is C = n_embd, and it grows in one of two ways: a fixed head size `head_dim` with more
heads (n_head = C / head_dim), or a fixed number of heads `n_head` with wider heads
(head_dim = C / n_head). Set exactly one of the two in `GPTConfig`.

muP (Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466) is applied from outside by the
abc engine (`ntk.Parametrization`, through `ntk.lm.parametrize`): it re-initializes and wraps
the layers that `LAYERS` lists by role (with each option's rows: `gpt_layers`). muP also scales attention logits by 1/head_dim
instead of 1/sqrt(head_dim) (anchored to agree at the base width), so each attention's
`softmax_scale` is a plain float attribute that forward reads. The model keeps everything a
parametrization touches addressable: separate q, k, v, o layers (muP zero-initializes the
query alone) and layers called as modules (so a wrapper sees every call). Lines that muP relies
on are marked `# muP:`.

Speed (bench/lm.py, profiled with torch.profiler): matmuls are ~65% of a CPU training step,
attention ~10%, the rest norms, GELU, bias sums and copies. Forward adds no per-step work
beyond the math: the RoPE table is built once per length, device and dtype
(`cached_rotation`), and token ids are range-checked only where that is free (eager, on the
CPU), never with a device-to-host sync. q, k, v stay three matmuls: one fused (C, 3C) matrix
would be a little faster but would give the three matrices one learning rate and one spectral
row, and change every stored result's float rounding.

Speedrun options (`GPTConfig` fields after norm_eps, all off by default: the plain model is
unchanged): the modded-nanogpt block of `ntk.lm.speedrun` (ReLU^2, gain-free RMSNorm, QK-norm,
half-truncated RoPE, value embeddings, U-Net skips, x0 mixing, logit soft-cap) and
sliding-window attention (`ntk.lm.attention`, FlexAttention or masked SDPA).

Defaults follow the engine's standard parametrization at std_prefactor 1: embedding N(0, 1),
every other weight N(0, 1/fan_in), biases zero. There is no dropout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntk._checks import check_bool, check_nonnegative, check_positive, check_positive_int
from ntk.lm import speedrun
from ntk.lm.attention import causal_attention, check_window
from ntk.lm.mla import LatentAttention
from ntk.lm.moe import ExpertLinear, MoE
from ntk.lm.rope import apply_rope, cached_rotation, rope_rotation

__all__ = ["GPT", "GPTConfig", "apply_rope", "cached_rotation", "rope_rotation"]


@dataclass
class GPTConfig:
    """Shape of a `GPT`.

    Attributes:
        vocab_size: number of token ids (e.g. 256 for bytes, the alphabet size for chars).
        block_size: the longest sequence the model accepts.
        n_layer: number of transformer blocks.
        n_embd: the width C of the residual stream.
        n_head: number of attention heads; set it (and leave head_dim None) to keep the head
            count fixed as n_embd grows: heads get wider.
        head_dim: size of each head; set it (and n_head=None) to keep the head size fixed as
            n_embd grows: there are more heads.
        tie_embeddings: use the token embedding matrix as the readout weight.
        bias: biases in the Linear layers and norms (GPT-2 has them; nanoGPT suggests not).
        rope_base: base of the rotary frequencies theta_i = rope_base^(-2i / head_dim).
        norm_eps: epsilon of the LayerNorms.

    Speedrun options (`ntk.lm.speedrun`; defaults: the plain nanoGPT block):
        mlp: "gelu" or "relu2" (ReLU^2).
        norm: "layernorm" or "rms" (RMSNorm without gain, every norm of the model).
        qk_norm: RMS-normalize queries and keys (no gain) before RoPE.
        rope_truncate: fraction in [0, 1] of the RoPE frequency pairs (the lowest) held at
            zero angle (the speedrun: 0.5).
        value_embeds: k value-embedding tables mixed into v of the first k and last k blocks
            (2k <= n_layer).
        unet_skips: add the outputs of the first n_layer // 2 blocks to the inputs of the
            last ones, in reverse order, with learnable scalar weights.
        x0_mix: each block's input becomes lam x + mu x0 (x0 the embedding output).
        logit_softcap: c of the logits' soft-cap c tanh(z / c); None for none.
        attn_window: sliding attention window (1..block_size); None: full causal attention.
            `GPT.set_window` changes it during training (`ntk.lm.attention.window_at`).
        attn_impl: "auto", "flex" (FlexAttention) or "sdpa" (explicit mask).

    Mixture of experts and latent attention (`ntk.lm.moe`, `ntk.lm.mla`; default: off):
        moe_experts: E, for a mixture-of-experts MLP in every block (`ntk.lm.moe`); None
            (default): the dense MLP.
        moe_top_k: experts per token (k <= E).
        moe_hidden: each expert's hidden size in units of n_embd (the dense MLP's is 4).
        moe_capacity: None (dropless) or the capacity factor c (slots per expert
            ceil(c N k / E), assignments past them dropped).
        moe_aux_coef: weight of Switch's load-balancing loss added to the training loss.
        mla_rank: r, for multi-head latent attention with latent rank r (`ntk.lm.mla`),
            0 < r < n_embd; None (default): the standard attention.
        mla_rope_dim: d_R, the size of MLA's decoupled RoPE query/key per head (even).
    """

    vocab_size: int = 256
    block_size: int = 256
    n_layer: int = 4
    n_embd: int = 256
    n_head: int | None = 4
    head_dim: int | None = None
    tie_embeddings: bool = False
    bias: bool = False
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    # speedrun options (ntk.lm.speedrun), off by default; checked by speedrun.check_options
    mlp: str = "gelu"
    norm: str = "layernorm"
    qk_norm: bool = False
    rope_truncate: float = 0.0
    value_embeds: int = 0
    unet_skips: bool = False
    x0_mix: bool = False
    logit_softcap: float | None = None
    attn_window: int | None = None
    attn_impl: str = "auto"
    # mixture of experts and latent attention (ntk.lm.moe, ntk.lm.mla): off by default
    moe_experts: int | None = None
    moe_top_k: int = 2
    moe_hidden: int = 4
    moe_capacity: float | None = None
    moe_aux_coef: float = 0.01
    mla_rank: int | None = None
    mla_rope_dim: int = 8

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_embd"):
            check_positive_int(f"GPTConfig.{name}", getattr(self, name))
        if (self.n_head is None) == (self.head_dim is None):
            raise ValueError(
                "GPTConfig: set exactly one of n_head (fixed head count, wider heads) and "
                f"head_dim (fixed head size, more heads); got n_head={self.n_head}, "
                f"head_dim={self.head_dim}"
            )
        field = "n_head" if self.n_head is not None else "head_dim"
        size = check_positive_int(f"GPTConfig.{field}", getattr(self, field))
        if self.n_embd % size:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by GPTConfig.{field} ({size})"
            )
        if self.heads[1] % 2:
            raise ValueError(
                f"GPTConfig: RoPE rotates pairs of coordinates, so the head size must be even; "
                f"n_embd={self.n_embd} with n_head={self.n_head}, head_dim={self.head_dim} "
                f"gives {self.heads[1]}"
            )
        check_bool("GPTConfig.tie_embeddings", self.tie_embeddings)
        check_bool("GPTConfig.bias", self.bias)
        check_positive("GPTConfig.norm_eps", self.norm_eps)
        if check_positive("GPTConfig.rope_base", self.rope_base) <= 1:
            raise ValueError(f"GPTConfig.rope_base must be > 1, got {self.rope_base}")
        speedrun.check_options("GPTConfig.", self, self.n_layer, self.block_size)
        self._check_moe_mla()

    def _check_moe_mla(self) -> None:
        if self.moe_experts is not None:
            E = check_positive_int("GPTConfig.moe_experts", self.moe_experts)
            check_positive_int("GPTConfig.moe_top_k", self.moe_top_k, maximum=E)
            check_positive_int("GPTConfig.moe_hidden", self.moe_hidden)
            if self.moe_capacity is not None:
                check_positive("GPTConfig.moe_capacity", self.moe_capacity)
            check_nonnegative("GPTConfig.moe_aux_coef", self.moe_aux_coef)
        if self.mla_rank is not None:
            check_positive_int("GPTConfig.mla_rank", self.mla_rank, maximum=self.n_embd - 1)
            if check_positive_int("GPTConfig.mla_rope_dim", self.mla_rope_dim) % 2:
                raise ValueError(
                    f"GPTConfig.mla_rope_dim must be even (RoPE rotates pairs), got "
                    f"{self.mla_rope_dim}"
                )
            # MLA has its own attention: the speedrun's attention options do not apply to it
            for key in ("qk_norm", "rope_truncate", "value_embeds", "attn_window"):
                if getattr(self, key):
                    raise ValueError(
                        f"GPTConfig.{key} is a speedrun option of the standard attention; "
                        "it cannot be combined with GPTConfig.mla_rank (latent attention)"
                    )
        if self.moe_experts is not None and self.mlp != "gelu":
            raise ValueError(
                f"GPTConfig.mlp={self.mlp!r} sets the dense MLP's activation; the experts of "
                "GPTConfig.moe_experts use GELU"
            )

    @property
    def heads(self) -> tuple[int, int]:
        """(n_head, head_dim), whichever of the two was given."""
        if self.n_head is not None:
            return self.n_head, self.n_embd // self.n_head
        return self.n_embd // self.head_dim, self.head_dim


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary positions (Vaswani et al. 2017, sec. 3.2)."""

    def __init__(self, config: GPTConfig, value_embed: bool = False) -> None:
        super().__init__()
        C = config.n_embd
        self.n_head, self.head_dim = config.heads
        # muP: separate projections, so that the query alone can be zero-initialized
        self.q = nn.Linear(C, C, bias=config.bias)
        self.k = nn.Linear(C, C, bias=config.bias)
        self.v = nn.Linear(C, C, bias=config.bias)
        self.o = nn.Linear(C, C, bias=config.bias)
        # muP: a plain float that a parametrization may overwrite (muP: 1/head_dim scaling,
        # anchored to 1/sqrt(head_dim) at the base width); forward reads it at every call
        self.softmax_scale = 1.0 / math.sqrt(self.head_dim)
        self.qk_norm, self.impl = config.qk_norm, config.attn_impl
        self.window = config.attn_window  # a plain int, changed by GPT.set_window
        # muP: g v + e ve, scalars (rest group); only in blocks given a value embedding
        self.value_mix = speedrun.Mix(0.5, 0.5) if value_embed else None

    def forward(self, x: Tensor, rotation: Tensor, ve: Tensor | None = None) -> Tensor:
        B, T, C = x.shape
        H, D = self.n_head, self.head_dim
        q, k = self.q(x).view(B, T, H, D), self.k(x).view(B, T, H, D)
        if self.qk_norm:  # muP: |q| = |k| = sqrt(D): the 1/D scale keeps aligned logits O(1)
            q, k = F.rms_norm(q, (D,)), F.rms_norm(k, (D,))
        q = apply_rope(q, rotation).transpose(1, 2)  # (B, H, T, D)
        k = apply_rope(k, rotation).transpose(1, 2)  # (B, H, T, D)
        v = self.v(x).view(B, T, H, D)
        if ve is not None:
            v = self.value_mix(v, ve.view(B, T, H, D))
        v = v.transpose(1, 2)  # (B, H, T, D)
        # muP: the logits q.k are scaled by softmax_scale, set from outside
        y = causal_attention(q, k, v, scale=self.softmax_scale, window=self.window, impl=self.impl)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, H, D) -> (B, T, C): heads side by side
        return self.o(y)


class MLP(nn.Module):
    """Position-wise feed-forward network, C -> 4C -> C with GELU (Vaswani et al. 2017, sec. 3.3)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # muP: fan-in 4C, a hidden layer whose width ratio is that of n_embd
        self.down = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.act = speedrun.relu2 if config.mlp == "relu2" else F.gelu

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.up(x)))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig, value_embed: bool = False) -> None:
        super().__init__()
        # muP: norm gains and biases are vector-like: width-independent init and lr
        self.ln_1 = speedrun.make_norm(config)
        C, (H, D) = config.n_embd, config.heads
        if config.mla_rank:  # ntk.lm.mla
            r, R = config.mla_rank, config.mla_rope_dim
            self.attn = LatentAttention(C, H, D, r, R, config.bias)
        else:
            self.attn = CausalSelfAttention(config, value_embed)
        self.ln_2 = speedrun.make_norm(config)
        if config.moe_experts:  # ntk.lm.moe
            E, k, cap = config.moe_experts, config.moe_top_k, config.moe_capacity
            self.mlp = MoE(C, E, k, config.moe_hidden * C, cap, config.moe_aux_coef)
        else:
            self.mlp = MLP(config)
        # muP: lam x + mu x0, scalars (rest group)
        self.x0_mix = speedrun.Mix(1.0, 0.0) if config.x0_mix else None

    def forward(
        self, x: Tensor, rotation: Tensor, x0: Tensor | None = None, ve: Tensor | None = None
    ) -> Tensor:
        if self.x0_mix is not None:
            x = self.x0_mix(x, x0)  # (B, T, C)
        h = self.ln_1(x)
        x = x + (self.attn(h, rotation) if ve is None else self.attn(h, rotation, ve))  # (B, T, C)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


# The layers by abc role, as data beside the model (glob pattern on module names -> role; read
# by `ntk.lm.parametrize.gpt_layers`, which adds each option's rows from its own module). Norm
# gains, biases and scalar gates are vector-like: the engine's rest group.
LAYERS: dict[str, str] = {
    "wte": "embedding",  # muP: vocab -> width
    "blocks.*.attn.q": "hidden",
    "blocks.*.attn.k": "hidden",
    "blocks.*.attn.v": "hidden",
    "blocks.*.attn.o": "hidden",
    "blocks.*.mlp.up": "hidden",
    "blocks.*.mlp.down": "hidden",  # muP: fan-in 4 n_embd, width ratio that of n_embd
    "lm_head": "readout",  # muP: width -> vocab
}


class GPT(nn.Module):
    """Decoder-only transformer: token ids (B, T) int64 -> next-token logits (B, T, vocab)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        # muP: the embedding is an "embedding" layer (input of finite size vocab, output width C)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.ve_of = speedrun.value_embed_blocks(config.n_layer, config.value_embeds)
        self.blocks = nn.ModuleList(Block(config, i in self.ve_of) for i in range(config.n_layer))
        self.ln_f = speedrun.make_norm(config)
        # muP: the readout (fan-in C): its effective weight must shrink like 1/C, e.g. through
        # an output multiplier base_width / C
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # muP: one (vocab, C) matrix in both roles, embedding and readout
            self.lm_head.weight = self.wte.weight
        self._add_speedrun_modules(config)
        self.reset_parameters()

    def _add_speedrun_modules(self, config: GPTConfig) -> None:
        """Value-embedding tables, U-Net skip weights and the soft-cap, when configured."""
        if config.value_embeds:
            # muP: lookups vocab -> width, "embedding" role like wte (ntk.lm.parametrize)
            self.value_embeds = nn.ModuleList(
                nn.Embedding(config.vocab_size, config.n_embd) for _ in range(config.value_embeds)
            )
        if config.unet_skips:
            # muP: scalars (rest group); skip i feeds decoder block i from encoder block -1-i
            self.skips = nn.ModuleList(speedrun.Scalar(1.0) for _ in range(config.n_layer // 2))
        if config.logit_softcap is not None:
            self.softcap = speedrun.SoftCap(config.logit_softcap)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Standard parametrization: embedding N(0, 1), other weights N(0, 1/fan_in), biases 0.

        muP's init (and any other abc-parametrization's) replaces this: `ntk.lm.parametrize`.

        With tied embeddings the shared matrix is initialized N(0, 1/C) as in GPT-2 (std
        0.02 at C = 768): at N(0, 1) the tied readout's logits would have std sqrt(C).
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=module.in_features**-0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm | speedrun.Scalar | ExpertLinear):
                module.reset_parameters()
        std = self.config.n_embd**-0.5 if self.config.tie_embeddings else 1.0
        nn.init.normal_(self.wte.weight, std=std)
        for table in getattr(self, "value_embeds", ()):
            nn.init.normal_(table.weight, std=1.0)  # as the untied wte

    def forward(self, idx: Tensor) -> Tensor:
        """Logits (B, T, vocab_size) of the next token at every position of idx (B, T)."""
        self._check_input(idx)
        x = self.wte(idx)  # (B, T, C)
        cfg = self.config
        rope_dim = cfg.mla_rope_dim if cfg.mla_rank else cfg.heads[1]  # MLA: the decoupled part
        rotation = cached_rotation(idx.shape[1], rope_dim, cfg.rope_base, idx.device, x.dtype)
        if cfg.rope_truncate or cfg.value_embeds or cfg.unet_skips or cfg.x0_mix:
            x = self._speedrun_blocks(idx, x, speedrun.truncate_rope(rotation, cfg.rope_truncate))
        else:
            for block in self.blocks:
                x = block(x, rotation)  # (B, T, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        return logits if cfg.logit_softcap is None else self.softcap(logits)

    def _speedrun_blocks(self, idx: Tensor, x: Tensor, rotation: Tensor) -> Tensor:
        """The blocks with value embeddings, U-Net skips and x0 mixing (the options set)."""
        x0, ves = x, [table(idx) for table in getattr(self, "value_embeds", ())]
        skips, half = [], len(self.blocks) // 2
        first_decoder = len(self.blocks) - half  # an odd middle block gets no skip
        for i, block in enumerate(self.blocks):
            if self.config.unet_skips and i >= first_decoder:
                x = x + self.skips[i - first_decoder](skips.pop())  # (B, T, C)
            ve = ves[self.ve_of[i]] if i in self.ve_of else None
            x = block(x, rotation, x0, ve)  # (B, T, C)
            if i < half:
                skips.append(x)
        return x

    def set_window(self, window: int | None) -> None:
        """Set every attention's sliding window (None: full causal), e.g. from a schedule."""
        check_window("window", window, self.config.block_size)
        for block in self.blocks:
            block.attn.window = window

    def _check_input(self, idx: Tensor) -> None:
        if not isinstance(idx, Tensor):
            raise TypeError(f"idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"idx must hold integer token ids (int64), got dtype {idx.dtype}")
        if idx.ndim != 2 or idx.numel() == 0:
            raise ValueError(
                f"idx must have shape (batch, time), non-empty; got {tuple(idx.shape)}"
            )
        if idx.shape[1] > self.config.block_size:
            raise ValueError(
                f"idx has sequence length {idx.shape[1]} > GPTConfig.block_size "
                f"({self.config.block_size})"
            )
        # Token ids are checked here only where that costs no device-to-host sync and no graph
        # break: eager, on the CPU. Elsewhere the data side has checked them (a corpus is
        # encoded by its own tokenizer; `check_token_ids` checks any batch explicitly).
        if idx.device.type == "cpu" and not torch.compiler.is_compiling():
            self.check_token_ids(idx)

    def check_token_ids(self, idx: Tensor) -> None:
        """Raise ValueError unless every token id of idx lies in [0, vocab_size).

        Reads two numbers back from idx's device: call it once per batch source, not per step,
        on an accelerator.
        """
        low, high = torch.aminmax(idx)
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(
                f"idx holds token ids in [{int(low)}, {int(high)}], outside "
                f"[0, GPTConfig.vocab_size) = [0, {self.config.vocab_size})"
            )

    def num_params(self, embedding: bool = False) -> int:
        """Number of parameters, without the token embedding unless `embedding` (a lookup,
        not a matmul: FLOP counts leave it out). A tied matrix is counted once, as the readout."""
        n = sum(p.numel() for p in self.parameters())
        if not embedding and not self.config.tie_embeddings:
            n -= self.wte.weight.numel()
        return n

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        *,
        do_sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue the token ids idx (B, T) by `max_new_tokens` tokens: (B, T + max_new_tokens).

        nanoGPT's loop: the context is cropped to its last block_size tokens, the next token
        is drawn from softmax(logits / temperature) restricted to the `top_k` most likely ids
        (all of them when None), appended, and so on. temperature 0 or do_sample=False is
        greedy decoding (argmax, the first id on ties). `generator` makes the draws
        reproducible (it must live on idx's device).
        """
        check_positive_int("max_new_tokens", max_new_tokens, minimum=0)
        temperature = check_nonnegative("temperature", temperature)
        if top_k is not None:
            top_k = min(check_positive_int("top_k", top_k), self.config.vocab_size)
        greedy = not check_bool("do_sample", do_sample) or temperature == 0
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        block = self.config.block_size
        self._check_input(idx[:, -block:] if isinstance(idx, Tensor) and idx.ndim == 2 else idx)
        for _ in range(max_new_tokens):
            logits = self(idx[:, -block:])[:, -1, :].float()  # (B, vocab), the last position
            if greedy:
                nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, -math.inf)
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, nxt.to(idx.dtype)], dim=1)
        return idx
