"""Device selection, torch.compile without graph breaks, bf16 autocast with float32 masters."""

import copy

import pytest
import torch

from ntk.lm.model import GPT, GPTConfig
from ntk.lm.parametrize import optimizer_groups, parametrize
from ntk.lm.runtime import autocast, compile_model, resolve_device, to_device
from ntk.lm.step import lm_loss, train_step
from ntk.scaling import ScaledModule

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB, T = 17, 16


def mup_gpt(seed: int = 0):
    """A muP GPT at twice its base width (ScaledModule wrappers, zero query and readout)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=T, n_layer=2, n_embd=32, n_head=2))
    param = parametrize(model, "mup", base_width=16, lr=1e-2)
    assert any(isinstance(m, ScaledModule) for m in model.modules())
    return model, param


def batches(n: int):
    g = torch.Generator().manual_seed(2)
    draw = lambda: torch.randint(0, VOCAB, (4, T), generator=g)  # noqa: E731
    return [(draw(), draw()) for _ in range(n)]


def test_parametrized_gpt_compiles_with_no_graph_break():
    model, _ = mup_gpt()
    explanation = torch._dynamo.explain(model)(batches(1)[0][0])
    print(explanation)  # the report pytest shows with -s: graphs, breaks, reasons
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_step_equals_eager_within_1e_5_after_5_adamw_steps():
    """In float64: the compiled kernels fuse and sum in another order, and in float32 Adam's
    g / sqrt(v) amplifies that rounding where gradients nearly cancel (as between FSDP and
    one process, test_distributed.py); the claim is that compiling changes no math."""
    eager, param = mup_gpt()
    eager.double()
    compiled = copy.deepcopy(eager)
    opt_eager = torch.optim.AdamW(optimizer_groups(param, 0.1))
    names = dict(eager.named_parameters())
    # the same per-layer groups, pointing at the copy's parameters (deepcopy keeps the names)
    by_id = {id(p): n for n, p in names.items()}
    copies = dict(compiled.named_parameters())
    groups = [
        {**g, "params": [copies[by_id[id(p)]] for p in g["params"]]}
        for g in optimizer_groups(param, 0.1)
    ]
    opt_compiled = torch.optim.AdamW(groups)
    compile_model(compiled, True)
    for step, batch in enumerate(batches(5)):
        a = train_step(eager, opt_eager, batch, step=step)
        b = train_step(compiled, opt_compiled, batch, step=step)
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    assert compiled._compiled_call_impl is not None  # the forward really was compiled
    for name, p in names.items():
        torch.testing.assert_close(copies[name], p, rtol=1e-5, atol=1e-5, msg=name)


def test_bf16_autocast_computes_in_bf16_and_keeps_float32_masters():
    model, param = mup_gpt()
    seen = []
    model.blocks[0].mlp.up.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    reference = copy.deepcopy(model)
    x, y = batches(1)[0]
    with autocast(torch.device("cpu"), "bf16"):
        low = lm_loss(model(x), y)
    assert seen == [torch.bfloat16]  # the matmuls ran in bf16
    assert low.dtype == torch.float32  # the loss (a reduction) in float32
    high = lm_loss(reference(x), y)
    assert low.item() == pytest.approx(high.item(), rel=2e-2)  # bf16's 8 bits: ~0.4% per op
    optimizer = torch.optim.AdamW(optimizer_groups(param, 0.1))
    train_step(model, optimizer, (x, y), step=0, autocast="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {s["exp_avg"].dtype for s in optimizer.state.values()} == {torch.float32}
    seen.clear()
    with autocast("cpu", "none"):
        model(x)
    assert seen == [torch.float32]
    with pytest.raises(ValueError, match="train.autocast must be one of"):
        with autocast("cpu", "fp16"):
            pass


def test_device_selection_and_batch_transfer():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="train.device is 'cuda' but torch sees no CUDA"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="train.device must be one of"):
        resolve_device("tpu")
    x, y = batches(1)[0]
    moved = to_device((x, y), torch.device("cpu"))
    assert torch.equal(moved[0], x) and torch.equal(moved[1], y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_are_pinned_copies():
    x, y = batches(1)[0]
    gx, gy = to_device((x, y), resolve_device("cuda", 0))
    assert gx.is_cuda and torch.equal(gx.cpu(), x) and torch.equal(gy.cpu(), y)


def test_config_keys_are_validated(tiny):
    for key, bad, match in (
        ("autocast", "fp16", "train.autocast must be one of"),
        ("parallel", "zero3", "train.parallel must be one of"),
        ("compile", "yes", "train.compile"),
    ):
        config = tiny()
        setattr(config.train, key, bad)
        with pytest.raises((ValueError, TypeError), match=match):
            config.validate()
