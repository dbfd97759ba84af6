"""Layer geometry: each module's weights read as matrices W of shape (fan_out, fan_in).

The width-scaling rules (`ntk.scaling.abc_rules`) are stated for a matrix that acts as y = W x:
fan_in is the number of terms summed per output, fan_out the number of outputs, and the width
n is fan_out for an embedding (finite input), fan_in for hidden and readout layers. PyTorch
layers store their weights in different layouts, so reading "the last dimension is fan-in" is
silently wrong for half of them. This registry is the one place that knows each layout:

    module                  parameter            stored as            matrix W (fan_out, fan_in)
    nn.Linear               weight               (out, in)            as stored
    nn.Conv1d/2d/3d         weight               (out, in/g, *k)      (out, in/g * prod(k))
    nn.Embedding            weight               (num, dim)           W^T: (dim, num), a lookup
    transformers Conv1D     weight               (in, out)            W^T (GPT-2's layers)
    nn.MultiheadAttention   in_proj_weight       (3E, E)              blocks q, k, v stacked
                            out_proj.weight      (E, E)               as stored
    nn.LSTM / GRU / RNN     weight_ih_l{k}       (G H, in)            G gate blocks stacked
                            weight_hh_l{k}       (G H, H)             (LSTM G = 4: i, f, g, o;
                            weight_hr_l{k}       (proj, H)             GRU G = 3: r, z, n)
    experts (ntk.lm.moe)    weight               (E, in, out)         E blocks W_e^T stacked:
                                                                       (E out, in)

Mixture-of-experts layers store E independent matrices as one 3-D tensor, y_e = x_e W_e with
W_e (in, out) (`expert_geometry`): each expert is a matrix of its own (its fan-in sets its
init, its width dimension its exponents), read as E row blocks of one (E out, in) matrix, so
the spectral monitor sees each expert separately and the width ratio of every expert is that
of a per-expert nn.Linear (in -> out).

An embedding is a lookup: y = W^T onehot(x) sums a single term per output, so its init constant
is 1 (`lookup`), while its matrix (dim, num) has fan-in num for the spectral norm. The weights
of recurrent layers and of nn.MultiheadAttention are used inside the module's own computation
(`scalable=False`): a multiplier on the module's output is not a multiplier on them.

Users describe their own module types with `register_geometry(module_type, fn)`, `fn(module)`
returning one `WeightGeometry` per weight matrix. A type can also be given by its qualified name
("transformers.pytorch_utils.Conv1D"), which is how GPT-2's Conv1D is recognized without
importing transformers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ntk._checks import check_callable, check_positive_int

__all__ = [
    "WeightGeometry",
    "expert_geometry",
    "geometry_of",
    "register_geometry",
    "registered_geometry",
]


@dataclass(frozen=True)
class WeightGeometry:
    """One weight matrix of a module, read as W (fan_out, fan_in) with y = W x.

    Attributes:
        param: parameter path relative to the module ("weight", "in_proj_weight",
            "out_proj.weight").
        fan_in: terms summed per output (input features times kernel size): W's columns.
        fan_out: outputs: W's rows (all blocks together).
        transposed: stored as (fan_in, fan_out) (HF Conv1D, nn.Embedding).
        lookup: rows are selected by an index (nn.Embedding): one term per output, so the
            init constant is 1 rather than 1/sqrt(fan_in).
        blocks: names of equal row blocks stacked along fan_out that act as separate matrices
            (q, k, v; LSTM gates); empty for one matrix.
        inner: fan_in is the module's own state (an RNN's hidden state or a later RNN layer),
            a width whenever the module's output is, not the module's input.
        scalable: the module's output is linear in this weight alone (y = W x + b), so a
            multiplier on the output is a multiplier on W.
        bias: path of the bias added to W x, or None.
        stacked: the blocks are the tensor's leading dimension, one matrix each (3-D expert
            weights, `expert_geometry`); `transposed` then applies to each block.
    """

    param: str
    fan_in: int
    fan_out: int
    transposed: bool = False
    lookup: bool = False
    blocks: tuple[str, ...] = ()
    inner: bool = False
    scalable: bool = True
    bias: str | None = None
    stacked: bool = False

    @property
    def init_fan_in(self) -> int:
        """Terms summed per output: 1 for a lookup, else fan_in (the init std is 1/sqrt of it)."""
        return 1 if self.lookup else self.fan_in

    @property
    def block_size(self) -> int:
        """Rows per block (fan_out for a single matrix)."""
        return self.fan_out // max(1, len(self.blocks))

    def matrix(self, tensor: Tensor) -> Tensor:
        """The stored tensor as W (fan_out, fan_in) (a view where the layout allows)."""
        if self.stacked:  # (E, out, in) or, transposed, (E, in, out) -> (E out, in)
            w = tensor.transpose(-2, -1) if self.transposed else tensor
        else:
            w = tensor.T if self.transposed else tensor
        return w.reshape(self.fan_out, self.fan_in)

    def block_matrices(self, tensor: Tensor) -> list[tuple[str, Tensor]]:
        """[(block name, W_block (block_size, fan_in))]; [("", W)] for a single matrix."""
        w = self.matrix(tensor)
        if not self.blocks:
            return [("", w)]
        return list(zip(self.blocks, w.split(self.block_size, dim=0), strict=True))


GeometryFn = Callable[[nn.Module], list[WeightGeometry]]
# key: a module type or its qualified name; value: fn, or a string saying why it is unsupported
_REGISTRY: dict[type | str, GeometryFn | str] = {}


def register_geometry(module_type: type[nn.Module] | str, fn: GeometryFn | None) -> None:
    """Tell `Parametrization` and `SpectralMonitor` how `module_type` stores its weights.

    `fn(module)` returns a list of `WeightGeometry`, one per weight matrix (biases are named
    in them, not listed). `module_type` is a class (subclasses inherit it) or its qualified
    name "package.module.ClassName" (matched without importing the package). `fn=None`
    removes a registration. Example, a layer storing its weight as (in, out):

        >>> class MyDense(nn.Module):  # y = x @ self.kernel + self.offset
        ...     ...
        >>> register_geometry(MyDense, lambda m: [
        ...     WeightGeometry("kernel", fan_in=m.kernel.shape[0], fan_out=m.kernel.shape[1],
        ...                    transposed=True, bias="offset")])
    """
    if isinstance(module_type, str):
        if "." not in module_type:
            raise ValueError(
                "module_type as a string must be a qualified name 'package.module.ClassName', "
                f"got {module_type!r}"
            )
    elif not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be an nn.Module subclass or a str, got {module_type!r}")
    if fn is None:
        _REGISTRY.pop(module_type, None)
        return
    _REGISTRY[module_type] = check_callable("fn", fn, "module -> list[WeightGeometry]")


def _lookup(module: nn.Module) -> GeometryFn | str | None:
    for cls in type(module).__mro__:
        for key in (cls, f"{cls.__module__}.{cls.__qualname__}"):
            if key in _REGISTRY:
                return _REGISTRY[key]
    return None


def registered_geometry(module: nn.Module) -> bool:
    """Whether `module`'s type (or a base class) has a registered, supported geometry."""
    return callable(_lookup(module))


