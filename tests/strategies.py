"""Hypothesis strategies shared by the property-based tests (tests/*/test_properties.py).

The properties: for any finite input of a valid shape and dtype, a public function returns
finite values (or raises the error its docstring documents); for any invalid argument it
raises TypeError/ValueError whose message names that argument.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

# Values that no numeric argument accepts, with the error class each must give.
NOT_A_NUMBER = st.sampled_from(["1.0", None, [1.0], 1j, object()])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def negative_numbers() -> st.SearchStrategy[float]:
    return st.one_of(
        st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False), st.just(-1)
    )


def bad_std() -> st.SearchStrategy[object]:
    """Anything a std (finite number >= 0, square finite) must refuse."""
    return st.one_of(NOT_A_NUMBER, NON_FINITE, negative_numbers(), st.just(1e200), st.just(True))


def bad_count(minimum: int = 1) -> st.SearchStrategy[object]:
    """Anything an int >= minimum must refuse (floats, bools, strings, too small, too large)."""
    return st.one_of(
        st.integers(max_value=minimum - 1),
        st.just(2**64),
        st.floats(allow_nan=True),
        st.just(True),
        NOT_A_NUMBER,
    )


def bad_name() -> st.SearchStrategy[object]:
    return st.one_of(
        st.text(max_size=8).filter(lambda s: s not in ("sp", "ntk", "mup", "mfp", "standard")),
        st.integers(),
        st.none(),
    )


@st.composite
def matrices(draw, rows=(1, 6), cols=(1, 4), scale: float = 100.0, dtype=torch.float64):
    """Finite (N, d) inputs, with zero rows and repeated rows likely (kernels' corner cases)."""
    n = draw(st.integers(*rows))
    d = draw(st.integers(*cols))
    values = st.floats(-scale, scale, allow_nan=False, allow_infinity=False, allow_subnormal=True)
    pool = [draw(st.lists(values, min_size=d, max_size=d)) for _ in range(draw(st.integers(1, n)))]
    pool.append([0.0] * d)
    picks = draw(st.lists(st.integers(0, len(pool) - 1), min_size=n, max_size=n))
    return torch.tensor(np.array([pool[i] for i in picks], dtype=float), dtype=dtype)


def assert_names(excinfo: pytest.ExceptionInfo, name: str) -> None:
    """The error is a TypeError or ValueError and its message names the argument."""
    assert issubclass(excinfo.type, (TypeError, ValueError)), (excinfo.type, str(excinfo.value))
    assert name in str(excinfo.value), (name, str(excinfo.value))
