"""Quiet access to the reference library, neural-tangents (JAX), for tests, notebooks and bench.

Importing neural_tangents imports TensorFlow, whose C++ runtime prints log lines (with
timestamps) straight to file descriptor 2. Notebooks would store them as cell output and
strict nbval would fail, so the import runs with fd 2 pointed at /dev/null.
"""

from __future__ import annotations

import contextlib
import os
import sys
from types import ModuleType


@contextlib.contextmanager
def _silence_fd2():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_neural_tangents(x64: bool = True) -> ModuleType:
    """Import and return `neural_tangents` quietly; `x64` turns on JAX float64 (our default)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _silence_fd2():
        import jax

        if x64:
            jax.config.update("jax_enable_x64", True)
        import neural_tangents

        jax.numpy.zeros(1).block_until_ready()  # backend start-up logs happen here
    return neural_tangents
