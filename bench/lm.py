"""GPT training throughput: ours next to Hugging Face's GPT2LMHeadModel, and against the peak.

Both models get the identical configuration (layers, n_embd, heads, vocabulary, sequence
length, batch; biases on, dropout 0, exact GELU, untied readout, float32) and the identical
step: forward, mean cross-entropy of the next token, backward, fused AdamW update. They differ
only where the architectures do: ours has rotary positions and separate q/k/v projections,
GPT-2 a learned position table and one fused qkv projection. Hugging Face runs its default
attention, `scaled_dot_product_attention` ("sdpa"), like ours. A third row times our default
layout, without biases.

Model FLOPs per token (the matmuls a training step needs, Kaplan et al. 2020 / PaLM's MFU):
6 N for the N = 12 L C^2 + C V weights of the q, k, v, o, MLP and readout matrices (2 forward,
4 backward), plus 6 L C (T + 1) for the causal attention scores and weighted sums (4 C per
visible key forward, (T + 1) / 2 keys on average). Model FLOPs utilization is that rate divided
by the best float32 rate of a large square matmul timed in the same run.

Timing alternates the two models for a few rounds and keeps each one's fastest step (the
least disturbed by other processes on a shared machine), so a machine that gets busier
affects both alike. Peak memory is measured in a fresh child process
per model: its peak resident set size during model construction and a few steps, minus its
resident size just before (parameters, gradients, AdamW state, activations, allocator slack;
Linux only, read from /proc/self/status).

    python bench/lm.py            # n_embd 512, seq 256, 4 layers, batch 8: about a minute
    python bench/lm.py --quick    # n_embd 256, seq 128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import torch
import torch.nn.functional as F

FULL = dict(n_layer=4, n_embd=512, n_head=8, vocab_size=256, seq_len=256, batch=8)
QUICK = dict(n_layer=2, n_embd=256, n_head=4, vocab_size=256, seq_len=128, batch=8)
MODELS = {
    "ours": "ours (ntk.lm.GPT)",
    "ours-nobias": "ours without biases",
    "hf": "transformers GPT2LMHeadModel",
}


def build(kind: str, cfg: dict) -> tuple[torch.nn.Module, Callable]:
    """The model and a function batch -> logits (B, T, vocab)."""
    if kind.startswith("ours"):
        from ntk.lm.model import GPT, GPTConfig

        model = GPT(
            GPTConfig(
                vocab_size=cfg["vocab_size"],
                block_size=cfg["seq_len"],
                n_layer=cfg["n_layer"],
                n_embd=cfg["n_embd"],
                n_head=cfg["n_head"],
                bias=kind == "ours",  # GPT-2's layout has biases; our default has none
            )
        )
        return model, model
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=cfg["vocab_size"],
        n_positions=cfg["seq_len"],
        n_layer=cfg["n_layer"],
        n_embd=cfg["n_embd"],
        n_head=cfg["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu",
        tie_word_embeddings=False,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="sdpa",
    )
    model = GPT2LMHeadModel(config)
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"GPT-2 got attention {model.config._attn_implementation!r}, not sdpa")
    return model, lambda x: model(input_ids=x).logits


def model_flops_per_token(cfg: dict) -> float:
    """6 N + 6 L C (T + 1): weight matmuls and causal attention, forward and backward."""
    L, C, T, V = cfg["n_layer"], cfg["n_embd"], cfg["seq_len"], cfg["vocab_size"]
    return 6 * (12 * L * C * C + C * V) + 6 * L * C * (T + 1)


class Trainer:
    """One model with its fused AdamW and a fixed random batch; `step()` is one update."""

    def __init__(self, kind: str, cfg: dict) -> None:
        torch.manual_seed(0)
        self.model, self.forward = build(kind, cfg)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)
        shape = (cfg["batch"], cfg["seq_len"])
        self.x = torch.randint(0, cfg["vocab_size"], shape)
        self.y = torch.randint(0, cfg["vocab_size"], shape)

    def step(self) -> float:
        """Seconds for forward + loss + backward + AdamW step."""
        start = time.perf_counter()
        logits = self.forward(self.x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def peak_memory_gb(kind: str, cfg: dict, steps: int = 3) -> float:
    """Peak RSS growth (GB) of building `kind` and training it `steps` steps, in a child."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--memory-of",
            kind,
            "--config",
            json.dumps(cfg),
            "--steps",
            str(steps),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: its peak), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _child_memory(kind: str, cfg: dict, steps: int) -> None:
    import transformers  # noqa: F401 - both children pay the same imports before the baseline

    import ntk.lm.model  # noqa: F401

    # Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current RSS, so imports'
    # transient peaks do not hide the training's
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    trainer = Trainer(kind, cfg)
    for _ in range(steps):
        trainer.step()
    print((_status_kib("VmHWM") - before) * 1024 / 1e9)


