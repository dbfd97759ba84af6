"""GPT training throughput: ours next to Hugging Face's GPT2LMHeadModel, and against the peak.

Both models get the identical configuration (layers, n_embd, heads, vocabulary, sequence
length, batch; biases on, dropout 0, exact GELU, untied readout, float32) and the identical
step: forward, mean cross-entropy of the next token, backward, fused AdamW update. They differ
only where the architectures do: ours has rotary positions and separate q/k/v projections,
GPT-2 a learned position table and one fused qkv projection. Hugging Face runs its default
attention, `scaled_dot_product_attention` ("sdpa"), like ours. A third row times our default
layout, without biases. Two sizes: n_embd 512 with batch 8 and n_embd 256 with batch 16 (4
layers, T 256 both). Further rows, at n_embd 512: our step compiled (`train.compile`) against
our eager step, and both models under bf16 autocast (`train.autocast: bf16`, fp32 master
weights), through `ntk.lm.runtime`, the training loop's own implementation.

Model FLOPs per token (the matmuls a training step needs, Kaplan et al. 2020 / PaLM's MFU):
6 N for the N = 12 L C^2 + C V weights of the q, k, v, o, MLP and readout matrices (2 forward,
4 backward), plus 6 L C (T + 1) for the causal attention scores and weighted sums (4 C per
visible key forward, (T + 1) / 2 keys on average). Model FLOPs utilization is that rate divided
by the best float32 rate of a large square matmul timed in the same run.

Timing alternates the models for a few rounds; in each round every model takes a few steps
and keeps its fastest (the least disturbed by other processes on a shared machine). A ratio is
the median over rounds of the two models' ratio in the same round, so a machine that gets
busier affects both alike; the seconds reported are each model's fastest step overall. Peak memory is measured in a fresh child process
per model: its peak resident set size during model construction and a few steps, minus its
resident size just before (parameters, gradients, AdamW state, activations, allocator slack;
Linux only, read from /proc/self/status).

    python bench/lm.py                 # both sizes, compile and bf16 rows: a few minutes
    python bench/lm.py --quick         # 2 layers, n_embd 256, seq 128; no compile row
    python bench/lm.py --device cuda   # the same on a GPU (written for it, not yet run on one)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import torch
import torch.nn.functional as F

from ntk._checks import check_positive_int
from ntk.errors import ArgumentParser, InvalidValue, run_cli

FULL = dict(n_layer=4, n_embd=512, n_head=8, vocab_size=256, seq_len=256, batch=8)
NARROW = dict(n_layer=4, n_embd=256, n_head=4, vocab_size=256, seq_len=256, batch=16)
QUICK = dict(n_layer=2, n_embd=256, n_head=4, vocab_size=256, seq_len=128, batch=8)
# E = 8 experts of hidden 2 C, top-2: the active MLP is 4 C wide, the dense MLP's size
MOE = dict(moe_experts=8, moe_top_k=2, moe_hidden=2)
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
                **(MOE if kind == "ours-moe" else {}),
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
    """One model with its fused AdamW and a fixed random batch; `step()` is one update.

    `compile` compiles our model's forward (`ntk.lm.runtime.compile_model`); `autocast` is
    `train.autocast`'s value ("none" or "bf16", `ntk.lm.runtime.autocast`).
    """

    def __init__(
        self,
        kind: str,
        cfg: dict,
        device: str = "cpu",
        compile: bool = False,
        autocast: str = "none",
    ) -> None:
        from ntk.lm.runtime import compile_model

        torch.manual_seed(0)
        self.device, self.autocast = torch.device(device), autocast
        self.model, self.forward = build(kind, cfg)
        self.model.to(self.device).train()
        compile_model(self.model, compile)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)
        shape = (cfg["batch"], cfg["seq_len"])
        self.x = torch.randint(0, cfg["vocab_size"], shape, device=self.device)
        self.y = torch.randint(0, cfg["vocab_size"], shape, device=self.device)

    def step(self) -> float:
        """Seconds for forward + loss (+ an MoE's load-balancing term) + backward + AdamW step."""
        from ntk.lm.moe import moe_aux_loss
        from ntk.lm.runtime import autocast

        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        with autocast(self.device, self.autocast):
            logits = self.forward(self.x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.y.reshape(-1))
            aux = moe_aux_loss(self.model)
            if aux is not None:
                loss = loss + aux
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start


def interleaved(trainers: dict[str, Trainer], rounds: int, steps: int) -> dict[str, list[float]]:
    """Per model, its fastest step of each round; the models take turns within a round."""
    for t in trainers.values():
        t.step()  # warm-up: allocator, kernels (and compilation)
        t.step()
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for _ in range(rounds):
        for kind, t in trainers.items():
            times[kind].append(min(t.step() for _ in range(steps)))
    return times


def median_ratio(ours: list[float], reference: list[float]) -> float:
    """Median over rounds of ours / reference within the same round."""
    return statistics.median(a / b for a, b in zip(ours, reference, strict=True))


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


def peak_flops(device: torch.device) -> float:
    """The best float32 matmul rate of this run's device (FLOP/s)."""
    if device.type != "cuda":
        from training import matmul_peak

        return matmul_peak()
    a = torch.randn(8192, 8192, device=device)
    torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ a
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * 8192**3 / best


def run_size(cfg: dict, device: str = "cpu", rounds: int = 5, steps: int = 2) -> list[dict]:
    """One row per model at one size: fastest seconds per step, tokens/s, MFU, peak memory,
    and the median per-round ratio of its step to Hugging Face's."""
    dev = torch.device(device)
    peak = peak_flops(dev)
    trainers = {kind: Trainer(kind, cfg, device) for kind in MODELS}
    times = interleaved(trainers, rounds, steps)
    peak = max(peak, peak_flops(dev))  # the best of before and after: the machine's own speed
    tokens = cfg["batch"] * cfg["seq_len"]
    flops = model_flops_per_token(cfg) * tokens
    rows = []
    for kind in trainers:
        seconds = min(times[kind])
        rows.append(
            dict(
                model=kind,
                **cfg,
                device=device,
                s_per_step=seconds,
                ratio_to_hf=median_ratio(times[kind], times["hf"]),
                tokens_per_s=tokens / seconds,
                flop_per_s=flops / seconds,
                peak_flop_per_s=peak,
                mfu=flops / seconds / peak,
                peak_gb=peak_memory_gb(kind, cfg) if dev.type == "cpu" else None,
            )
        )
    return rows


def run_variant(
    cfg: dict, variant: dict, reference: dict, device: str = "cpu", rounds: int = 5
) -> dict:
    """Ours (or HF) with Trainer options `variant` against `reference`, interleaved."""
    trainers = {
        "variant": Trainer(variant.pop("kind", "ours"), cfg, device, **variant),
        "reference": Trainer(reference.pop("kind", "ours"), cfg, device, **reference),
    }
    start = time.perf_counter()
    times = interleaved(trainers, rounds, 2)
    return dict(
        s_per_step=min(times["variant"]),
        reference_s=min(times["reference"]),
        ratio=median_ratio(times["variant"], times["reference"]),
        total_s=time.perf_counter() - start,
    )


def run_moe(cfg: dict, device: str = "cpu", rounds: int = 5) -> dict:
    """The MoE GPT's step (E = 8, top-2, dropless) against the dense one of equal active
    parameters (both without biases), interleaved."""
    return run_variant(cfg, dict(kind="ours-moe"), dict(kind="ours-nobias"), device, rounds)


def _parallel_worker(rank: int, world: int, tmp: str, cfg: dict, rounds: int) -> None:
    """Process `rank`: our GPT under DDP and under FSDP2, alternating, on half the batch."""
    import torch.distributed as dist

    from ntk.lm.distributed import shard, step_module

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rdzv", rank=rank, world_size=world)
    try:
        half = dict(cfg, batch=cfg["batch"] // world)
        trainers = {}
        for mode in ("fsdp", "ddp"):
            t = Trainer("ours", half)
            shard(t.model, mode, world)
            t.forward = step_module(t.model, mode, torch.device("cpu"), world)
            t.optimizer = torch.optim.AdamW(t.model.parameters(), lr=1e-4)  # after sharding
            trainers[mode] = t
        times = interleaved(trainers, rounds, 2)
        if rank == 0:
            Path(tmp, "times.json").write_text(json.dumps(times))
        dist.barrier()  # neither process tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def run_parallel(cfg: dict, rounds: int = 3) -> dict:
    """2 CPU processes (gloo, 1 thread each): FSDP2's step against DDP's, same global batch."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        mp.start_processes(_parallel_worker, args=(2, tmp, cfg, rounds), nprocs=2, join=True)
        times = json.loads(Path(tmp, "times.json").read_text())
    return dict(
        s_per_step=min(times["fsdp"]),
        reference_s=min(times["ddp"]),
        ratio=median_ratio(times["fsdp"], times["ddp"]),
        total_s=time.perf_counter() - start,
    )


def run(quick: bool = False, device: str = "cpu", rounds: int = 5) -> dict:
    """Every measurement: {"sizes": [rows per size], "compile": ..., "bf16": ...}."""
    sizes = [QUICK] if quick else [FULL, NARROW]
    out: dict = dict(sizes=[run_size(cfg, device, rounds) for cfg in sizes])
    cfg = sizes[0]
    if not quick:  # compiling takes a minute or more on a CPU
        out["compile"] = run_variant(cfg, dict(compile=True), dict(), device, rounds)
    out["bf16"] = run_variant(
        cfg, dict(autocast="bf16"), dict(kind="hf", autocast="bf16"), device, rounds
    )
    out["bf16_vs_f32"] = run_variant(cfg, dict(autocast="bf16"), dict(), device, rounds)
    out["moe"] = run_moe(cfg, device, rounds)
    if device == "cpu":
        out["fsdp"] = run_parallel(cfg, rounds=max(2, rounds // 2))
    return out


def _size_name(r: dict) -> str:
    return f"L={r['n_layer']} C={r['n_embd']} T={r['seq_len']} B={r['batch']}"


def run_table_rows(result: dict) -> list[dict]:
    """`run`'s result in bench/run.py's common form (ours/ref is the median per-round ratio)."""
    rows = []
    for size in result["sizes"]:
        ours, hf = (next(r for r in size if r["model"] == k) for k in ("ours", "hf"))
        nobias = next(r for r in size if r["model"] == "ours-nobias")
        rows.append(
            dict(
                name=f"GPT train step {_size_name(ours)} f32 vs HF GPT2LMHeadModel",
                ours_s=ours["s_per_step"],
                reference_s=hf["s_per_step"],
                ratio=ours["ratio_to_hf"],
                peak_gb=ours["peak_gb"],
                notes=f"{100 * ours['mfu']:.0f}% of the matmul peak "
                f"({ours['peak_flop_per_s'] / 1e9:.0f} GFLOP/s), HF {100 * hf['mfu']:.0f}%; "
                f"without biases {nobias['ratio_to_hf']:.3f}; HF peak "
                + ("-" if hf["peak_gb"] is None else f"{hf['peak_gb']:.2f} GB"),
            )
        )
    name = _size_name(result["sizes"][0][0])
    labels = {
        "compile": (f"GPT train step {name} torch.compile vs eager (ours)", "compile excluded"),
        "bf16": (f"GPT train step {name} bf16 autocast vs HF bf16 autocast", "fp32 masters"),
        "bf16_vs_f32": (f"GPT train step {name} bf16 autocast vs f32 (ours)", "fp32 masters"),
        "moe": (
            f"GPT train step {name} MoE (E=8, top-2, dropless) vs dense of equal active params",
            "experts of hidden 2C (dense MLP 4C), batched-matmul dispatch, aux loss included",
        ),
        "fsdp": (
            f"GPT train step {name} FSDP2 vs DDP, 2 CPU processes (gloo)",
            "1 thread per process; muP-free plain GPT",
        ),
    }
    for key, (label, note) in labels.items():
        if key in result:
            r = result[key]
            rows.append(
                dict(
                    name=label,
                    ours_s=r["s_per_step"],
                    reference_s=r["reference_s"],
                    ratio=r["ratio"],
                    notes=f"{note}; whole measurement {r['total_s']:.0f} s",
                )
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python bench/lm.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 layers, n_embd 256, seq 128")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cpu or cuda")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per ratio")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: all)")
    parser.add_argument("--moe-only", action="store_true", help="only the MoE vs dense row")
    parser.add_argument("--memory-of", choices=tuple(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_positive_int("--rounds", args.rounds)
    if args.threads is not None:
        check_positive_int("--threads", args.threads)
    if args.memory_of:
        _child_memory(args.memory_of, json.loads(args.config), args.steps)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InvalidValue("--device cuda, but torch sees no CUDA GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    where = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}, load {load}")
    if args.moe_only:
        r = run_moe(QUICK if args.quick else FULL, args.device, args.rounds)
        print(
            f"MoE step {r['s_per_step']:.3f} s, dense {r['reference_s']:.3f} s, ratio {r['ratio']:.3f}"
        )
        return
    result = run(quick=args.quick, device=args.device, rounds=args.rounds)
    for rows in result["sizes"]:
        r = rows[0]
        print(
            f"\nconfig: {r['n_layer']} layers, n_embd {r['n_embd']}, {r['n_head']} heads, vocab "
            f"{r['vocab_size']}, seq {r['seq_len']}, batch {r['batch']}, float32; matmul peak "
            f"{r['peak_flop_per_s'] / 1e9:.0f} GFLOP/s"
        )
        print(
            f"{'model':30s} {'s/step':>8s} {'/HF':>6s} {'tokens/s':>9s} {'GFLOP/s':>8s} "
            f"{'MFU':>6s} {'peak GB':>8s}"
        )
        for r in rows:
            gb = "-" if r["peak_gb"] is None else f"{r['peak_gb']:.3f}"
            print(
                f"{MODELS[r['model']]:30s} {r['s_per_step']:8.3f} {r['ratio_to_hf']:6.3f} "
                f"{r['tokens_per_s']:9.0f} {r['flop_per_s'] / 1e9:8.1f} {100 * r['mfu']:5.1f}% "
                f"{gb:>8s}"
            )
    print()
    for row in run_table_rows(result)[len(result["sizes"]) :]:
        print(
            f"{row['name']}: {row['ratio']:.3f} ({row['ours_s']:.3f} vs {row['reference_s']:.3f} s)"
        )


if __name__ == "__main__":
    run_cli(main, prog="python bench/lm.py")
