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

Integrity (a disk, a copy or a transfer can flip bits that no write protocol sees, and
`torch.load` checks nothing): every checkpoint carries the SHA-256 of its content (`digest`:
each tensor's dtype, shape and bytes, and every other value, key by key, whatever keys the state
holds), and loading verifies the zip archive's CRC-32 of every record and then that digest, so a
damaged checkpoint is refused by name instead of trained on. Before a write replaces the
checkpoint, the one it replaces (if its CRCs verify) is kept as `checkpoint_previous.pt`, and
the new file is read back and compared with the bytes meant before it replaces anything: the
last two good checkpoints survive, and the error for a damaged one offers the previous one.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ntk.errors import UserError
from ntk.lm.config import RunConfig, build_model, from_dict
from ntk.scaling.parametrization import Parametrization
from ntk.scaling.scaled_module import ScaledModule

FORMAT = "ntk.lm.checkpoint/2"  # /2: with the content digest
CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint_previous.pt"
REQUIRED = ("format", "step", "config", "model", "optimizer", "scheduler", "rng", "metadata")
DIGEST_KEY = "digest"


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: missing, damaged, not ours, or not this run's."""


# ---- atomic files ------------------------------------------------------------------------------
def _write(file, data: memoryview) -> None:
    """Write `data` to the open file (one place, so tests can interrupt a write)."""
    file.write(data)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Replace `path` by `data` atomically: temp file, flush, fsync, os.replace, fsync(dir)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    _write_file(tmp, memoryview(data))
    _replace(tmp, path)


def save_checkpoint(path: str | Path, state: dict[str, Any], *, copies: tuple = ()) -> None:
    """torch.save `state` (with the format tag and its digest) to `path`, and to each of
    `copies`, atomically; the checkpoint it replaces is kept as PREVIOUS_NAME beside it."""
    missing = [k for k in REQUIRED if k != "format" and k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    content = {
        "format": FORMAT,
        **{k: v for k, v in state.items() if k not in ("format", DIGEST_KEY)},
    }
    buffer = io.BytesIO()
    torch.save({**content, DIGEST_KEY: digest(content)}, buffer)
    data = buffer.getbuffer()
    expected = hashlib.sha256(data).digest()
    path = Path(path)
    for target in (*copies, path):  # the latest one last
        target = Path(target)
        tmp = target.with_name(f".{target.name}.tmp")
        _write_file(tmp, data)
        if hashlib.sha256(tmp.read_bytes()).digest() != expected:  # read back: the disk's copy
            raise OSError(
                f"checkpoint {str(target)!r}: the bytes read back differ from those written"
            )
        if target == path:
            _keep_previous(path)
        _replace(tmp, target)


def _write_file(path: Path, data: memoryview) -> None:
    with open(path, "wb") as f:
        _write(f, data)
        f.flush()
        os.fsync(f.fileno())


def _replace(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself is durable only once the directory is
    finally:
        os.close(fd)


def _keep_previous(path: Path) -> None:
    """Keep the checkpoint at `path` (if its CRCs verify: a damaged one is no fallback) as
    PREVIOUS_NAME, by a hard link (no copy; a copy where links are not supported)."""
    if not path.is_file() or zip_damage(path) is not None:
        return
    previous = path.with_name(PREVIOUS_NAME)
    tmp = previous.with_name(f".{previous.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        _write_file(tmp, memoryview(path.read_bytes()))
    _replace(tmp, previous)


# ---- integrity -----------------------------------------------------------------------------------
def digest(state: Any) -> str:
    """SHA-256 (hex) of a checkpoint's content: every key and value in order, each tensor by
    its dtype, shape and bytes (so a flipped bit anywhere in the data changes it)."""
    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # the bytes, without a copy
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for k, v in value.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__[0]}{len(value)}".encode())
        for v in value:
            _feed(h, v)
    else:  # str, int, float, bool, None, torch.Size, ...: repr is exact (floats round-trip)
        text = repr(value)
        h.update(f"V{type(value).__name__}:{len(text)}:{text}".encode())


def zip_damage(path: str | Path) -> str | None:
    """None if the zip archive at `path` reads and every record matches its CRC-32, else what
    is wrong (torch.load checks neither)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as err:  # a damaged directory: BadZipFile, struct errors, ...
        return f"{type(err).__name__}: {str(err)[:200]}"
    return None if bad is None else f"record {bad!r} fails its CRC-32 check"


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, verify: bool = True
) -> dict:
    """The checkpoint at `path`, verified (zip CRCs, then the content digest), with clear errors
    when it is missing, damaged or not ours. `verify=False` skips the verification (to read a
    checkpoint written before digests, format /1, or to inspect a damaged one)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    damage = zip_damage(path) if verify else None
    if damage is not None:
        raise CheckpointError(_damaged(path, damage))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torn zip, pickle errors, ...: all mean "not a checkpoint"
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a checkpoint "
            f"({type(err).__name__}: {str(err)[:200]})"
        ) from None
    formats = (FORMAT, "ntk.lm.checkpoint/1") if not verify else (FORMAT,)
    if not isinstance(state, dict) or state.get("format") not in formats:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        if found == "ntk.lm.checkpoint/1":
            raise CheckpointError(
                f"checkpoint {str(path)!r} has format /1, written before checkpoints carried a "
                "digest, so it cannot be verified: state = load_checkpoint(path, verify=False) "
                "reads it, save_checkpoint(path, state) writes it again with a digest"
            )
        raise CheckpointError(f"{str(path)!r} is not an ntk.lm checkpoint (format {found!r})")
    if verify:
        stored = state.pop(DIGEST_KEY, None)
        if stored != digest(state):
            raise CheckpointError(_damaged(path, "its content does not match its SHA-256 digest"))
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {missing}")
    return state


def _damaged(path: Path, what: str) -> str:
    """The message for a damaged checkpoint, offering the previous one if it verifies."""
    text = f"checkpoint {str(path)!r} is corrupt or not a checkpoint ({what}): not loaded"
    previous = path.with_name(PREVIOUS_NAME)
    if path.name != CHECKPOINT_NAME:  # a kept copy, the previous one, or any file given
        return text
    if previous.is_file():
        try:
            step = load_checkpoint(previous)["step"]
        except (CheckpointError, OSError):
            return f"{text}, and the previous one {str(previous)!r} is damaged too"
        return (
            f"{text}; the previous checkpoint {str(previous)!r} (step {step}) verifies: "
            f"resume from it with checkpoint.resume={previous}"
        )
    return f"{text}, and there is no previous checkpoint {PREVIOUS_NAME!r} beside it"


def check_vocabulary(state: dict[str, Any], vocab_size: int, where: str, corpus: str) -> None:
    """Raise CheckpointError if the checkpoint's token embedding has another vocabulary size
    than the corpus now gives (the corpus or the tokenizer changed since it was written)."""
    stored = _vocab_size(state["model"])
    if stored != vocab_size:
        raise CheckpointError(
            f"the vocabulary changed since checkpoint {where!r} was written: corpus {corpus!r} "
            f"now gives {vocab_size} tokens, the checkpoint was trained on {stored}; restore "
            "the corpus it was trained on, or start a new run (another log.out_dir)"
        )


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


def seed_all(seed: int) -> None:
    """Seed torch's, Python's and NumPy's global generators from the run's seed (a resume then
    restores the states the checkpoint stored)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


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
