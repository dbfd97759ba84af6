"""The linearized network: a model replaced by its first-order Taylor expansion in the parameters.

Under gradient flow on MSE it follows `ntk.kernels.predict.gradient_descent_mse` exactly, with
the empirical NTK of the model at initialization (Lee et al. 2019, "Wide Neural Networks of
Any Depth Evolve as Linear Models Under Gradient Descent", arXiv:1902.06720, Sec. 2.2).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.func import functional_call, jvp

from ntk._checks import check_module

__all__ = ["LinearizedModel"]


class LinearizedModel(nn.Module):
    """First-order Taylor expansion of `model` in its parameters around their current values θ_0:

        f_lin(x; θ) = f(x; θ_0) + J(x; θ_0) (θ - θ_0),    J = ∂f/∂θ at θ_0,

    computed as a Jacobian-vector product (torch.func.jvp), never forming J. Its trainable
    parameters are θ (initialized at θ_0; only those of `model` that require grad), so any
    torch optimizer trains it; under gradient flow on MSE it follows `gradient_descent_mse`
    with the empirical NTK of `model` at θ_0 (Lee et al. 2019, Sec. 2.2). `model` is kept by
    reference, not as a submodule: its own parameters are not part of this module's.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        check_module("model", model)
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model has no parameters that require grad; nothing to linearize")
        self._names = tuple(k for k, _ in named)
        self.params = nn.ParameterList([nn.Parameter(p.detach().clone()) for _, p in named])
        for i, (_, p) in enumerate(named):
            self.register_buffer(f"theta0_{i}", p.detach().clone())
        object.__setattr__(self, "model", model)  # plain attribute: not registered

    def theta0(self) -> dict[str, Tensor]:
        """The expansion point θ_0, by parameter name of `model`."""
        return {k: getattr(self, f"theta0_{i}") for i, k in enumerate(self._names)}

    def forward(self, x: Tensor) -> Tensor:
        """f_lin(x; θ), shape as `model(x)`; floating x is cast to the parameters' dtype."""
        theta0 = self.theta0()
        dtype = next(iter(theta0.values())).dtype
        if isinstance(x, Tensor) and x.is_floating_point() and x.dtype != dtype:
            x = x.to(dtype)  # as ntk.kernels.empirical does: float64 data into a float32 network
        delta = {k: p - theta0[k] for k, p in zip(self._names, self.params, strict=True)}
        try:
            f0, jd = jvp(
                lambda params: functional_call(self.model, params, (x,)), (theta0,), (delta,)
            )
        except NotImplementedError as err:  # an op without a forward-mode derivative
            raise NotImplementedError(
                "LinearizedModel computes J (θ - θ_0) with forward-mode AD (torch.func.jvp), "
                f"which this model does not support ({str(err).splitlines()[0]}). Hugging Face "
                "models support it with attn_implementation='eager'; or use the kernel route, "
                "empirical_ntk + gradient_descent_mse, which needs only reverse mode"
            ) from err
        return f0 + jd
