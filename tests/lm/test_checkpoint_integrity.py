"""Checkpoint integrity: random bit flips in a checkpoint's weights, optimizer state, metadata
or anywhere in the file are refused by name, never resumed silently; the previous checkpoint is
kept and offered; a write is verified before it replaces anything."""

import csv
import io
import struct
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

import ntk.lm.checkpoint as checkpoint
from ntk.lm.checkpoint import (
    CHECKPOINT_NAME,
    DIGEST_KEY,
    PREVIOUS_NAME,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from ntk.lm.config import build_config
from ntk.lm.train import train
from tests.test_errors import run, user_error

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_config(corpus: Path, out: Path, **overrides):
    data = {
        "model": {"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 16},
        "parametrization": {"name": "mup", "base_width": 16},
        "optim": {"lr": 1e-2, "warmup_tokens": 1024},
        "data": {"path": str(corpus), "eval_tokens": 512},
        "train": {"tokens": 20 * 256, "tokens_per_step": 256, "eval_every": 10, "threads": 1},
        "ema": {"enabled": True, "beta": 0.8},
        "log": {"out_dir": str(out), "progress": False},
        "checkpoint": {"every": 5},
    }
    return build_config(data, list(overrides.items()))


def same(a, b) -> bool:
    """Exact equality of two checkpoint contents (tensors bit for bit, dtypes included)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


def storage_owners(state: dict) -> list[str]:
    """The top-level key owning each storage, in torch.save's order (first met while pickling
    the dict in insertion order: storage k is the record data/k)."""
    seen, owners = set(), []

    def walk(value, owner):
        if isinstance(value, torch.Tensor):
            ptr = value.untyped_storage().data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                owners.append((owner, value.untyped_storage().nbytes()))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v, owner)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, owner)

    for key, value in state.items():
        walk(value, key)
    return owners


def record_spans(raw: bytes) -> dict[str, tuple[int, int]]:
    """name -> (start, end) of each zip record's data in the file."""
    spans = {}
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        for info in archive.infolist():
            off = info.header_offset
            name_len, extra_len = struct.unpack("<HH", raw[off + 26 : off + 30])
            start = off + 30 + name_len + extra_len
            spans[info.filename] = (start, start + info.compress_size)
    return spans


@pytest.fixture(scope="module")
def saved(corpus_file, tmp_path_factory):
    """(bytes of a real 2-step checkpoint, its state, the byte spans of each region)."""
    out = tmp_path_factory.mktemp("integrity") / "run"
    train(tiny_config(corpus_file, out, **{"train.stop_step": 2, "checkpoint.every": 1}))
    path = out / CHECKPOINT_NAME
    raw, state = path.read_bytes(), load_checkpoint(path)
    spans = record_spans(raw)
    prefix = next(n for n in spans if n.endswith("/data.pkl")).removesuffix("data.pkl")
    owners = storage_owners(state)
    regions = {"weights": [], "optimizer": [], "metadata": [spans[prefix + "data.pkl"]]}
    for k, (owner, nbytes) in enumerate(owners):
        start, end = spans[f"{prefix}data/{k}"]
        assert end - start == nbytes  # the storage order is torch.save's
        if owner == "model":
            regions["weights"].append((start, end))
        elif owner == "optimizer":
            regions["optimizer"].append((start, end))
    assert len(owners) == sum(n.startswith(prefix + "data/") for n in spans)
    regions["anywhere"] = [(0, len(raw))]
    assert all(regions.values())
    return raw, state, regions


def flip(raw: bytes, positions: list[tuple[int, int]]) -> bytes:
    data = bytearray(raw)
    for byte, bit in positions:
        data[byte] ^= 1 << bit
    return bytes(data)


@st.composite
def bit_flips(draw, regions):
    """(region, [(byte, bit), ...]): 1 to 64 bits flipped inside one region's bytes."""
    name = draw(st.sampled_from(sorted(regions)))
    spans = regions[name]
    positions = []
    for _ in range(draw(st.integers(1, 64))):
        start, end = spans[draw(st.integers(0, len(spans) - 1))]
        positions.append((draw(st.integers(start, end - 1)), draw(st.integers(0, 7))))
    return name, positions


@settings(max_examples=200)
@given(data=st.data())
def test_random_bit_flips_are_never_loaded_silently(saved, data):
    """0 silent resumes: a flipped checkpoint is refused, or (a flip in bytes nothing reads,
    such as a zip header's padding or timestamp) loads exactly the original content. Flips in the
    weights, the optimizer state or the pickled metadata are always refused."""
    raw, original, regions = saved
    region, positions = data.draw(bit_flips(regions))
    damaged = flip(raw, positions)
    if damaged == raw:  # the same bit flipped an even number of times
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CHECKPOINT_NAME
        path.write_bytes(damaged)
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            assert str(path) in str(err)
            event(f"{region}: refused")
            return
    event(f"{region}: loaded, content unchanged")
    assert region == "anywhere", f"a flip in the {region} was loaded"
    assert same(state, original), "a damaged checkpoint loaded with different content"


def test_the_digest_catches_what_the_zip_crcs_cannot_see(saved, tmp_path):
    """A checkpoint re-saved with valid CRCs but changed content (the digest not recomputed):
    a weight, an Adam moment, the step, and a key a later version adds are each refused."""
    _, original, _ = saved

    def tamper(change):
        state = torch.load(io.BytesIO(_bytes(original)), weights_only=True)  # with its digest
        change(state)
        path = tmp_path / "tampered.pt"
        torch.save(state, path)  # CRCs of the new bytes: valid
        return path

    def weight(state):
        name = next(iter(state["model"]))
        state["model"][name].view(-1)[0] += 1e-6

    def adam(state):
        moment = next(iter(state["optimizer"]["state"].values()))["exp_avg_sq"]
        moment.view(-1)[-1] *= 1.5

    def step(state):
        state["step"] += 1

    def extra_key(state):
        state["tokenizer"] = {"kind": "char"}

    for change in (weight, adam, step, extra_key):
        path = tamper(change)
        assert checkpoint.zip_damage(path) is None
        with pytest.raises(CheckpointError, match="does not match its SHA-256 digest"):
            load_checkpoint(path)


def _bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save({**state, DIGEST_KEY: checkpoint.digest(state)}, buffer)
    return buffer.getvalue()


def test_new_keys_are_covered_and_round_trip(saved, tmp_path):
    _, original, _ = saved
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {**original, "tokenizer": {"alphabet": "ab c"}})
    state = load_checkpoint(path)
    assert state["tokenizer"] == {"alphabet": "ab c"} and same(state["model"], original["model"])
    assert DIGEST_KEY not in state


