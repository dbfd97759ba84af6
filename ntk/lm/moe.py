"""A mixture-of-experts MLP: top-k routing over E expert MLPs stored as 3-D weights.

Shazeer et al. 2017 ("Outrageously Large Neural Networks", arXiv:1701.06538), in the form of
Switch / GShard / Mixtral. For tokens x (N, C) and E experts of hidden size H:

    p = softmax(router(x))                      (N, E)   router: nn.Linear(C, E)
    (g, e) = top-k of p                          (N, k)   gates g, expert ids e
    y_i = sum_{j < k} g_ij down_e(gelu(up_e(x_i))),  e = e_ij
    aux = E sum_e f_e P_e                        Switch's load-balancing loss (Fedus et al.
                                                 2021, arXiv:2101.03961, eq. 4), f_e the share
                                                 of the N k assignments that go to expert e,
                                                 P_e = mean_i p_ie

The gates are the router probabilities themselves (not renormalized over the k chosen, as in
Switch and DeepSeek): with k = 1 a renormalized gate would be 1 and the router would get no
gradient from the language-model loss. `aux` times `GPTConfig.moe_aux_coef` is stored on the
layer at every forward (`aux_loss`); `moe_aux_loss(model)` sums it over the model and
`ntk.lm.step.train_step` adds it to the loss. Its minimum 1 is reached by uniform routing.

Dispatch is batched matmuls, never a loop over tokens: the N k (token, expert) assignments
are sorted by expert, each gets its rank within its expert, and the tokens are scattered into
an (E, capacity, C) buffer (empty slots zero) that `ExpertLinear` multiplies with one
`torch.bmm` per matrix; the outputs are gathered back to (token, choice) order, weighted by their gates
and summed over the k choices. Two capacities (`GPTConfig.moe_capacity`):

- None, dropless (default): capacity = the busiest expert's load, so no assignment is ever
  dropped; reading that load costs one device-to-host sync per layer.
- a factor c: capacity = ceil(c N k / E) (GShard, Lepikhin et al. 2020, arXiv:2006.16668);
  assignments past it are dropped (their expert term is 0, the residual stream carries the
  token), static shapes, no sync.

muP (`ntk.lm.parametrize`): each expert is an MLP of its own and follows the MLP's rules
(`ExpertLinear`'s 3-D weight has the geometry `ntk.scaling.expert_geometry`: per expert
fan-in C or H); the router maps the width C to E logits, a finite number that does not grow,
so it is a readout (the answer of the `mup` package's issue #48 as well): init and updates
such that W_r x stays O(1) when W_r aligns with x, i.e. effective init std and Adam lr ~ 1/C.
It is not zero-initialized, unlike the LM head: with all logits equal, top-k would send every
token to the same k experts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntk.scaling.geometry import expert_geometry, register_geometry

# The MoE MLP's layers by abc role (they replace the block's MLP rows of `ntk.lm.model.LAYERS`)
LAYERS: dict[str, str] = {
    "blocks.*.mlp.router": "readout",  # muP: width -> E logits, a finite output
    "blocks.*.mlp.expert_up": "hidden",  # muP: each expert hidden, fan-in n_embd
    "blocks.*.mlp.expert_down": "hidden",  # fan-in moe_hidden n_embd
}


class ExpertLinear(nn.Module):
    """E independent linear maps in one (E, in, out) weight: (E, N, in) -> (E, N, out).

    y_e = x_e W_e for every expert e at once (`torch.bmm`), no bias. The default init is the
    standard one per expert, N(0, 1/in), as E separate nn.Linear(in, out) would be
    initialized by `GPT.reset_parameters`.
    """

    def __init__(self, experts: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(experts, in_features, out_features))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.in_features**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        return torch.bmm(x, self.weight)  # (E, N, in) @ (E, in, out) -> (E, N, out)


# muP: each expert is read as its own (out, in) matrix (fan-in `in`), like a per-expert Linear
register_geometry(ExpertLinear, lambda m: [expert_geometry("weight", *m.weight.shape)])


class MoE(nn.Module):
    """Top-k routed mixture of E expert MLPs C -> H -> C (module docstring): (B, T, C) -> same.

    Arguments as `GPTConfig`'s (which checks them): n_embd C, experts E, top_k k, hidden H,
    capacity (None: dropless, or the capacity factor), aux_coef.
    """

    def __init__(
        self,
        n_embd: int,
        experts: int,
        top_k: int,
        hidden: int,
        capacity: float | None = None,
        aux_coef: float = 0.01,
    ) -> None:
        super().__init__()
        C, E, H = n_embd, experts, hidden
        self.experts, self.top_k = E, top_k
        self.capacity_factor, self.aux_coef = capacity, aux_coef
        # muP: a readout (width C -> E logits, E fixed); not zero-initialized
        self.router = nn.Linear(C, E, bias=False)
        self.expert_up = ExpertLinear(E, C, H)  # muP: hidden per expert, fan-in C
        self.expert_down = ExpertLinear(E, H, C)  # muP: hidden per expert, fan-in H (ratio C)
        # the (N, k, C) expert outputs per token and choice, a module so hooks (the coordinate
        # check) can record them: a fixed token order, unlike the (E, capacity, .) buffers
        self.expert_out = nn.Identity()
        self.aux_loss: Tensor | None = None  # set by forward: moe_aux_coef * Switch's aux
        self.load: Tensor | None = None  # (E,) assignments per expert in the last forward
        self.probs: Tensor | None = None  # (N, E) router probabilities of the last forward

    def capacity(self, tokens: int, counts: Tensor) -> int:
        """Slots per expert: the busiest expert's load (dropless) or ceil(c N k / E)."""
        if self.capacity_factor is None:
            return int(counts.max())
        return math.ceil(self.capacity_factor * tokens * self.top_k / self.experts)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        E, k = self.experts, self.top_k
        x = x.reshape(B * T, C)  # (N, C)
        N = x.shape[0]
        logits = self.router(x)  # (N, E)
        probs = F.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        gates, chosen = probs.topk(k, dim=-1)  # (N, k) each
        flat = chosen.reshape(-1)  # (N k,) expert of each assignment, token-major
        order = torch.argsort(flat, stable=True)  # assignments grouped by expert
        counts = torch.bincount(flat, minlength=E)  # (E,)
        starts = torch.cumsum(counts, 0) - counts
        expert = flat[order]
        slot = torch.arange(N * k, device=x.device) - starts[expert]  # rank within its expert
        assignment, token = order, order // k  # assignment = token * k + choice
        capacity = self.capacity(N, counts)
        if self.capacity_factor is not None:  # drop assignments past the capacity
            keep = slot < capacity
            expert, slot, token, assignment = expert[keep], slot[keep], token[keep], order[keep]
        buffer = x.new_zeros(E, capacity, C)
        buffer[expert, slot] = x[token]  # (E, capacity, C), empty slots 0
        y = self.expert_down(F.gelu(self.expert_up(buffer)))  # (E, capacity, C): batched matmuls
        # back to (token, choice) order; a dropped assignment's output is 0
        picked = x.new_zeros(N * k, C).index_copy_(0, assignment, y[expert, slot])
        picked = self.expert_out(picked.view(N, k, C))  # (N, k, C)
        out = (picked * gates.to(x.dtype)[..., None]).sum(1)  # (N, C)
        share = counts.to(probs.dtype) / (N * k)  # f_e
        self.aux_loss = self.aux_coef * E * (share * probs.mean(0)).sum()
        self.load, self.probs = counts.detach(), probs.detach()
        return out.view(B, T, C)


def moe_aux_loss(model: nn.Module) -> Tensor | None:
    """The sum of every `MoE` layer's load-balancing term from the last forward (None if the
    model has no MoE layer): add it to the loss before backward."""
    terms = [m.aux_loss for m in model.modules() if isinstance(m, MoE) and m.aux_loss is not None]
    return torch.stack(terms).sum() if terms else None


def routing_entropy(model: nn.Module) -> dict[str, float]:
    """Routing statistics of the last forward, averaged over the MoE layers, in units of
    log E (1 = uniform): "load": entropy of the share of assignments per expert, "token":
    mean entropy of a token's router distribution p."""
    layers = [m for m in model.modules() if isinstance(m, MoE) and m.load is not None]
    if not layers:
        raise ValueError("the model has no MoE layer that has run a forward")
    load, token = [], []
    for m in layers:
        share = m.load.double() / m.load.sum()
        load.append(float(-(share * share.clamp_min(1e-300).log()).sum()) / math.log(m.experts))
        p = m.probs.double()
        ent = -(p * p.clamp_min(1e-300).log()).sum(-1).mean()
        token.append(float(ent) / math.log(m.experts))
    return {"load": sum(load) / len(load), "token": sum(token) / len(token)}
