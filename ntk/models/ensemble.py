"""An ensemble of independent MLPs evaluated at once with batched matmuls.

`MLPEnsemble` holds E networks of the same architecture as `ntk.models.mlp.WideMLP` (depth hidden
Dense -> activation layers, then a Dense readout) with each weight matrix stacked along a
leading member axis, `(E, fan_in, fan_out)`. One `torch.baddbmm` per layer evaluates all E
networks on a batch, so thousands of random networks per width cost one pass, not a Python loop.

Parametrizations (same conventions as `WideMLP` and neural-tangents' `stax.Dense`):

- "ntk": z = (weight_std / sqrt(fan_in)) * x W + bias_std * b,   W, b ~ N(0, 1)
- "sp":  z = x W + b,   W ~ N(0, weight_std^2 / fan_in),   b ~ N(0, bias_std^2)

Both give the same function distribution at initialization, hence the same NNGP kernel.

Readout-only training (`sample_readout_posterior`): with the hidden layers frozen, the output is a
linear model f(x) = psi(x) . theta in the readout parameters theta ~ N(0, I) (NTK scaling), with
features psi(x) = [weight_std * phi(x) / sqrt(width), bias_std]. Its prior is a GP with the
empirical NNGP kernel K_hat(x, x') = psi(x) . psi(x'). Matheron's rule turns a prior draw into an
exact posterior draw under Gaussian observation noise sigma^2:

    theta* = theta_0 + Psi^T (Psi Psi^T + sigma^2 I)^{-1} (y - eps - Psi theta_0),  eps ~ N(0, sigma^2 I)

With sigma^2 = 0 this is the point that gradient descent on the readout reaches from theta_0
(minimal distance to theta_0 among interpolants), the "sample-then-optimize" view of Matthews et
al. 2017. As width -> infinity, K_hat -> NNGP kernel, so the ensemble of posterior draws
reproduces the NNGP posterior (Lee et al. 2018, "Deep Neural Networks as Gaussian Processes").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ntk._checks import (
    as_tensor,
    check_float_dtype,
    check_inputs,
    check_nonnegative,
    check_parametrization,
    check_positive_int,
    check_scale_fits,
    check_std,
)
from ntk.activations import get_activation
from ntk.errors import TrainingDivergedError
from ntk.models.mlp import WideMLP


class MLPEnsemble(nn.Module):
    """`n_members` independent MLPs, stacked: weights `(E, fan_in, fan_out)`, biases `(E, 1, fan_out)`.

    Args:
        n_members: E, the number of independent networks.
        in_features, width, out_features, depth, activation, weight_std, bias_std,
            parametrization: as `ntk.models.mlp.WideMLP` (depth = number of hidden layers;
            parametrization "ntk" or "sp", "standard" read as "sp").
        seed: seeds a private `torch.Generator`, so draws do not touch the global RNG.
        dtype: parameter dtype (float32 is plenty for width sweeps; float64 for tight checks).
    """

    def __init__(
        self,
        n_members: int,
        in_features: int,
        width: int,
        out_features: int = 1,
        depth: int = 1,
        activation: str | Callable[[Tensor], Tensor] = "relu",
        weight_std: float = 1.0,
        bias_std: float = 0.0,
        parametrization: str = "ntk",
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.n_members = check_positive_int("n_members", n_members)
        self.in_features = check_positive_int("in_features", in_features)
        self.width = check_positive_int("width", width)
        self.out_features = check_positive_int("out_features", out_features)
        self.depth = check_positive_int("depth", depth, minimum=0)
        self.activation = activation
        self.phi = get_activation(activation)
        self.weight_std = check_std("weight_std", weight_std)
        self.bias_std = check_std("bias_std", bias_std)
        self.parametrization = check_parametrization(
            "parametrization", parametrization, WideMLP.PARAMETRIZATIONS
        )
        self.generator = torch.Generator().manual_seed(check_positive_int("seed", seed, minimum=0))
        self.dtype = check_float_dtype("dtype", dtype)
        min_fan_in = min([in_features] + [width] * depth)
        check_scale_fits("weight_std", weight_std, weight_std / math.sqrt(min_fan_in), dtype)
        check_scale_fits("bias_std", bias_std, bias_std, dtype)

        fans = [in_features] + [width] * depth + [out_features]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(fans[:-1], fans[1:], strict=True):
            w = self._randn(n_members, fan_in, fan_out)  # (E, fan_in, fan_out)
            b = self._randn(n_members, 1, fan_out)  # (E, 1, fan_out)
            if self.parametrization == "sp":  # the scale lives in the parameters
                w = w * (self.weight_std / math.sqrt(fan_in))
                b = b * self.bias_std
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def _randn(self, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=self.generator, dtype=self.dtype)

    def _multipliers(self, fan_in: int) -> tuple[float, float]:
        """Forward multipliers (weight, bias): the NTK parametrization applies them here."""
        if self.parametrization == "ntk":
            return self.weight_std / math.sqrt(fan_in), self.bias_std
        return 1.0, 1.0

    def _dense(self, layer: int, x: Tensor) -> Tensor:
        w, b = self.weights[layer], self.biases[layer]
        w_mult, b_mult = self._multipliers(w.shape[1])
        # (E, N, fan_out) = b_mult * b + w_mult * (E, N, fan_in) @ (E, fan_in, fan_out)
        return torch.baddbmm(b.expand(-1, x.shape[1], -1), x, w, beta=b_mult, alpha=w_mult)

    def _as_batch(self, x: Tensor) -> Tensor:
        """Inputs (N, in_features), shared by all members, or (E, N, in_features), one per member."""
        if isinstance(x, Tensor) and x.ndim == 3:
            if x.shape[0] != self.n_members or x.shape[-1] != self.in_features:
                raise ValueError(
                    f"x must have shape (N, {self.in_features}) or "
                    f"({self.n_members}, N, {self.in_features}), got {tuple(x.shape)}"
                )
            return check_inputs("x", x, ndim=3, dtype=self.dtype)
        x = check_inputs("x", x, dtype=self.dtype, features=self.in_features)
        return x.unsqueeze(0).expand(self.n_members, -1, -1)

    def features(self, x: Tensor) -> Tensor:
        """Last hidden activations phi(z^L), the readout's input: (E, N, width)."""
        h = self._as_batch(x)
        for layer in range(self.depth):
            h = self.phi(self._dense(layer, h))
        return h

    def forward(self, x: Tensor) -> Tensor:
        """Outputs of every member: (E, N, out_features)."""
        return self._dense(self.depth, self.features(x))

    def readout_features(self, x: Tensor) -> Tensor:
        """psi(x) = [weight_std * phi(x) / sqrt(fan_in), bias_std]: (E, N, width + 1).

        With readout parameters theta ~ N(0, I) in NTK scaling, f(x) = psi(x) . theta, so
        psi psi^T is each member's empirical NNGP kernel (for either parametrization).
        """
        phi = self.features(x)
        fan_in = phi.shape[-1]
        bias = torch.full_like(phi[..., :1], self.bias_std)
        return torch.cat([phi * (self.weight_std / math.sqrt(fan_in)), bias], dim=-1)

    @torch.no_grad()
    def empirical_nngp(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        """Each member's empirical NNGP kernel K_hat(x, x') = psi(x) . psi(x'): (E, N1, N2).

        Its mean over random hidden layers is the finite-width kernel; its fluctuations shrink
        as 1/sqrt(width) (central limit theorem over the width hidden units).
        """
        psi1 = self.readout_features(x1)
        psi2 = psi1 if x2 is None else self.readout_features(x2)
        return psi1 @ psi2.transpose(1, 2)

    @torch.no_grad()
    def conditional_variance(self, x: Tensor) -> Tensor:
        """Var[f(x) | hidden layers] = K_hat(x, x), (E, N): the output is exactly N(0, K_hat(x, x))
        given the hidden layers, because the readout is Gaussian and independent of them."""
        psi = self.readout_features(x)
        return (psi * psi).sum(-1)

    @torch.no_grad()
    def sample_readout_posterior(
        self,
        x_train: Tensor,
        y_train: Tensor,
        noise_var: float = 0.0,
        *,
        jitter: float = 1e-10,
    ) -> MLPEnsemble:
        """Replace every member's readout by an exact Bayesian posterior draw (in place).

        The prior is the current readout (a draw from N(0, I) in NTK scaling); the likelihood is
        y = f(x) + eps, eps ~ N(0, noise_var). Matheron's rule (module docstring) gives the
        posterior draw in closed form; noise_var = 0 is the gradient-descent fixed point.
        Requires out_features == 1 for y of shape (N,) or (N, 1); multi-output y (N, K) is
        treated as K independent outputs.

        Returns self, so `ens.sample_readout_posterior(x, y)(x_test)` reads naturally.
        """
        check_nonnegative("noise_var", noise_var)
        check_nonnegative("jitter", jitter)
        x_train = check_inputs("x_train", x_train, dtype=self.dtype, features=self.in_features)
        y = self._columns(x_train, y_train)
        psi = self.readout_features(x_train)  # (E, N, width + 1)
        n = psi.shape[1]
        theta0 = self._readout_theta()  # (E, width + 1, K)
        eps = math.sqrt(noise_var) * self._randn(self.n_members, n, self.out_features)
        residual = y - eps - psi @ theta0  # (E, N, K)
        gram = psi @ psi.transpose(1, 2)  # (E, N, N) empirical NNGP on the training set
        scale = gram.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None]
        eye = torch.eye(n, dtype=self.dtype)
        # Solve in float64: the Gram matrix of wide features is close to low rank on nearby inputs.
        chol, info = torch.linalg.cholesky_ex((gram + (noise_var + jitter * scale) * eye).double())
        if info.any():
            raise ValueError(
                "the readout features' Gram matrix (plus noise_var + jitter) is singular for "
                f"{int((info > 0).sum())} member(s) (duplicate or collinear x_train rows?); "
                "pass noise_var > 0 or a larger jitter"
            )
        alpha = torch.cholesky_solve(residual.double(), chol).to(self.dtype)  # (E, N, K)
        self._set_readout_theta(theta0 + psi.transpose(1, 2) @ alpha)
        return self

    def _readout_theta(self) -> Tensor:
        """Readout parameters in NTK scaling theta ~ N(0, I): (E, width + 1, K)."""
        w, b = self.weights[self.depth], self.biases[self.depth]
        if self.parametrization == "sp":  # undo the scale stored in the parameters
            fan_in = w.shape[1]
            w = w / (self.weight_std / math.sqrt(fan_in)) if self.weight_std > 0 else w
            b = b / self.bias_std if self.bias_std > 0 else b
        return torch.cat([w, b], dim=1)

    def _set_readout_theta(self, theta: Tensor) -> None:
        w, b = theta[:, :-1], theta[:, -1:]
        if self.parametrization == "sp":
            w = w * (self.weight_std / math.sqrt(w.shape[1]))
            b = b * self.bias_std
        self.weights[self.depth].copy_(w)
        self.biases[self.depth].copy_(b)

    def _columns(self, x_train: Tensor, y_train: Tensor) -> Tensor:
        """Targets (N,) or (N, out_features), finite and real, as (N, out_features)."""
        n = x_train.shape[0]
        y = as_tensor("y_train", y_train)
        y = check_inputs("y_train", y, ndim=1 if y.ndim == 1 else 2, dtype=self.dtype)
        if y.ndim == 1 and self.out_features == 1:
            y = y[:, None]
        if y.shape != (n, self.out_features):
            raise ValueError(
                f"y_train must have shape ({n}, {self.out_features})"
                + (f" or ({n},)" if self.out_features == 1 else "")
                + f", got {tuple(y.shape)}"
            )
        return y

    def train_readout(
        self, x_train: Tensor, y_train: Tensor, *, learning_rate: float = 1.0, steps: int = 1000
    ) -> Tensor:
        """Full-batch gradient descent on the readout only (hidden layers frozen), in place.

        Loss L = 1/(2 N K) sum_{i,k} (f_k(x_i) - y_ik)^2, the convention of `ntk.kernels.predict` (and
        neural-tangents), with the readout in NTK scaling theta ~ N(0, I). Its t -> infinity
        limit is `sample_readout_posterior(noise_var=0)`. Returns the loss per step, (steps,),
        averaged over members. Raises `TrainingDivergedError` (with the step) if the loss or the
        readout stops being finite; the readout is then left as it was before the call.
        """
        check_nonnegative("learning_rate", learning_rate)
        check_positive_int("steps", steps)
        x_train = check_inputs("x_train", x_train, dtype=self.dtype, features=self.in_features)
        y = self._columns(x_train, y_train)
        with torch.no_grad():
            psi = self.readout_features(x_train)  # (E, N, width + 1), frozen hidden layers
            theta = self._readout_theta().clone()  # (E, width + 1, K)
            losses = torch.empty(steps, dtype=self.dtype)
            for step in range(steps):
                residual = psi @ theta - y  # (E, N, K)
                losses[step] = 0.5 * residual.pow(2).mean((1, 2)).mean()
                theta -= (learning_rate / y.numel()) * (psi.transpose(1, 2) @ residual)
            # checked once at the end (no per-step sync): a diverged run is NaN from then on
            bad = (~torch.isfinite(losses)).nonzero()
            if len(bad):
                step = int(bad[0])
                raise TrainingDivergedError(step, float(losses[step]))
            if not torch.isfinite(theta).all():  # the last update overflowed
                residual = psi @ theta - y
                raise TrainingDivergedError(steps, float(0.5 * residual.pow(2).mean()))
            self._set_readout_theta(theta)
        return losses

    def train_gd(
        self, x_train: Tensor, y_train: Tensor, *, learning_rate: float = 1.0, steps: int = 100
    ) -> Tensor:
        """Full-batch gradient descent on all parameters of every member at once, in place.

        Each member minimizes its own L_e = 1/(2 N K) sum_{i,k} (f_e,k(x_i) - y_ik)^2 (the
        `ntk.kernels.predict` / `ntk.training` convention) by plain GD with step `learning_rate` in this
        parametrization's coordinates, exactly as `ntk.training.train` with SGD would train each
        network alone; the members never interact (the gradient of sum_e L_e w.r.t. member e's
        parameters is that of L_e). Batching them makes each step a few large matmuls.
        Returns the loss of every member before each step and after the last, (steps + 1, E).
        Raises `TrainingDivergedError` at the first step whose loss is not finite for some
        member (the parameters are left as they were at that step).
        """
        check_nonnegative("learning_rate", learning_rate)
        check_positive_int("steps", steps, minimum=0)
        x_train = check_inputs("x_train", x_train, dtype=self.dtype, features=self.in_features)
        y = self._columns(x_train, y_train)
        params = list(self.parameters())
        losses = torch.empty(steps + 1, self.n_members, dtype=self.dtype)
        for step in range(steps + 1):
            with torch.enable_grad():
                per_member = 0.5 * (self(x_train) - y).pow(2).mean((1, 2))  # (E,)
                losses[step] = per_member.detach()
                finite = torch.isfinite(losses[step])
                if not finite.all():
                    bad = (~finite).nonzero()[:, 0].tolist()
                    err = TrainingDivergedError(step, float(losses[step, bad[0]]))
                    err.add_note(
                        f"members that diverged: {bad[:10]}{' ...' if len(bad) > 10 else ''}"
                    )
                    raise err
                if step == steps:
                    break
                grads = torch.autograd.grad(per_member.sum(), params)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p -= learning_rate * g
        return losses

    def member(self, index: int) -> WideMLP:
        """Member `index` as a stand-alone `WideMLP` with the same parameters.

        In the NTK parametrization with bias_std = 0 the biases do nothing (their multiplier is
        0), so the copy has none (`bias=False`); otherwise biases are copied.
        """
        check_positive_int("index", index, minimum=0)
        if not 0 <= index < self.n_members:
            raise ValueError(f"index must be in [0, {self.n_members}), got {index}")
        bias = not (self.parametrization == "ntk" and self.bias_std == 0)
        net = WideMLP(
            self.in_features,
            self.width,
            self.out_features,
            self.depth,
            self.activation,
            self.weight_std,
            self.bias_std,
            self.parametrization,
            bias=bias,
        ).to(self.dtype)
        with torch.no_grad():
            for layer, w, b in zip(net.layers, self.weights, self.biases, strict=True):
                layer.weight.copy_(w[index].T)  # nn.Linear stores (fan_out, fan_in)
                if bias:
                    layer.bias.copy_(b[index, 0])
        return net
