"""Errors shared across the package, on the bottom floor (no ntk imports).

`ntk.training`, `ntk.scaling` (coordinate checks, spectral monitor), `ntk.models` (ensembles)
and `ntk.lm` raise or catch these; keeping them here lets those layers depend on this small
module instead of on each other.
"""

from __future__ import annotations


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or Inf; `.step` is the number of updates done before it."""

    def __init__(self, step: int, loss: float) -> None:
        self.step, self.loss = step, loss
        super().__init__(
            f"training diverged: loss is {loss} at step {step} (after {step} updates); "
            "lower the learning rate or check the parametrization"
        )
