"""ntk: a theory lab for wide neural networks."""