def run(quick: bool = False, rounds: int = 4, steps: int = 2) -> list[dict]:
    """One row per model: fastest seconds per step, tokens/s, MFU, peak memory."""
    from training import matmul_peak

    cfg = QUICK if quick else FULL
    peak = matmul_peak()
    trainers = {kind: Trainer(kind, cfg) for kind in MODELS}
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for t in trainers.values():
        t.step()  # warm-up: allocator, kernels
    for _ in range(rounds):
        for kind, t in trainers.items():
            times[kind] += [t.step() for _ in range(steps)]
    peak = max(peak, matmul_peak())  # the best of before and after: the machine's own speed
    tokens = cfg["batch"] * cfg["seq_len"]
    flops = model_flops_per_token(cfg) * tokens
    rows = []
    for kind in trainers:
        seconds = min(times[kind])
        rows.append(
            dict(
                model=kind,
                **cfg,
                s_per_step=seconds,
                tokens_per_s=tokens / seconds,
                flop_per_s=flops / seconds,
                peak_flop_per_s=peak,
                mfu=flops / seconds / peak,
                peak_gb=peak_memory_gb(kind, cfg),
            )
        )
    return rows


def run_table_rows(rows: list[dict]) -> list[dict]:
    """`run`'s result in bench/run.py's common form: ours vs Hugging Face, seconds per step."""
    ours, hf = (next(r for r in rows if r["model"] == k) for k in ("ours", "hf"))
    return [
        dict(
            name=f"GPT train step L={ours['n_layer']} C={ours['n_embd']} T={ours['seq_len']} "
            f"B={ours['batch']} f32 vs HF GPT2LMHeadModel",
            ours_s=ours["s_per_step"],
            reference_s=hf["s_per_step"],
            peak_gb=ours["peak_gb"],
            notes=f"{100 * ours['mfu']:.0f}% of the matmul peak "
            f"({ours['peak_flop_per_s'] / 1e9:.0f} GFLOP/s), HF {100 * hf['mfu']:.0f}%; "
            f"HF peak {hf['peak_gb']:.2f} GB",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n_embd 256, seq 128")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: all)")
    parser.add_argument("--memory-of", choices=tuple(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        _child_memory(args.memory_of, json.loads(args.config), args.steps)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load}")
    rows = run(quick=args.quick)
    r = rows[0]
    print(
        f"config: {r['n_layer']} layers, n_embd {r['n_embd']}, {r['n_head']} heads, vocab "
        f"{r['vocab_size']}, seq {r['seq_len']}, batch {r['batch']}, float32; matmul peak "
        f"{r['peak_flop_per_s'] / 1e9:.0f} GFLOP/s"
    )
    print(
        f"{'model':30s} {'s/step':>8s} {'tokens/s':>9s} {'GFLOP/s':>8s} {'MFU':>6s} {'peak GB':>8s}"
    )
    for r in rows:
        print(
            f"{MODELS[r['model']]:30s} {r['s_per_step']:8.3f} {r['tokens_per_s']:9.0f} "
            f"{r['flop_per_s'] / 1e9:8.1f} {100 * r['mfu']:5.1f}% {r['peak_gb']:8.3f}"
        )
    ours, nobias, hf = rows
    print(
        f"throughput ours / Hugging Face: {ours['tokens_per_s'] / hf['tokens_per_s']:.2f}x with "
        f"biases, {nobias['tokens_per_s'] / hf['tokens_per_s']:.2f}x without (target >= 1.0); "
        f"ours at {100 * ours['mfu']:.0f}% of the matmul peak (target >= 50%)"
    )


if __name__ == "__main__":
    main()
