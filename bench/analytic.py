"""Benchmark: analytic NNGP+NTK (ntk.kernels) vs neural-tangents' jitted stax kernel_fn.

Both run in this process, interleaved, after a warm-up call each; we report medians of
several repeats, since the machine may be shared and noisy. A second part computes an
N = 20,000 Gram pair in a fresh subprocess and reads its peak resident memory (VmHWM),
to check that blocking keeps memory at the outputs plus small temporaries. A third part times
the CNTK of a 3-layer CNN with global average pooling (ntk.kernels.stax) against
neural-tangents, each in a fresh process that reports its peak RSS.

    python bench/analytic.py            # prints a table
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import torch

from ntk.kernels import MLPKernel

REPEATS = 7


def _nt_kernel_fn(depth: int, activation: str):
    import jax
    from neural_tangents import stax

    jax.config.update("jax_enable_x64", True)
    act = {"relu": stax.Relu, "erf": stax.Erf}[activation]
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(512, 1.0, 0.0), act()]
    kernel_fn = stax.serial(*layers, stax.Dense(1, 1.0, 0.0))[2]
    return jax.jit(kernel_fn, static_argnames="get")


def _median_times(fns: dict, repeats: int = REPEATS) -> dict:
    """Median wall time of each callable, interleaved so that load spikes hit all alike."""
    for fn in fns.values():
        fn()  # warm-up: jit compilation, allocator, thread pools
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def time_vs_neural_tangents(
    n: int = 2000, d: int = 64, depth: int = 3, activation: str = "relu", symmetric: bool = True
) -> dict:
    """One row: NNGP+NTK Gram of n points (x2=None) or of n x n distinct points."""
    import jax

    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((n, d))
    x2 = None if symmetric else rng.standard_normal((n, d))
    t1 = torch.from_numpy(x1)
    t2 = None if x2 is None else torch.from_numpy(x2)
    kernel = MLPKernel(depth, activation, 1.0, 0.0)
    kernel_fn = _nt_kernel_fn(depth, activation)

    def ours():
        return kernel.kernels(t1, t2)

    def reference():
        return jax.block_until_ready(kernel_fn(x1, x2, get=("nngp", "ntk")))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        med = _median_times({"ours": ours, "reference": reference})
        # the two must agree, or the timing means nothing
        ref = reference()
        err = max(
            float(np.max(np.abs(o.numpy() - np.asarray(r))) / np.max(np.abs(np.asarray(r))))
            for o, r in zip(ours(), ref, strict=True)
        )
    pair = "K(X)" if symmetric else "K(X1, X2)"
    return dict(
        name=f"analytic nngp+ntk {pair} {activation} N={n} d={d} depth={depth} float64",
        ours_s=med["ours"],
        reference_s=med["reference"],
        ratio=med["ours"] / med["reference"],
        notes=f"vs jitted nt.stax kernel_fn; median of {REPEATS}; max rel err {err:.1e}",
    )


_MEMORY_SCRIPT = """
import json, time, torch
from ntk.kernels import MLPKernel

def status(key):  # bytes; VmHWM (peak RSS) starts afresh at exec, unlike ru_maxrss
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

