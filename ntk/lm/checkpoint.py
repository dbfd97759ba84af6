"""Checkpoints that resume a run exactly, written so that a crash never breaks the last one.

A checkpoint holds everything the next step depends on: the model's and the optimizer's
state, the learning-rate scheduler, the EMA of the weights, the step (and with it the token
count and the progressive phase, stored as a check), the data sampler's generator, every other
random number generator (torch CPU and CUDA, Python, NumPy), the run's config, and the
parametrization's metadata. Resuming on the same machine with the same number of threads
then repeats the uninterrupted run's losses bit for bit.

The metadata is what `state_dict()` cannot carry: muP's width information lives in plain
floats (each layer's output multiplier n^-a, each attention's logit scale, the per-layer
learning rates n^-c), not in tensors. The `mup` package keeps it in `infshape` attributes and
loses it on save. Here the checkpoint stores, per layer, the widths n and n0, the exponents and
the resulting numbers; `load_model` rebuilds the model from the stored config in a fresh
process, re-derives them, and refuses to load if any differs (a changed rule or a different
base width would otherwise train on silently with wrong multipliers).

Atomic writes: the bytes go to a temporary file in the same directory, which is flushed and
fsync'ed, then renamed over the checkpoint with `os.replace` (atomic on POSIX), and the
directory is fsync'ed. A crash (even SIGKILL) at any moment leaves the previous checkpoint or
the new one, never a torn file; a stale temporary file is ignored and overwritten next time.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ntk.lm.config import RunConfig, build_model, from_dict
from ntk.scaling.parametrization import Parametrization
from ntk.scaling.scaled_module import ScaledModule

FORMAT = "ntk.lm.checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"
REQUIRED = ("format", "step", "config", "model", "optimizer", "scheduler", "rng", "metadata")


# ---- atomic files ------------------------------------------------------------------------------
def _write(file, data: memoryview) -> None:
    """Write `data` to the open file (one place, so tests can interrupt a write)."""
    file.write(data)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Replace `path` by `data` atomically: temp file, flush, fsync, os.replace, fsync(dir)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        _write(f, memoryview(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself is durable only once the directory is
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, state: dict[str, Any], *, copies: tuple = ()) -> None:
    """torch.save `state` (with the format tag) to `path`, and to each of `copies`, atomically."""
    missing = [k for k in REQUIRED if k != "format" and k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    for target in (*copies, path):  # the latest one last
        atomic_write_bytes(target, buffer.getbuffer())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint at `path`, with clear errors when it is missing, torn or not ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torn zip, pickle errors, ...: all mean "not a checkpoint"
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt or not a checkpoint "
            f"({type(err).__name__}: {str(err)[:200]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{str(path)!r} is not an ntk.lm checkpoint (format {found!r})")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} lacks {missing}")
    return state


# ---- random number generators ----------------------------------------------------------------
def rng_state(data_generator: torch.Generator) -> dict[str, Any]:
    """Every RNG the run may draw from: the data sampler's, torch (CPU, CUDA), Python, NumPy."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "data": data_generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": _to_lists(random.getstate()),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def set_rng_state(state: dict[str, Any], data_generator: torch.Generator) -> None:
    """Restore `rng_state()`'s content."""
    data_generator.set_state(state["data"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


# ---- the parametrization's metadata ------------------------------------------------------------
def parametrization_metadata(model: nn.Module, param: Parametrization | None) -> dict[str, Any]:
    """What state_dict() loses: per-layer widths, exponents, multipliers, lrs; logit scales."""
    layers = []
    if param is not None:
        for s in param.layers:
            row = dict(name=s.name, role=s.role, n=s.n, n0=float(s.n0), a=s.a, b=s.b, c=s.c)
            row.update(init_std=s.init_std, multiplier=s.multiplier, lr=s.lr)
            layers.append(row)
    return {
        "parametrization": None if param is None else (param.config.parametrization or "custom"),
        "layers": layers,
        "multipliers": {n: m.multiplier for n, m in model.named_modules() if _scaled(m)},
        "softmax_scales": {
            n: float(m.softmax_scale)
            for n, m in model.named_modules()
            if isinstance(getattr(m, "softmax_scale", None), float)
        },
    }


def _scaled(module: nn.Module) -> bool:
    return isinstance(module, ScaledModule)


def check_metadata(stored: dict[str, Any], rebuilt: dict[str, Any], where: str) -> None:
    """Raise ValueError naming the first layer whose width information differs."""
    if stored["parametrization"] != rebuilt["parametrization"]:
        raise ValueError(
            f"{where}: parametrization {rebuilt['parametrization']!r} now, "
            f"{stored['parametrization']!r} in the checkpoint"
        )
    for key in ("multipliers", "softmax_scales"):
        a, b = stored[key], rebuilt[key]
        if set(a) != set(b):
            raise ValueError(f"{where}: {key} for layers {sorted(a)} stored, {sorted(b)} now")
        for name in a:
            if not _close(a[name], b[name]):
                raise ValueError(f"{where}: {name} has {key[:-1]} {b[name]!r}, stored {a[name]!r}")
    stored_rows = {r["name"]: r for r in stored["layers"]}
    for row in rebuilt["layers"]:
        old = stored_rows.get(row["name"])
        if old is None:
            raise ValueError(f"{where}: layer {row['name']!r} is not in the checkpoint")
        for key in ("n", "n0", "a", "b", "c", "multiplier", "lr"):
            if not _close(old[key], row[key]):
                raise ValueError(
                    f"{where}: layer {row['name']!r} has {key} = {row[key]!r}, stored {old[key]!r}"
                )


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1e-300)


def load_model(path: str | Path, map_location: str | torch.device = "cpu"):
    """(model, parametrization, checkpoint) from a checkpoint, in any process.

    The GPT is rebuilt from the stored config (vocabulary size from the stored weights),
    parametrized again, checked against the stored metadata, then given the stored weights.
    The EMA weights, if any, are in state["ema"]["average"] (`ntk.training.EMA`).
    """
    state = load_checkpoint(path, map_location)
    config = from_dict(RunConfig, state["config"]).validate()
    vocab_size = _vocab_size(state["model"])
    model, param, _ = build_model(config, vocab_size)
    check_metadata(state["metadata"], parametrization_metadata(model, param), str(path))
    model.load_state_dict(state["model"])
    return model.to(map_location), param, state


def _vocab_size(model_state: dict[str, torch.Tensor]) -> int:
    keys = [k for k in model_state if k.split(".")[0] == "wte" and k.endswith("weight")]
    if len(keys) != 1:
        raise ValueError(f"checkpoint model has no single token embedding (found {keys})")
    return int(model_state[keys[0]].shape[0])
