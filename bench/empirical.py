"""Benchmark: empirical NTK of wide ReLU MLPs, ours vs neural-tangents, in one run.

    python bench/empirical.py            # the sizes of the README's benchmark table (minutes)
    python bench/empirical.py --quick    # small sizes, for a smoke test

Rows (ratio = reference_s / ours_s, so > 1 means we are faster):
  1. depth-3 ReLU MLP, width 2048, d = 64, one output, N = 256, float32: our "auto" path
     (structured) vs neural-tangents' `empirical_ntk_fn` with NTK-vector products, jitted,
     steady-state time (compile excluded), on the same weights. Jacobian contraction needs
     N x P x 4 bytes (8.7 GB here) and ~30 s; pass --nt-jacobian to time it too.
  2. the general path: our "jacobian" vs neural-tangents' Jacobian contraction, small width.
  3. method="auto" on a CNN (width 256, N = 32, 8x8 images, 10 outputs; no structured path)
     against the faster of "jacobian" and "ntvp" (`--auto` runs this row alone).
  4. width 10,000, N = 512: ours in a child process, so its peak RSS (VmHWM) is that of one
     process that imports torch, builds the model (0.8 GB of weights) and computes the kernel. No reference fits:
     a Jacobian alone needs N x P x 4 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import torch
from torch import nn

from ntk.kernels.empirical import empirical_ntk


def relu_mlp(d: int, width: int, depth: int, seed: int = 0) -> nn.Sequential:
    """Dense -> ReLU, `depth` times, then a Dense readout to one output (standard init)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def best_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def nt_ntk_fn(model: nn.Sequential, implementation: int):
    """neural-tangents' jitted empirical NTK of the stax twin of `model`, and its params."""
    import jax
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    layers, params = [], []
    for m in model:
        if isinstance(m, nn.Linear):
            layers.append(stax.Dense(m.out_features, parameterization="standard"))
            w = jnp.asarray(m.weight.detach().numpy().T)  # stax stores W as (in, out)
            params.append((w, jnp.asarray(m.bias.detach().numpy()[None, :])))
        else:
            layers.append(stax.Relu())
            params.append(())
    _, apply_fn, _ = stax.serial(*layers)
    fn = nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=implementation)
    jitted = jax.jit(lambda x, p: fn(x, None, p))
    return (lambda x: jitted(x, params).block_until_ready()), apply_fn, params


def time_nt(model: nn.Sequential, x: torch.Tensor, implementation: int, repeats: int):
    """(compile + first call s, steady-state s, kernel) of neural-tangents."""
    import jax.numpy as jnp

    ntk_fn, _, _ = nt_ntk_fn(model, implementation)
    xj = jnp.asarray(x.numpy())
    t = time.perf_counter()
    ntk_fn(xj)
    first = time.perf_counter() - t
    steady, k = best_time(lambda: ntk_fn(xj), repeats)
    return first, steady, np.asarray(k)


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def row_vs_nt(width: int, n: int, d: int, repeats: int, nt_jacobian: bool) -> dict:
    from neural_tangents import NtkImplementation

    model = relu_mlp(d, width, 3)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(1))
    ours_s, k = best_time(lambda: empirical_ntk(model, x), repeats)
    impls = {"ntvp": NtkImplementation.NTK_VECTOR_PRODUCTS}
    if nt_jacobian:
        impls["jacobian"] = NtkImplementation.JACOBIAN_CONTRACTION
    ref, notes = {}, []
    for name, impl in impls.items():
        first, steady, k_nt = time_nt(model, x, impl, 1)
        ref[name] = steady
        notes.append(f"NT {name} {steady:.2f}s (first call, with compile, {first:.1f}s)")
        notes.append(f"max rel diff vs NT {name} {rel_diff(k.numpy(), k_nt):.1e}")
    best = min(ref, key=ref.get)
    return {
        "name": f"d3 ReLU MLP w{width} N{n} f32: auto(structured) vs NT {best}",
        "ours_s": ours_s,
        "reference_s": ref[best],
        "ratio": ref[best] / ours_s,
        "peak_gb": None,
        "notes": f"P={n_params(model):,}; " + "; ".join(notes),
    }


def row_general(width: int, n: int, d: int, repeats: int) -> dict:
    from neural_tangents import NtkImplementation

    model = relu_mlp(d, width, 3)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(2))
    ours_s, k = best_time(lambda: empirical_ntk(model, x, method="jacobian"), repeats)
    first, steady, k_nt = time_nt(model, x, NtkImplementation.JACOBIAN_CONTRACTION, repeats)
    return {
        "name": f"d3 ReLU MLP w{width} N{n} f32: jacobian vs NT jacobian",
        "ours_s": ours_s,
        "reference_s": steady,
        "ratio": steady / ours_s,
        "peak_gb": None,
        "notes": f"P={n_params(model):,}; NT first call (with compile) {first:.1f}s; "
        f"max rel diff {rel_diff(k.numpy(), k_nt):.1e}",
    }