x = torch.randn({n}, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
base = status("VmHWM")
t = time.perf_counter()
k = MLPKernel({depth}, "relu").kernels(x)
seconds = time.perf_counter() - t
peak = status("VmHWM")
out = k.nngp.numel() * 8 * 2
print(json.dumps(dict(seconds=seconds, base=base, peak=peak, out=out,
                      finite=bool(torch.isfinite(k.nngp).all() and torch.isfinite(k.ntk).all()))))
"""


def peak_memory(n: int = 20_000, depth: int = 3) -> dict:
    """One row: NNGP+NTK Gram of n points in a subprocess; peak RSS vs the outputs' size."""
    code = _MEMORY_SCRIPT.format(n=n, depth=depth)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory check failed:\n{proc.stderr[-2000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    gb = 1e9
    extra = (r["peak"] - r["base"] - r["out"]) / gb
    return dict(
        name=f"analytic nngp+ntk K(X) relu N={n} depth={depth}: peak memory",
        ours_s=r["seconds"],
        reference_s=None,
        ratio=r["peak"] / r["out"],
        notes=(
            f"peak RSS {r['peak'] / gb:.2f} GB = outputs {r['out'] / gb:.2f} GB + "
            f"process baseline {r['base'] / gb:.2f} GB + {extra:.2f} GB temporaries "
            f"(depth x N^2 would be {depth * n * n * 8 / gb:.1f} GB); "
            f"finite={r['finite']}; ratio = peak / outputs"
        ),
    )


_CNN_SCRIPT = """
import json, os, time, warnings
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
warnings.simplefilter("ignore")
import numpy as np

def status(key):  # bytes; VmHWM is this process's peak RSS
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

from ntk.kernels import stax as S
net = S.serial(*[S.Conv(1, 3), S.Relu()] * 3, S.GlobalAvgPool(), S.Dense(1))
x = np.random.default_rng(0).standard_normal(({n}, 1, 8, 8))
side = "{side}"
if side == "ours":
    import torch
    xt = torch.from_numpy(x)
    base = status("VmHWM")
    t = time.perf_counter()
    k = net.kernels(xt)
    seconds = time.perf_counter() - t
    ntk = k.ntk.numpy()
else:
    import jax
    import neural_tangents as nt
    from ntk.kernels.stax.nt_bridge import to_neural_tangents, to_nhwc
    kernel_fn = to_neural_tangents(net, (1, 8, 8))[2]
    # unbatched, (N, N, 8, 8, 8, 8) float64 per layer would be {n}^2 * 32 KB = many GB:
    # neural-tangents' own answer is nt.batch over blocks of {batch} x {batch} examples
    fn = nt.batch(jax.jit(kernel_fn, static_argnames="get"), batch_size={batch})
    xn = to_nhwc(x)
    fn(xn[:{batch}], None, get=("nngp", "ntk"))  # compile first: not timed
    base = status("VmHWM")
    t = time.perf_counter()
    k = fn(xn, None, get=("nngp", "ntk"))
    ntk = np.asarray(jax.block_until_ready(k[1]))
    seconds = time.perf_counter() - t
np.save("{out}", ntk)
print(json.dumps(dict(seconds=seconds, base=base, peak=status("VmHWM"))))
"""


def _cnn_side(side: str, n: int, batch: int, out: str) -> dict:
    code = _CNN_SCRIPT.format(n=n, side=side, batch=batch, out=out)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"CNN benchmark ({side}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cnn_gap_vs_neural_tangents(n: int = 500, batch: int = 50) -> dict:
    """One row: CNTK of 3 SAME 3x3 conv + ReLU layers, global average pooling, Dense readout,
    on n random 8x8 one-channel images, K(X) (NNGP + NTK). Each side runs in its own fresh
    process, which reports its peak RSS; ours is tiled (`ntk.kernels.stax.network`),
    neural-tangents' is its jitted kernel_fn under nt.batch (unbatched it needs the full
    (N, N, 8, 8, 8, 8) covariances of every layer: 8 GB per array at N = 500)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ours = _cnn_side("ours", n, batch, f"{tmp}/ours.npy")
        ref = _cnn_side("reference", n, batch, f"{tmp}/ref.npy")
        a, b = np.load(f"{tmp}/ours.npy"), np.load(f"{tmp}/ref.npy")
    err = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
    gb = 1e9
    return dict(
        name=f"CNTK 3 conv + GAP, K(X) 8x8 N={n} float64: time, peak RSS",
        ours_s=ours["seconds"],
        reference_s=ref["seconds"],
        ratio=ours["seconds"] / ref["seconds"],
        peak_gb=ours["peak"] / gb,
        notes=(
            f"vs jitted nt kernel_fn in nt.batch({batch}); peak RSS ours {ours['peak'] / gb:.2f}"
            f" GB, nt {ref['peak'] / gb:.2f} GB (baselines {ours['base'] / gb:.2f} / "
            f"{ref['base'] / gb:.2f}); max rel err {err:.1e}; outputs {2 * n * n * 8 / gb:.3f} GB"
        ),
    )


def run(memory_check: bool = True, quick: bool = False) -> list[dict]:
    """All rows of this benchmark (the memory check takes about a minute and ~7 GB)."""
    rows = [
        time_vs_neural_tangents(activation="relu", symmetric=True),
        time_vs_neural_tangents(activation="relu", symmetric=False),
        time_vs_neural_tangents(activation="erf", symmetric=True),
        cnn_gap_vs_neural_tangents(n=100 if quick else 500),
    ]
    if memory_check:
        rows.append(peak_memory())
    return rows


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    rows = run(memory_check="--no-memory" not in sys.argv, quick="--quick" in sys.argv)
    print(f"{'benchmark':<72} {'ours_s':>8} {'ref_s':>8} {'ratio':>7}  notes")
    for row in rows:
        print(
            f"{row['name']:<72} {_fmt(row['ours_s']):>8} {_fmt(row['reference_s']):>8} "
            f"{_fmt(row['ratio']):>7}  {row['notes']}"
        )