def test_the_previous_checkpoint_is_kept_and_a_damaged_one_is_not(saved, tmp_path):
    _, original, _ = saved
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {**original, "step": 1})
    assert not (tmp_path / PREVIOUS_NAME).exists()
    save_checkpoint(path, {**original, "step": 2})
    assert load_checkpoint(tmp_path / PREVIOUS_NAME)["step"] == 1
    raw = path.read_bytes()
    path.write_bytes(flip(raw, [(len(raw) // 2, 3)]))  # damage step 2's file
    with pytest.raises(CheckpointError, match=r"previous checkpoint .* \(step 1\) verifies"):
        load_checkpoint(path)
    save_checkpoint(path, {**original, "step": 3})  # the damaged step 2 is no fallback
    assert load_checkpoint(tmp_path / PREVIOUS_NAME)["step"] == 1
    assert load_checkpoint(path)["step"] == 3


def test_a_write_that_does_not_read_back_replaces_nothing(saved, tmp_path, monkeypatch):
    _, original, _ = saved
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {**original, "step": 1})
    before = path.read_bytes()

    def bad_disk(file, data):
        file.write(bytes(data[:-1]) + bytes([data[-1] ^ 1]))

    monkeypatch.setattr(checkpoint, "_write", bad_disk)
    with pytest.raises(OSError, match="the bytes read back differ"):
        save_checkpoint(path, {**original, "step": 2})
    assert path.read_bytes() == before and not (tmp_path / PREVIOUS_NAME).exists()


def rows(out_dir: Path) -> list[dict[str, str]]:
    with open(out_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_damaged_checkpoint_is_refused_by_the_command_line(corpus_file, tmp_path):
    """8 mantissa bits flipped in a weight (the issue's case): exit 2 naming the checkpoint and
    offering the previous one, nothing written; resuming from that one ends where the
    uninterrupted run ends, bit for bit."""
    ref = tiny_config(corpus_file, tmp_path / "ref")
    train(ref)
    config = tiny_config(corpus_file, tmp_path / "run", **{"train.stop_step": 10})
    train(config)
    out = Path(config.log.out_dir)
    path = out / CHECKPOINT_NAME
    raw = path.read_bytes()
    state = load_checkpoint(path)
    prefix = next(n for n in record_spans(raw) if n.endswith("/data.pkl")).removesuffix("data.pkl")
    start, _ = record_spans(raw)[f"{prefix}data/0"]  # the first weight's first float32
    path.write_bytes(flip(raw, [(start + k // 8, k % 8) for k in range(8)]))
    assert state["step"] == 10
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    yaml_file = tmp_path / "run.yaml"
    data = config.to_dict()
    data["train"]["stop_step"] = None
    yaml_file.write_text(yaml.safe_dump(data))
    line = user_error(run("-m", "ntk.lm.train", "--config", str(yaml_file)), str(path))
    assert f"checkpoint.resume={out / PREVIOUS_NAME}" in line and "(step 5)" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written
    resumed = run(
        "-m", "ntk.lm.train", "--config", str(yaml_file), f"checkpoint.resume={out / PREVIOUS_NAME}"
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for key in ("step", "loss", "val_loss", "ema_val_loss_max"):
        assert [r[key] for r in rows(out)] == [r[key] for r in rows(Path(ref.log.out_dir))]


def test_a_checkpoint_of_format_1_is_refused_then_upgraded_on_request(saved, tmp_path):
    _, original, _ = saved
    path = tmp_path / CHECKPOINT_NAME
    torch.save({**original, "format": "ntk.lm.checkpoint/1"}, path)  # no digest
    with pytest.raises(CheckpointError, match="has format /1, written before .* a digest"):
        load_checkpoint(path)
    state = load_checkpoint(path, verify=False)
    save_checkpoint(path, state)
    assert same(load_checkpoint(path), original)