def geometry_of(module: nn.Module, name: str = "module") -> list[WeightGeometry]:
    """The weight matrices of `module` (named `name` in errors), checked against its tensors.

    Raises ValueError naming the layer and what to do if its type has no geometry.
    """
    fn = _lookup(module)
    kind = type(module).__name__
    if isinstance(fn, str):
        raise ValueError(f"layer {name!r} is a {kind}: {fn}")
    if fn is None:
        raise ValueError(
            f"layer {name!r} is a {kind}, whose weight layout is not registered: describe it "
            f"with ntk.scaling.register_geometry({kind}, fn) (fn(module) -> list of "
            "WeightGeometry: which tensor is the weight, its fan-in and fan-out), or do not "
            "list it in config.layers"
        )
    geoms = fn(module)
    if not isinstance(geoms, list) or not all(isinstance(g, WeightGeometry) for g in geoms):
        raise TypeError(
            f"the geometry function registered for {kind} must return a list of "
            f"WeightGeometry, got {geoms!r}"
        )
    for g in geoms:
        _check_against_tensors(module, name, g)
    return geoms


def _check_against_tensors(module: nn.Module, name: str, g: WeightGeometry) -> None:
    try:
        w = module.get_parameter(g.param)
    except AttributeError as err:
        raise ValueError(f"layer {name!r}: geometry names parameter {g.param!r}, absent") from err
    if isinstance(w, nn.parameter.UninitializedParameter):
        raise ValueError(f"layer {name!r} has uninitialized (lazy) parameters: run one forward")
    if g.stacked:
        per = (g.fan_in, g.block_size) if g.transposed else (g.block_size, g.fan_in)
        ok = bool(g.blocks) and tuple(w.shape) == (len(g.blocks), *per)
    elif g.transposed:
        ok = tuple(w.shape) == (g.fan_in, g.fan_out)
    else:
        ok = w.ndim >= 2 and w.shape[0] == g.fan_out and w.numel() == g.fan_in * g.fan_out
    if not ok:
        raise ValueError(
            f"layer {name!r}: {g.param} has shape {tuple(w.shape)}, which does not match "
            f"fan_out={g.fan_out}, fan_in={g.fan_in} (transposed={g.transposed})"
        )
    if g.blocks and g.fan_out % len(g.blocks):
        raise ValueError(f"layer {name!r}: fan_out {g.fan_out} not divisible into {g.blocks}")
    if g.bias is not None:
        try:
            module.get_parameter(g.bias)
        except AttributeError as err:
            raise ValueError(f"layer {name!r}: geometry names bias {g.bias!r}, absent") from err


