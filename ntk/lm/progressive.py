"""Progressive sequence length at a constant number of tokens per step.

Short sequences are cheap (attention costs T^2 per sequence) and early in training a model
mostly learns local statistics, so training may start on short windows and lengthen them
(Li, Zhang & He 2022, "The Stability-Efficiency Dilemma: Investigating Sequence Length Warmup
for Training GPT Models", arXiv:2108.06084; the "progressive training" of Press et al. 2021,
"Shortformer", arXiv:2012.15832, in two stages). A schedule is a list of phases

    "64:2M,128:8M,256:inf"   block size T_k until the run has seen U_k tokens,

with strictly increasing T_k and U_k and an open last phase. The number of tokens per
optimizer step S is held fixed, so the batch size of phase k is

    B_k = S / T_k        (S must be a multiple of every T_k),

and a step is the same amount of data (the same gradient noise scale in tokens, the same
learning-rate schedule in tokens) in every phase. The switch is hard: the first step that
starts with at least U_k tokens seen runs entirely at T_{k+1}. Phase k + 1 therefore starts at
step ceil(U_k / S).

Token counts accept the suffixes K (10^3), M (10^6) and G (10^9): "2M" = 2,000,000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ntk._checks import check_positive_int

SUFFIXES = {"K": 10**3, "M": 10**6, "G": 10**9}


def parse_tokens(name: str, value: int | str) -> int:
    """A token count: an int >= 1, or a string such as "2M", "1.5K", "4096" (exact integers)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name} must be a token count (int or e.g. '2M'), got {value!r}")
    if isinstance(value, int):
        return check_positive_int(name, value)
    text = value.strip().upper().replace("_", "")
    scale = SUFFIXES.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in SUFFIXES else text
    try:
        count = float(digits) * scale
    except ValueError:
        raise ValueError(
            f"{name} must be a token count such as 4096, '512K' or '2M', got {value!r}"
        ) from None
    if not math.isfinite(count) or count != int(count) or count < 1:
        raise ValueError(f"{name} must be a whole number of tokens >= 1, got {value!r}")
    return int(count)


@dataclass(frozen=True)
class Phase:
    """Block size `block_size` until `until` tokens have been seen (None: to the end)."""

    block_size: int
    until: int | None


def parse_schedule(text: str, name: str = "schedule") -> tuple[Phase, ...]:
    """Phases from "T1:U1,T2:U2,...,Tk:inf" (block sizes and token thresholds increasing)."""
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"{name} must be a string such as '64:2M,128:8M,256:inf', got {text!r}")
    phases = []
    for i, item in enumerate(text.split(",")):
        block, sep, until = item.strip().partition(":")
        if not sep:
            raise ValueError(f"{name}: phase {i} ({item.strip()!r}) must read 'block_size:tokens'")
        try:
            block_size = int(block)
        except ValueError:
            raise ValueError(
                f"{name}: phase {i} has block size {block!r}, not an integer"
            ) from None
        check_positive_int(f"{name}: phase {i} block size", block_size)
        last = until.strip().lower() == "inf"
        phases.append(
            Phase(block_size, None if last else parse_tokens(f"{name}: phase {i} tokens", until))
        )
    check_phases(phases, name)
    return tuple(phases)


def check_phases(phases: list[Phase] | tuple[Phase, ...], name: str = "schedule") -> None:
    """Block sizes and thresholds strictly increase; only the last phase is open ("inf")."""
    for i, phase in enumerate(phases):
        if phase.until is None and i != len(phases) - 1:
            raise ValueError(f"{name}: only the last phase may run to 'inf' (phase {i} does)")
        if i and phase.block_size <= phases[i - 1].block_size:
            raise ValueError(
                f"{name}: block sizes must increase, phase {i} has {phase.block_size} after "
                f"{phases[i - 1].block_size}"
            )
        if i and phase.until is not None and phase.until <= phases[i - 1].until:
            raise ValueError(
                f"{name}: token thresholds must increase, phase {i} ends at {phase.until} "
                f"tokens, phase {i - 1} at {phases[i - 1].until}"
            )
    if phases[-1].until is not None:
        raise ValueError(f"{name}: the last phase must run to 'inf', got {phases[-1].until}")


class ProgressiveSchedule:
    """Which block size and batch size each step uses, at `tokens_per_step` tokens per step.

    Example:
        >>> s = ProgressiveSchedule("64:2M,128:8M,256:inf", tokens_per_step=65536)
        >>> s.phase_at(step=30), s.phase_at(step=31)    # 30 * 65536 < 2M <= 31 * 65536
        (0, 1)
        >>> s.batch_size(0), s.batch_size(2)            # 65536 / 64, 65536 / 256
        (1024, 256)
    """

    def __init__(self, schedule: str | tuple[Phase, ...], tokens_per_step: int) -> None:
        self.phases = parse_schedule(schedule) if isinstance(schedule, str) else tuple(schedule)
        check_phases(self.phases)
        self.tokens_per_step = check_positive_int("tokens_per_step", tokens_per_step)
        for i, phase in enumerate(self.phases):
            if tokens_per_step % phase.block_size:
                raise ValueError(
                    f"tokens_per_step={tokens_per_step} must be a multiple of every block size "
                    f"(tokens per step are held constant: batch = tokens_per_step / block_size); "
                    f"phase {i} has block size {phase.block_size}"
                )

    @classmethod
    def constant(cls, block_size: int, tokens_per_step: int) -> ProgressiveSchedule:
        """One phase: every step at `block_size`."""
        return cls((Phase(check_positive_int("block_size", block_size), None),), tokens_per_step)

    @property
    def max_block_size(self) -> int:
        return self.phases[-1].block_size

    def phase_at(self, step: int) -> int:
        """The phase of the step that starts after `step` updates (step * S tokens seen)."""
        seen = check_positive_int("step", step, minimum=0) * self.tokens_per_step
        for i, phase in enumerate(self.phases):
            if phase.until is None or seen < phase.until:
                return i
        raise AssertionError("unreachable: the last phase is open")

    def first_step(self, phase: int) -> int:
        """The first step of `phase`: ceil(U_{phase-1} / S), 0 for the first phase."""
        if phase == 0:
            return 0
        return -(-self.phases[phase - 1].until // self.tokens_per_step)

    def block_size(self, phase: int) -> int:
        return self.phases[phase].block_size

    def batch_size(self, phase: int) -> int:
        """B_k = S / T_k: the batch of phase k, summed over all processes."""
        return self.tokens_per_step // self.phases[phase].block_size

    def __str__(self) -> str:
        parts = [f"{p.block_size}:{'inf' if p.until is None else p.until}" for p in self.phases]
        return ",".join(parts)
