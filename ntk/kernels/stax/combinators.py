"""Combinators: `serial`, `parallel`, `FanOut`, `FanInSum`, `Identity` (residual networks).

`serial(a, b, ...)` composes; `FanOut(n)` copies its input into n branches, `parallel(f, g)`
applies one layer per branch and `FanInSum()` adds the branches, so a residual block is
`serial(FanOut(2), parallel(Identity(), block), FanInSum())`. The kernel of a sum is the sum of
the kernels when the branches are independent and zero-mean: every branch Gaussian and no two
branches sharing the weight layer they last passed through (Yang 2019, arXiv:1902.04760;
neural-tangents' FanInSum assumes it without checking, e.g. it sums two Identity branches as
if independent). A sum that breaks this is refused with the reason.
"""

from __future__ import annotations

from torch import Tensor, nn

from ntk.kernels.stax.base import Layer, State, VarianceTape


class _Serial(nn.Module):
    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(modules)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class _Parallel(nn.Module):
    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(modules)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        return [f(x) for f, x in zip(self.branches, xs, strict=True)]


class _FanOut(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: Tensor) -> list[Tensor]:
        return [x] * self.n


class _FanInSum(nn.Module):
    def forward(self, xs: list[Tensor]) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class _Identity(nn.Module):
    def forward(self, x):
        return x


class Serial(Layer):
    name = "serial"

    def __init__(self, layers: tuple[Layer, ...]) -> None:
        if not layers:
            raise ValueError("serial needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"serial: argument {i} must be a layer of ntk.kernels.stax, got "
                    f"{type(layer).__name__}"
                )
        self.layers = layers

    def build(self, shape, parametrization):
        modules = []
        for layer in self.layers:
            module, shape = layer.build(shape, parametrization)
            modules.append(module)
        return _Serial(modules), shape

    def kernel(self, state, tape: VarianceTape, parametrization: str):
        for layer in self.layers:
            state = layer.kernel(state, tape, parametrization)
        return state

    def __repr__(self) -> str:
        return f"serial({', '.join(map(repr, self.layers))})"


class Parallel(Layer):
    name = "parallel"

    def __init__(self, layers: tuple[Layer, ...]) -> None:
        self.layers = Serial(layers).layers  # same checks

    def _split(self, value, what: str) -> list:
        if not isinstance(value, list) or len(value) != len(self.layers):
            raise ValueError(
                f"parallel of {len(self.layers)} layers needs {len(self.layers)} branches "
                f"(put FanOut({len(self.layers)}) before it), got {what}"
            )
        return value

    def build(self, shapes, parametrization):
        shapes = self._split(shapes, f"one input of shape {shapes}")
        built = [
            layer.build(s, parametrization) for layer, s in zip(self.layers, shapes, strict=True)
        ]
        return _Parallel([m for m, _ in built]), [s for _, s in built]

    def kernel(self, states, tape, parametrization):
        states = self._split(states, "a single input")
        return [
            layer.kernel(s, tape, parametrization)
            for layer, s in zip(self.layers, states, strict=True)
        ]

    def __repr__(self) -> str:
        return f"parallel({', '.join(map(repr, self.layers))})"


class FanOut(Layer):
    name = "FanOut"

    def __init__(self, n: int) -> None:
        from ntk._checks import check_positive_int

        self.n = check_positive_int("FanOut n", n)

    def build(self, shape, parametrization):
        return _FanOut(self.n), [shape] * self.n

    def kernel(self, state, tape, parametrization):
        return [state] * self.n  # layers never modify their input state in place


class FanInSum(Layer):
    name = "FanInSum"

    def build(self, shapes, parametrization):
        if not isinstance(shapes, list):
            raise ValueError("FanInSum needs several branches (FanOut, parallel before it)")
        if len(set(shapes)) != 1:
            raise ValueError(f"FanInSum: the branches' shapes differ: {shapes}")
        return _FanInSum(), shapes[0]

    def kernel(self, states: list[State], tape, parametrization):
        if not isinstance(states, list):
            raise ValueError("FanInSum needs several branches (FanOut, parallel before it)")
        if len({(s.channels, s.spatial) for s in states}) != 1:
            raise ValueError("FanInSum: the branches' shapes differ")
        if len(states) > 1 and not all(s.gaussian and not s.averaged for s in states):
            raise ValueError(
                "FanInSum: every branch must be zero-mean Gaussian (end in a Dense or Conv, or "
                "be the identity of such an output) for the kernel of the sum to be the sum of "
                "the kernels; a nonlinearity's output has a nonzero mean, which correlates the "
                "branches"
            )
        tags = [t for s in states for t in s.tag]
        if len(tags) != len(set(tags)):
            raise ValueError(
                "FanInSum: two branches share the weight layer they last passed through (e.g. "
                "two Identity branches), so they are correlated and the kernel of their sum is "
                "not the sum of their kernels; give each branch but one its own Dense or Conv"
            )
        nngp = states[0].nngp
        for s in states[1:]:
            nngp = nngp + s.nngp
        ntks = [s.ntk for s in states if s.ntk is not None]
        ntk = None
        for t in ntks:
            ntk = t if ntk is None else ntk + t
        return states[0].with_(nngp=nngp, ntk=ntk, tag=frozenset(tags))


class Identity(Layer):
    name = "Identity"

    def build(self, shape, parametrization):
        return _Identity(), shape

    def kernel(self, state, tape, parametrization):
        return state


def serial(*layers: Layer) -> Serial:
    """Compose layers: the output of each is the input of the next."""
    return Serial(layers)


def parallel(*layers: Layer) -> Parallel:
    """Apply layer i to branch i (after FanOut)."""
    return Parallel(layers)
