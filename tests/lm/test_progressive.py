"""Progressive sequence length: phases, hard switches, constant tokens per step (exactly)."""

import pytest

from ntk.lm.progressive import Phase, ProgressiveSchedule, parse_schedule, parse_tokens


def test_token_counts():
    assert parse_tokens("t", "2M") == 2_000_000
    assert parse_tokens("t", "1.5K") == 1500
    assert parse_tokens("t", "4_096") == 4096 and parse_tokens("t", 7) == 7
    for bad in ("1.5", "2X", "0", "-3K", "inf"):
        with pytest.raises(ValueError, match="t must be a"):
            parse_tokens("t", bad)
    with pytest.raises(TypeError, match="t must be a token count"):
        parse_tokens("t", 2.0)


def test_the_source_designs_schedule():
    phases = parse_schedule("64:2M,128:8M,256:inf")
    assert phases == (Phase(64, 2_000_000), Phase(128, 8_000_000), Phase(256, None))
    s = ProgressiveSchedule(phases, tokens_per_step=65536)
    assert str(s) == "64:2000000,128:8000000,256:inf"
    assert [s.batch_size(k) for k in range(3)] == [1024, 512, 256]
    assert s.max_block_size == 256


def test_switch_is_hard_at_the_first_step_past_each_threshold():
    s = ProgressiveSchedule("16:1000,32:3000,64:inf", tokens_per_step=256)
    # step k starts with 256 k tokens seen: 1000 / 256 = 3.9, 3000 / 256 = 11.7
    assert [s.phase_at(k) for k in range(14)] == [0] * 4 + [1] * 8 + [2] * 2
    assert [s.first_step(k) for k in range(3)] == [0, 4, 12]
    for k in range(3):
        assert s.phase_at(s.first_step(k)) == k
        if k:
            assert s.phase_at(s.first_step(k) - 1) == k - 1


def test_tokens_per_step_are_constant_exactly():
    s = ProgressiveSchedule("8:1K,24:5K,48:20K,96:inf", tokens_per_step=96 * 5)
    for step in range(200):
        k = s.phase_at(step)
        assert s.batch_size(k) * s.block_size(k) == 480  # integers: exact
    with pytest.raises(ValueError, match="tokens_per_step=100 must be a multiple of every"):
        ProgressiveSchedule("8:1K,25:inf", tokens_per_step=100)
    with pytest.raises(ValueError, match="phase 1 has block size 30"):
        ProgressiveSchedule("10:1K,30:inf", tokens_per_step=100)


def test_constant_schedule():
    s = ProgressiveSchedule.constant(64, 4096)
    assert s.phases == (Phase(64, None),) and s.phase_at(10**6) == 0
    assert s.batch_size(0) == 64
