"""Muon's cost: its optimizer step and the whole training step, against AdamW's, on the GPT.

The model is the bench's GPT at n_embd 512 (4 layers, 8 heads, vocabulary 256, T 256, batch
8: `lm.FULL`), built by the one recipe (`ntk.lm.parametrize.gpt_recipe`, muP at base width
128). "muon" trains it as `optim.name: muon` does (`ntk.scaling.muon.build_optimizer`:
torch.optim.Muon with 5 Newton-Schulz steps in bfloat16 on the 24 hidden matrices, AdamW on
the rest), "adamw" as the trainer's default (torch.optim.AdamW on every group, its default
foreach implementation). Two timings per optimizer:

- optimizer step: `optimizer.step()` alone, on gradients left by one backward pass;
- training step: forward, cross-entropy, backward and `optimizer.step()`.

Timing alternates the two optimizers for a few rounds, each keeping its fastest of a few
steps per round (the least disturbed on a shared machine); a ratio is the median over rounds
of the two in-round times, the seconds are the fastest overall. The target of issue #27 is
Muon's training step <= 1.3x AdamW's.

    python bench/muon.py            # n_embd 512
    python bench/muon.py --quick    # n_embd 256, 2 layers (a smoke run)
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
import torch.nn.functional as F

from ntk.errors import ArgumentParser, run_cli

QUICK = dict(n_layer=2, n_embd=256, n_head=4, vocab_size=256, seq_len=128, batch=8)


class Case:
    """A GPT, its optimizer (Muon + AdamW or AdamW) and a fixed random batch."""

    def __init__(self, optimizer: str, cfg: dict) -> None:
        from ntk.lm.model import GPTConfig
        from ntk.lm.parametrize import gpt_recipe
        from ntk.scaling.muon import build_optimizer

        config = GPTConfig(
            vocab_size=cfg["vocab_size"],
            block_size=cfg["seq_len"],
            n_layer=cfg["n_layer"],
            n_embd=cfg["n_embd"],
            n_head=cfg["n_head"],
        )
        options = dict(optimizer="muon", muon_lr=0.02) if optimizer == "muon" else {}
        self.model, _, groups = gpt_recipe(
            config, "mup", base_width=cfg["n_embd"] // 4, lr=3e-3, seed=0, **options
        )
        self.optimizer = build_optimizer(groups)
        gen = torch.Generator().manual_seed(0)
        shape = (cfg["batch"], cfg["seq_len"])
        self.x = torch.randint(0, cfg["vocab_size"], shape, generator=gen)
        self.y = torch.randint(0, cfg["vocab_size"], shape, generator=gen)

    def backward(self) -> None:
        logits = self.model(self.x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def optimizer_step(self) -> float:
        start = time.perf_counter()
        self.optimizer.step()
        return time.perf_counter() - start

    def train_step(self) -> float:
        start = time.perf_counter()
        self.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def run(quick: bool = False, rounds: int = 5, steps: int = 3) -> dict:
    """Fastest seconds and median in-round ratios (muon / adamw) of both timings."""
    import lm

    cfg = QUICK if quick else lm.FULL
    torch.manual_seed(0)
    cases = {k: Case(k, cfg) for k in ("muon", "adamw")}
    for case in cases.values():  # warm-up, and gradients for the optimizer-step timing
        case.train_step()
        case.train_step()
        case.backward()
    times = {(k, w): [] for k in cases for w in ("opt", "train")}
    for _ in range(rounds):
        for k, case in cases.items():
            times[k, "opt"].append(min(case.optimizer_step() for _ in range(steps)))
            times[k, "train"].append(min(case.train_step() for _ in range(steps)))

    def ratio(w: str, ref: str = "adamw") -> float:
        pairs = zip(times["muon", w], times[ref, w], strict=True)
        return statistics.median(a / b for a, b in pairs)

    best = {f"{k}_{w}_s": min(v) for (k, w), v in times.items()}
    return dict(
        cfg,
        **best,
        opt_ratio=ratio("opt"),
        train_ratio=ratio("train"),
        muon_opt_over_adamw_train=statistics.median(
            a / b for a, b in zip(times["muon", "opt"], times["adamw", "train"], strict=True)
        ),
        threads=torch.get_num_threads(),
        load=os.getloadavg(),
    )


def rows(r: dict) -> list[dict]:
    """`bench/run.py`'s table rows."""
    size = f"GPT n_embd={r['n_embd']} L={r['n_layer']} T={r['seq_len']} batch={r['batch']}"
    return [
        dict(
            name=f"Muon+AdamW optimizer step vs AdamW's, {size}",
            ours_s=r["muon_opt_s"],
            reference_s=r["adamw_opt_s"],
            ratio=r["opt_ratio"],
            notes="torch.optim.Muon (5 bf16 Newton-Schulz steps) on the hidden matrices",
        ),
        dict(
            name=f"training step with Muon vs with AdamW, {size}",
            ours_s=r["muon_train_s"],
            reference_s=r["adamw_train_s"],
            ratio=r["train_ratio"],
            notes=f"target <= 1.3; Muon's optimizer step alone is "
            f"{r['muon_opt_over_adamw_train']:.3f}x AdamW's training step",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python bench/muon.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n_embd 256, 2 layers, T 128")
    args = parser.parse_args(argv)
    r = run(quick=args.quick)
    print(f"torch {torch.__version__}, {r['threads']} threads, load average {r['load']}")
    for row in rows(r):
        print(
            f"{row['name']:<72} muon {row['ours_s']:.4f} s  adamw {row['reference_s']:.4f} s  "
            f"ratio {row['ratio']:.3f}  {row['notes']}"
        )


if __name__ == "__main__":
    run_cli(main, prog="python bench/muon.py")