def expert_geometry(
    param: str, experts: int, fan_in: int, fan_out: int, *, transposed: bool = True
) -> WeightGeometry:
    """The geometry of E = `experts` matrices stored as one 3-D tensor `param`: (E, fan_in,
    fan_out) with y_e = x_e W_e (transposed, as batched-matmul MoE code stores them), or
    (E, fan_out, fan_in) with y_e = W_e x_e.

    Each expert is a (fan_out, fan_in) matrix of its own: init std 1/sqrt(fan_in), width
    dimension fan_in (hidden, readout) or fan_out (embedding), exactly as E separate
    nn.Linear(fan_in, fan_out) would be read. Register a container with it, e.g.

        >>> register_geometry(MyExperts, lambda m: [
        ...     expert_geometry("w1", m.w1.shape[0], m.w1.shape[1], m.w1.shape[2])])
    """
    for name, value in (("experts", experts), ("fan_in", fan_in), ("fan_out", fan_out)):
        check_positive_int(f"expert_geometry {name}", value)
    blocks = tuple(f"expert{e}" for e in range(experts))
    return WeightGeometry(
        param, fan_in, experts * fan_out, transposed=transposed, blocks=blocks, stacked=True
    )


# ---- built-in layers -------------------------------------------------------------------------
def _has_bias(module: nn.Module, path: str) -> str | None:
    return path if isinstance(getattr(module, path, None), nn.Parameter) else None


def _linear(m: nn.Linear) -> list[WeightGeometry]:
    return [WeightGeometry("weight", m.in_features, m.out_features, bias=_has_bias(m, "bias"))]


def _conv(m: nn.modules.conv._ConvNd) -> list[WeightGeometry]:
    fan_in = m.in_channels // m.groups * math.prod(m.kernel_size)
    return [WeightGeometry("weight", fan_in, m.out_channels, bias=_has_bias(m, "bias"))]


def _embedding(m: nn.Embedding) -> list[WeightGeometry]:
    return [WeightGeometry("weight", m.num_embeddings, m.embedding_dim, True, lookup=True)]


