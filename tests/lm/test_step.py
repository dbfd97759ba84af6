"""Training step and evaluation: the loss falls, divergence is named, DDP sees every parameter."""

import copy
import math
from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ntk import TrainingDivergedError
from ntk.lm.data import eval_batches, load_corpus, sample_batch
from ntk.lm.model import GPT, GPTConfig
from ntk.lm.step import evaluate, lm_loss, train_step

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(block_size=32)


def small(vocab_size: int, n_embd: int = 32) -> GPT:
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=32, n_layer=2, n_embd=n_embd, n_head=2))


def test_lm_loss_is_mean_cross_entropy():
    logits, targets = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    manual = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).mean()
    torch.testing.assert_close(lm_loss(logits, targets), manual)
    assert lm_loss(torch.zeros(1, 3, 7), targets[:1, :3]).item() == pytest.approx(math.log(7))
    with pytest.raises(ValueError, match="logits must be \\(B, T, V\\)"):
        lm_loss(logits, targets[:, :4])


def test_training_lowers_the_loss_below_the_unigram_entropy(corpus):
    """A few steps on the default corpus: the model learns more than letter frequencies."""
    torch.manual_seed(0)
    model = small(corpus.vocab_size, n_embd=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    val = eval_batches(corpus.val, batch_size=32, block_size=32, n_batches=2)
    before = evaluate(model, val)
    g = torch.Generator().manual_seed(0)
    losses = [
        train_step(model, optimizer, sample_batch(corpus.train, 16, 32, g), step=s)
        for s in range(150)
    ]
    after = evaluate(model, val)
    counts = Counter(corpus.train.tolist())
    n = sum(counts.values())
    unigram = -sum(c / n * math.log(c / n) for c in counts.values())  # nats per char
    assert before > unigram  # at init the model knows nothing, not even letter frequencies
    assert after < unigram - 0.2, (before, after, unigram)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.3


def test_non_finite_loss_names_the_step_and_makes_no_update(corpus):
    model = small(corpus.vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = math.nan
    state = copy.deepcopy(model.state_dict())
    batch = sample_batch(corpus.train, 2, 32, torch.Generator().manual_seed(0))
    with pytest.raises(TrainingDivergedError, match="loss is nan at step 7") as err:
        train_step(model, optimizer, batch, step=7)
    assert err.value.step == 7
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, state[name], rtol=0, atol=0, equal_nan=True)
    with pytest.raises(ValueError, match="max_grad_norm must be a finite number > 0"):
        train_step(model, optimizer, batch, step=0, max_grad_norm=0.0)


def test_gradient_clipping_bounds_the_update(corpus):
    batch = sample_batch(corpus.train, 4, 32, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = small(corpus.vocab_size)
    before = [p.detach().clone() for p in model.parameters()]
    train_step(
        model, torch.optim.SGD(model.parameters(), lr=1.0), batch, step=0, max_grad_norm=1e-3
    )
    moved = torch.cat(
        [(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)]
    )
    assert moved.norm().item() == pytest.approx(1e-3, rel=1e-3)  # SGD step = lr * clipped grad


def test_evaluate_is_the_token_weighted_mean_and_restores_mode(corpus):
    model = small(corpus.vocab_size)
    batches = eval_batches(corpus.val, batch_size=4, block_size=16, n_batches=3)
    with torch.no_grad():
        manual = (
            sum(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item() for x, y in batches) / 3
        )
    model.train()
    assert evaluate(model, batches) == pytest.approx(manual, rel=1e-6)
    assert model.training
    model.eval()
    evaluate(model, batches)
    assert not model.training
    with pytest.raises(ValueError, match="batches is empty"):
        evaluate(model, [])


def test_distributed_data_parallel_matches_the_plain_model(corpus, tmp_path):
    """One gloo process: DDP's gradient all-reduce is the identity, every parameter is used."""
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1
    )
    try:
        torch.manual_seed(0)
        plain = small(corpus.vocab_size)
        wrapped = DistributedDataParallel(copy.deepcopy(plain))  # no find_unused_parameters
        opt_plain = torch.optim.AdamW(plain.parameters(), lr=1e-3)
        opt_wrapped = torch.optim.AdamW(wrapped.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        for step in range(3):  # an unused parameter would fail at the second step
            batch = sample_batch(corpus.train, 4, 32, g)
            a = train_step(plain, opt_plain, batch, step=step)
            b = train_step(wrapped, opt_wrapped, batch, step=step)
            assert a == pytest.approx(b, rel=1e-6)
        for p, q in zip(plain.parameters(), wrapped.module.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    finally:
        dist.destroy_process_group()


def _diverge_on_one_rank(rank: int, world: int, tmp: str) -> None:
    """Process `rank` of a 2-process DDP run whose rank 1 alone sees a NaN loss."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rdzv", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(small(13))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        if rank == 1:  # after DDP's initial broadcast: only this process's loss is NaN
            with torch.no_grad():
                model.module.lm_head.weight[0, 0] = math.nan
        batch = (torch.randint(0, 13, (2, 32)), torch.randint(0, 13, (2, 32)))
        try:
            train_step(model, optimizer, batch, step=3)
            outcome = "trained"
        except TrainingDivergedError as err:
            outcome = f"diverged at step {err.step}"
        with open(f"{tmp}/rank{rank}", "w") as f:
            f.write(outcome)
        dist.barrier()  # neither process tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def test_under_ddp_every_process_stops_at_a_non_finite_loss(tmp_path):
    """A process that stopped alone would leave the others waiting in the all-reduce forever."""
    import torch.multiprocessing as mp

    context = mp.start_processes(
        _diverge_on_one_rank, args=(2, str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    processes = context.processes
    try:
        for process in processes:
            process.join(timeout=240)
        if any(process.is_alive() for process in processes):
            pytest.fail("the processes did not finish within 240 s (one waits for the other)")
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    # What each process did is in its file, written before teardown: gloo's teardown itself
    # can abort a process on some runs ("terminate called without an active exception"),
    # which says nothing about the training step, so exit codes are only reported.
    outcomes = [
        (tmp_path / f"rank{r}").read_text() if (tmp_path / f"rank{r}").exists() else None
        for r in (0, 1)
    ]
    codes = [process.exitcode for process in processes]
    assert outcomes == ["diverged at step 3"] * 2, f"outcomes {outcomes}, exit codes {codes}"
