"""Overhead of dynamic per-layer learning rates: `DynamicLR.step()` against a plain training step.

`DynamicLR.step()` (`ntk.scaling.dynamic_lr`) measures every k optimizer steps: a forward pass of
a small probe batch with pre-hooks capturing each layer's input, three probe-by-matrix
products per layer, and one solve of the learning-rate program (`ntk.scaling.lp`, HiGHS);
in between it only scales and restores the learning rates in two optimizer hooks. Two models:

    mlp   muP MLP 64 -> 1024 -> 1024 -> 1024 -> 10 (depth 3), batch 256, Adam, probe 64 rows
    gpt   muP GPT (ntk.lm) n_embd 256, 2 layers, 4 heads, vocab 256, sequence 128, batch 8,
          AdamW, probe 2 sequences; 13 parametrized matrices

The reported overhead is amortized: (time in the two hooks per step + one measurement / k) /
one training step, each part timed on its own as a median (the hooks as the difference of
empty optimizer steps with and without them), so other processes hardly move it. As a
cross-check, blocks of k steps with and without `DynamicLR.step()` alternate for several rounds
and the fastest of each are compared ("end to end"); on a 2-core machine its noise is
several %, larger than the effect at k = 50.

One measurement costs a quarter to a half of a training step here (the probe is a quarter of
the batch, and it takes a forward pass, three products per layer and a ~8 ms solve), and the
hooks about 10 us, so the overhead is about 0.3-0.8 / k. Measured idle on 2026-11-29 (2
threads): 4.1% (MLP) and 2.6% (GPT) at k = 20, 1.3% and 0.9% at k = 50. Hence the default k
= 20 and 50; a smaller probe or a larger k lowers it further.

    python bench/dynamic_lr.py                           # k = 20 and 50, five rounds
    python bench/dynamic_lr.py --every 50 --clock cpu --threads 1
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import torch
import torch.nn.functional as F

from ntk._checks import check_positive_int
from ntk.errors import ArgumentParser, run_cli
from ntk.lm.model import GPTConfig
from ntk.lm.parametrize import gpt_recipe
from ntk.models import WideMLP
from ntk.scaling.dynamic_lr import DynamicLR
from ntk.scaling.parametrization import Parametrization, ParametrizationConfig

TARGET = 0.05  # at most 5% of a training step


def mlp_case() -> tuple[Parametrization, torch.optim.Optimizer, Callable[[], None], object]:
    torch.manual_seed(0)
    model = WideMLP(64, 1024, 10, depth=3)
    param = Parametrization(model, ParametrizationConfig("mup", lr=1e-3, base_width=64))
    opt = torch.optim.Adam(param.param_groups)
    x, y = torch.randn(256, 64), torch.randn(256, 10)

    def step() -> None:
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return param, opt, step, x[:64]


def gpt_case() -> tuple[Parametrization, torch.optim.Optimizer, Callable[[], None], object]:
    cfg = GPTConfig(vocab_size=256, block_size=128, n_layer=2, n_embd=256, n_head=4)
    model, param, groups = gpt_recipe(cfg, "mup", base_width=64, lr=1e-3, seed=0)
    opt = torch.optim.AdamW(groups)
    tokens = torch.randint(0, 256, (8, 129))
    x, y = tokens[:, :-1], tokens[:, 1:]

    def step() -> None:
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return param, opt, step, x[:2]


def _median_time(fn: Callable[[], object], repeats: int, clock: Callable[[], float]) -> float:
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def _hook_cost(opt: torch.optim.Optimizer, clock: Callable[[], float], calls: int = 2000) -> float:
    """Seconds per empty optimizer step: with every gradient cleared it updates nothing but
    still runs any step hooks, so the time with DynamicLR's hooks minus the time before they
    were attached is what the hooks add to each step."""
    opt.zero_grad(set_to_none=True)
    start = clock()
    for _ in range(calls):
        opt.step()
    return (clock() - start) / calls


def measure_case(
    name: str, build: Callable, every: int, rounds: int, clock: Callable[[], float]
) -> dict:
    """The overhead of DynamicLR.step() every `every` steps, two ways.

    Amortized (the reported number): (hooks per step + one measurement / every) / step, each
    part timed on its own as a median, so other processes hardly move it. End to end (the
    cross-check): the fastest block of `every` steps with DynamicLR.step() against the fastest
    without, alternating for `rounds` rounds; on a shared machine its noise is several %.
    """
    param, opt, step, probe = build()
    for _ in range(2):  # warm-up: allocator, caches
        step()
    empty_step = _hook_cost(opt, clock)
    dynamic = DynamicLR(param, opt, probe, every=every)
    hooks = max(_hook_cost(opt, clock) - empty_step, 0.0)
    dynamic.steps = 0  # the empty steps above were counted as optimizer steps
    for _ in range(2):  # first measurement and the scipy import out of the timings
        step()
        dynamic.step()
    best = {"plain": float("inf"), "dynamic": float("inf")}
    for _ in range(rounds):
        for variant in ("plain", "dynamic"):
            start = clock()
            for _ in range(every):
                if variant == "dynamic":
                    dynamic.step()  # measures once per block: `every` steps since the last
                step()
            best[variant] = min(best[variant], (clock() - start) / every)
    step_s = _median_time(step, max(every, 10), clock)
    measurement = _median_time(lambda: dynamic.solve(dynamic.measure()), 5, clock)
    overhead = (hooks + measurement / every) / step_s
    return dict(
        model=name,
        every=every,
        step_s=step_s,
        hooks_s=hooks,
        measurement_s=measurement,
        overhead=overhead,
        end_to_end=best["dynamic"] / best["plain"] - 1,
        ok=overhead <= TARGET,
    )


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python bench/dynamic_lr.py", description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    check_positive_int("--rounds", args.rounds)
    for every in args.every:
        check_positive_int("--every", every)
    if args.threads is not None:
        check_positive_int("--threads", args.threads)
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock")
    print(
        f"{'model':5} {'k':>4} {'step':>9} {'hooks':>8} {'1 measurement':>14} "
        f"{'overhead':>9} {'end to end':>11}  target <= {TARGET:.0%}"
    )
    for every in args.every:
        for name, build in (("mlp", mlp_case), ("gpt", gpt_case)):
            r = measure_case(name, build, every, args.rounds, clock)
            print(
                f"{r['model']:5} {r['every']:4d} {r['step_s'] * 1e3:7.1f}ms "
                f"{r['hooks_s'] * 1e6:6.0f}us {r['measurement_s'] * 1e3:12.1f}ms "
                f"{r['overhead']:+9.1%} {r['end_to_end']:+11.1%}  {'ok' if r['ok'] else 'OVER'}"
            )


if __name__ == "__main__":
    run_cli(main, prog="python bench/dynamic_lr.py")