def _hf_conv1d(m: nn.Module) -> list[WeightGeometry]:
    nx, nf = m.weight.shape  # stored (in, out): forward is x @ W + b
    return [WeightGeometry("weight", nx, nf, transposed=True, bias=_has_bias(m, "bias"))]


def _multihead_attention(m: nn.MultiheadAttention) -> list[WeightGeometry]:
    bias = "in_proj_bias" if m.in_proj_bias is not None else None
    if m._qkv_same_embed_dim:
        e = m.embed_dim
        geoms = [WeightGeometry("in_proj_weight", e, 3 * e, blocks=("q", "k", "v"), bias=bias)]
    else:  # separate q, k, v (kdim or vdim != embed_dim); one in_proj_bias, kept with q
        geoms = [
            WeightGeometry(f"{x}_proj_weight", *getattr(m, f"{x}_proj_weight").shape[::-1])
            for x in "qkv"
        ]
        geoms[0] = replace(geoms[0], bias=bias)
    out_bias = "out_proj.bias" if m.out_proj.bias is not None else None
    geoms.append(WeightGeometry("out_proj.weight", m.embed_dim, m.embed_dim, bias=out_bias))
    return [replace(g, scalable=False) for g in geoms]


_GATES = {"LSTM": ("i", "f", "g", "o"), "GRU": ("r", "z", "n")}


def _rnn(m: nn.RNNBase) -> list[WeightGeometry]:
    gates = _GATES.get(m.mode, ())
    geoms = []
    for path in m._flat_weights_names:
        if not path.startswith("weight"):
            continue
        fan_out, fan_in = getattr(m, path).shape
        geoms.append(
            WeightGeometry(
                path,
                fan_in,
                fan_out,
                blocks=() if path.startswith("weight_hr") else gates,
                inner=not path.startswith("weight_ih_l0"),
                scalable=False,
                bias=_has_bias(m, path.replace("weight", "bias")),
            )
        )
    return geoms


def _rnn_cell(m: nn.RNNCellBase) -> list[WeightGeometry]:
    gates = {4: _GATES["LSTM"], 3: _GATES["GRU"]}.get(m.weight_ih.shape[0] // m.hidden_size, ())
    return [
        WeightGeometry(
            f"weight_{x}",
            getattr(m, f"weight_{x}").shape[1],
            getattr(m, f"weight_{x}").shape[0],
            blocks=gates,
            inner=x == "hh",
            scalable=False,
            bias=_has_bias(m, f"bias_{x}"),
        )
        for x in ("ih", "hh")
    ]


_TRANSPOSED_CONV = (
    "its fan-in depends on the stride (each output sums in_channels * kernel / stride "
    "terms); describe the reading you want with ntk.scaling.register_geometry"
)

register_geometry(nn.Linear, _linear)
register_geometry(nn.modules.conv._ConvNd, _conv)
_REGISTRY[nn.modules.conv._ConvTransposeNd] = _TRANSPOSED_CONV
register_geometry(nn.Embedding, _embedding)
register_geometry(nn.MultiheadAttention, _multihead_attention)
register_geometry(nn.RNNBase, _rnn)
register_geometry(nn.RNNCellBase, _rnn_cell)
# GPT-2's Conv1D (older transformers kept it in modeling_utils), matched by name
register_geometry("transformers.pytorch_utils.Conv1D", _hf_conv1d)
register_geometry("transformers.modeling_utils.Conv1D", _hf_conv1d)


def torch_layout(module: nn.Module) -> WeightGeometry | None:
    """PyTorch's default reading of a module's own `weight` (>= 2-D): (out, in, *kernel).

    What torch.nn.init assumes; used only for unregistered types, which callers name in a
    warning. None if the module owns no such tensor.
    """
    w = module._parameters.get("weight", None)
    if not isinstance(w, torch.Tensor) or w.ndim < 2:
        return None
    return WeightGeometry("weight", w[0].numel(), w.shape[0], bias=_has_bias(module, "bias"))