class CNN(nn.Module):
    """Two 3x3 convolutions of `width` channels, ReLU, global average pool, Linear to 10."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, width, 3, padding=1)
        self.c2 = nn.Conv2d(width, width, 3, padding=1)
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).mean((2, 3)))


def row_auto_cnn(width: int, n: int, side: int) -> dict:
    """method="auto" on a CNN (no structured path) against the fastest explicit method on the
    same weights: the reference is min(jacobian, ntvp)."""
    import warnings

    torch.manual_seed(0)
    model = CNN(width)
    x = torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(1))
    for method in ("jacobian", "ntvp"):  # warm-up on 2 examples: allocator, first-call costs
        empirical_ntk(model, x[:2], method=method)
    times, kernels, said = {}, {}, ""
    # auto and jacobian alternate, best of 2 each (the first big run pays for fresh memory);
    # ntvp, several times slower here, once
    # timed in CPU seconds of this process (both torch threads): on a shared machine wall time
    # varies several-fold between identical runs, CPU time much less
    cpu = {}
    for method in ("auto", "jacobian", "auto", "jacobian", "ntvp"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.process_time()
            seconds, kernels[method] = best_time(
                lambda m=method: empirical_ntk(model, x, method=m), 1
            )
            used = time.process_time() - start
        times[method] = min(seconds, times.get(method, float("inf")))
        cpu[method] = min(used, cpu.get(method, float("inf")))
        if method == "auto":
            said = next((str(w.message) for w in caught if "chose" in str(w.message)), said)
    fastest = min(("jacobian", "ntvp"), key=cpu.get)
    chosen = said.split("chose ")[1].split(":")[0] if said else "?"
    return {
        "name": f"CNN w{width} N{n} {side}x{side} f32: auto vs fastest explicit (CPU s)",
        "ours_s": cpu["auto"],
        "reference_s": cpu[fastest],
        "ratio": cpu[fastest] / cpu["auto"],
        "peak_gb": None,
        "notes": f"P={n_params(model):,}; auto chose {chosen}; CPU s jacobian "
        f"{cpu['jacobian']:.1f}, ntvp {cpu['ntvp']:.1f}; wall s auto {times['auto']:.1f}, "
        f"jacobian {times['jacobian']:.1f}, ntvp {times['ntvp']:.1f}; max rel diff "
        f"{rel_diff(kernels['auto'].numpy(), kernels[fastest].numpy()):.1e}",
    }


def peak_rss_gb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    exec, so a child forked from a big parent would report the parent's size."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["VmHWM"].split()[0]) * 1024 / 1e9  # kB
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def child(width: int, n: int, d: int) -> None:
    """Build the model and compute the kernel; print time and this process's peak RSS."""
    model = relu_mlp(d, width, 3)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(3))
    t = time.perf_counter()
    k = empirical_ntk(model, x)
    seconds = time.perf_counter() - t
    peak_gb = peak_rss_gb()
    finite = bool(torch.isfinite(k).all())
    print(json.dumps({"s": seconds, "peak_gb": peak_gb, "finite": finite, "P": n_params(model)}))


def row_huge(width: int, n: int, d: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(width), str(n), str(d)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    jac_gb = n * res["P"] * 4 / 1e9
    return {
        "name": f"d3 ReLU MLP w{width} N{n} f32: auto(structured), own process",
        "ours_s": res["s"],
        "reference_s": None,
        "ratio": None,
        "peak_gb": res["peak_gb"],
        "notes": f"P={res['P']:,}; finite={res['finite']}; a Jacobian needs N*P*4 B = "
        f"{jac_gb:.0f} GB, so Jacobian-based paths cannot fit",
    }


def run(quick: bool = False, nt_jacobian: bool = False, auto_only: bool = False) -> list[dict]:
    """Benchmark rows: name, ours_s, reference_s, ratio (reference/ours), peak_gb, notes."""
    if auto_only:
        return [row_auto_cnn(width=64, n=16, side=6) if quick else row_auto_cnn(256, 32, 8)]
    # the child process first, while this one is still small
    if quick:
        huge = row_huge(width=2000, n=128, d=64)
        return [
            row_vs_nt(width=512, n=64, d=64, repeats=2, nt_jacobian=True),
            row_general(width=128, n=32, d=16, repeats=2),
            row_auto_cnn(width=64, n=16, side=6),
            huge,
        ]
    huge = row_huge(width=10_000, n=512, d=64)
    return [
        row_vs_nt(width=2048, n=256, d=64, repeats=3, nt_jacobian=nt_jacobian),
        row_general(width=256, n=128, d=64, repeats=2),
        row_auto_cnn(width=256, n=32, side=8),
        huge,
    ]


def _fmt(v: object, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--nt-jacobian", action="store_true", help="also time NT's Jacobian")
    parser.add_argument("--auto", action="store_true", help="only the CNN row: auto's choice")
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load average {load}")
    rows = run(quick=args.quick, nt_jacobian=args.nt_jacobian, auto_only=args.auto)
    print(f"{'benchmark':<60} {'ours s':>8} {'ref s':>8} {'ratio':>7} {'peak GB':>8}  notes")
    for r in rows:
        print(
            f"{r['name']:<60} {_fmt(r['ours_s'], '8.3f')} {_fmt(r['reference_s'], '8.3f')} "
            f"{_fmt(r['ratio'], '7.1f')} {_fmt(r['peak_gb'], '8.2f')}  {r['notes']}"
        )


if __name__ == "__main__":
    main()
