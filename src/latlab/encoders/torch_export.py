"""Turn a :class:`NetworkGraph` into a ``torch.nn.Module`` for the torch eager backend.

Why not onnx2torch: it depends on torchvision, whose wheels pin a CUDA build of torch that
would replace the CPU build on machines like ours (several GB). The IR already has every shape
and attribute, so mapping each layer to the matching ``torch.nn`` module is short, and it
gives an eager model that looks like what a PyTorch user writes (nn.Conv2d, nn.BatchNorm2d,
...). Weights are seeded random values: latency does not depend on them.

Extensions add ops with :func:`register_torch_op`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from latlab.encoders.ir import Layer, NetworkGraph
from latlab.errors import FeatureError
from latlab.registry import Registry

#: op -> factory(layer) returning a module called with the layer's activation inputs.
TorchFactory = Callable[[Layer], nn.Module]
#: The ONNX ops' factories are defined below, in this module; plug-ins: the
#: ``latlab.torch_ops`` entry-point group, or a ``"module:attr"`` given to
#: :func:`register_torch_op` (imported when a layer of the op is first built).
TORCH_OPS: Registry[TorchFactory] = Registry("torch op", group="latlab.torch_ops", check=callable)


def register_torch_op(op: str, factory: TorchFactory | str) -> None:
    """Make layers of ``op`` runnable in the torch eager backend."""
    TORCH_OPS.register(op, factory)


class Fn(nn.Module):
    """A parameter-free op given as a function of the input tensors."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> Any:
        return self.fn(*xs)


class WithConstants(nn.Module):
    """An element-wise op whose extra operands are constant tensors (weights)."""

    def __init__(self, fn: Callable[..., torch.Tensor], shapes: tuple[tuple[int, ...], ...]):
        super().__init__()
        self.fn = fn
        self.consts = nn.ParameterList(
            [nn.Parameter(torch.randn(s) * 0.1 + 1.0, requires_grad=False) for s in shapes]
        )

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs, *self.consts)


def _padding(layer: Layer, nd: int = 2) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Symmetric padding for the module, or an explicit F.pad tuple when asymmetric."""
    pads = tuple(layer.attrs.get("pads", (0,) * (2 * nd)))
    begin, end = pads[:nd], pads[nd:]
    if begin == end:
        return begin, None
    torch_pad: list[int] = []
    for i in reversed(range(nd)):  # F.pad lists the last dimension first
        torch_pad += [begin[i], end[i]]
    return (0,) * nd, tuple(torch_pad)


def _prepad(module: nn.Module, torch_pad: tuple[int, ...] | None, value: float = 0.0) -> nn.Module:
    if torch_pad is None:
        return module
    return nn.Sequential(Fn(lambda x: F.pad(x, torch_pad, value=value)), module)


def _conv(layer: Layer) -> nn.Module:
    a = layer.attrs
    w = layer.weight_shapes[0]
    padding, extra = _padding(layer, len(a["kernel"]))
    groups = int(a.get("groups", 1))
    cls: type[nn.Module]
    if len(a["kernel"]) == 1:  # 1-D convolution (Whisper's front end)
        cls = nn.ConvTranspose1d if layer.op == "ConvTranspose" else nn.Conv1d
    else:
        cls = nn.ConvTranspose2d if layer.op == "ConvTranspose" else nn.Conv2d
    cin = layer.input_shape[1]
    cout = w[1] * groups if layer.op == "ConvTranspose" else w[0]
    conv = cls(
        cin,
        cout,
        tuple(a["kernel"]),
        stride=tuple(a.get("stride", (1,) * len(a["kernel"]))),
        padding=padding,  # type: ignore[arg-type]
        dilation=tuple(a.get("dilation", (1,) * len(a["kernel"]))),
        groups=groups,
        bias=len(layer.weight_shapes) > 1,
    )
    return _prepad(conv, extra)


def _gemm(layer: Layer) -> nn.Module:
    if not layer.weight_shapes:
        return Fn(lambda a, b: a @ (b.t() if layer.attrs.get("transB") else b))
    if layer.attrs.get("transA"):
        raise FeatureError(f"Gemm with transA is not supported by the torch backend ({layer.name})")
    w = layer.weight_shapes[0]
    out_f, in_f = (w[0], w[1]) if layer.attrs.get("transB") else (w[1], w[0])
    return nn.Linear(in_f, out_f, bias=len(layer.weight_shapes) > 1)


def _matmul(layer: Layer) -> nn.Module:
    if not layer.weight_shapes:
        return Fn(torch.matmul)
    return WithConstants(torch.matmul, layer.weight_shapes[:1])


def _bn(layer: Layer) -> nn.Module:
    c = layer.weight_shapes[0][0]
    rank = len(layer.input_shape)
    bn = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[rank](
        c, eps=float(layer.attrs.get("epsilon", 1e-5))
    )
    if bn.running_var is not None:
        bn.running_var.uniform_(0.5, 1.5)
    return bn.eval()


def _pool(layer: Layer) -> nn.Module:
    a = layer.attrs
    padding, extra = _padding(layer)
    kw: dict[str, Any] = {
        "kernel_size": tuple(a["kernel"]),
        "stride": tuple(a.get("stride", a["kernel"])),
        "padding": padding,
        "ceil_mode": bool(a.get("ceil_mode", 0)),
    }
    if layer.op == "MaxPool":
        return _prepad(nn.MaxPool2d(dilation=tuple(a.get("dilation", (1, 1))), **kw), extra, -1e30)
    pool = nn.AvgPool2d(count_include_pad=bool(a.get("count_include_pad", 0)), **kw)
    return _prepad(pool, extra)


def _hardsigmoid(layer: Layer) -> nn.Module:
    alpha = float(layer.attrs.get("alpha", 0.2))
    beta = float(layer.attrs.get("beta", 0.5))
    if abs(alpha - 1 / 6) < 1e-6 and abs(beta - 0.5) < 1e-6:
        return nn.Hardsigmoid()
    return Fn(lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0))


def _clip(layer: Layer) -> nn.Module:
    lo = layer.attrs.get("min")
    hi = layer.attrs.get("max")
    if lo == 0.0 and hi == 6.0:
        return nn.ReLU6()
    return Fn(lambda x: torch.clamp(x, lo, hi))


def _eltwise(fn: Callable[..., torch.Tensor]) -> TorchFactory:
    def make(layer: Layer) -> nn.Module:
        scalars = sorted(layer.attrs.get("scalar_inputs") or ())
        if scalars:  # x * 0.5, x + eps: constants at their operand positions
            values = [(int(pos), 1.0 if v is None else float(v)) for pos, v in scalars]

            def with_scalars(*xs: torch.Tensor) -> torch.Tensor:
                args: list[Any] = list(xs)
                for pos, v in values:
                    args.insert(min(pos, len(args)), v)
                return fn(*args)

            inner = with_scalars
        else:
            inner = fn
        if layer.weight_shapes:
            return WithConstants(inner, layer.weight_shapes)
        return Fn(inner)

    return make


def _layernorm(layer: Layer) -> nn.Module:
    d = layer.input_shape[-1]
    return nn.LayerNorm(d, eps=float(layer.attrs.get("epsilon", 1e-5)))


def _gather(layer: Layer) -> nn.Module:
    axis = int(layer.attrs.get("axis", 0))
    if layer.weight_shapes:  # an embedding: rows of the table by the integer ids
        vocab, dim = layer.weight_shapes[0][:2]
        return nn.Embedding(vocab, dim)
    indices = layer.attrs.get("indices", 0)
    if isinstance(indices, int):
        return Fn(lambda x: x.select(axis, indices))
    idx = torch.tensor(list(indices), dtype=torch.long)
    return Fn(lambda x: x.index_select(axis, idx.to(x.device)))


def _concat(layer: Layer) -> nn.Module:
    axis = int(layer.attrs.get("axis", 1))
    if not layer.weight_shapes:
        return Fn(lambda *xs: torch.cat(xs, dim=axis))
    first = bool(layer.attrs.get("weights_first"))

    def cat(*xs: torch.Tensor) -> torch.Tensor:
        n = len(layer.inputs)
        acts, consts = xs[:n], xs[n:]
        return torch.cat((*consts, *acts) if first else (*acts, *consts), dim=axis)

    return WithConstants(cat, layer.weight_shapes)


def _pad(layer: Layer) -> nn.Module:
    pads = layer.attrs["pads"]
    r = len(pads) // 2
    torch_pad: list[int] = []
    for i in reversed(range(r)):
        torch_pad += [pads[i], pads[i + r]]
    mode = str(layer.attrs.get("mode", "constant"))
    return Fn(lambda x: F.pad(x, torch_pad, mode=mode))


def _slice(layer: Layer) -> nn.Module:
    a = layer.attrs
    rank = len(layer.input_shape)
    index: list[slice] = [slice(None)] * rank
    steps = a.get("steps") or [1] * len(a["axes"])
    for st, en, ax, step in zip(a["starts"], a["ends"], a["axes"], steps, strict=True):
        index[ax % rank] = slice(*slice(st, en, step).indices(layer.input_shape[ax % rank]))
    idx = tuple(index)
    return Fn(lambda x: x[idx])


def _resize(layer: Layer) -> nn.Module:
    size = tuple(layer.output_shape[2:])
    mode = {"nearest": "nearest", "linear": "bilinear", "cubic": "bicubic"}[
        str(layer.attrs.get("mode", "nearest"))
    ]
    return Fn(lambda x: F.interpolate(x, size=size, mode=mode))


def _reshape_to_output(layer: Layer) -> nn.Module:
    shape = layer.output_shape
    return Fn(lambda x: x.reshape(shape))


def _reduce(fn: Callable[..., torch.Tensor]) -> TorchFactory:
    def make(layer: Layer) -> nn.Module:
        rank = len(layer.input_shape)
        axes = tuple(a % rank for a in layer.attrs.get("axes", range(rank)))
        keep = bool(layer.attrs.get("keepdims", 1))
        return Fn(lambda x: fn(x, dim=axes, keepdim=keep))

    return make


def _softmax(log: bool) -> TorchFactory:
    def make(layer: Layer) -> nn.Module:
        axis = int(layer.attrs.get("axis", -1))
        return nn.LogSoftmax(dim=axis) if log else nn.Softmax(dim=axis)

    return make


def _simple(module: Callable[[], nn.Module]) -> TorchFactory:
    return lambda layer: module()


register_torch_op("Conv", _conv)
register_torch_op("ConvTranspose", _conv)
register_torch_op("Gemm", _gemm)
register_torch_op("MatMul", _matmul)
register_torch_op("BatchNormalization", _bn)
register_torch_op(
    "LRN",
    lambda ly: nn.LocalResponseNorm(
        int(ly.attrs.get("size", 5)),
        float(ly.attrs.get("alpha", 1e-4)),
        float(ly.attrs.get("beta", 0.75)),
        float(ly.attrs.get("bias", 1.0)),
    ),
)
for _op in ("MaxPool", "AveragePool"):
    register_torch_op(_op, _pool)
register_torch_op("GlobalAveragePool", _simple(lambda: nn.AdaptiveAvgPool2d(1)))
register_torch_op("GlobalMaxPool", _simple(lambda: nn.AdaptiveMaxPool2d(1)))
register_torch_op("ReduceMean", _reduce(torch.mean))
register_torch_op("ReduceSum", _reduce(torch.sum))
register_torch_op("ReduceMax", _reduce(torch.amax))
register_torch_op("ReduceMin", _reduce(torch.amin))
register_torch_op("Relu", _simple(nn.ReLU))
register_torch_op("Sigmoid", _simple(nn.Sigmoid))
register_torch_op("Tanh", _simple(nn.Tanh))
register_torch_op("HardSwish", _simple(nn.Hardswish))
register_torch_op("HardSigmoid", _hardsigmoid)
register_torch_op("Clip", _clip)
register_torch_op("LeakyRelu", lambda ly: nn.LeakyReLU(float(ly.attrs.get("alpha", 0.01))))
register_torch_op("Elu", _simple(nn.ELU))
register_torch_op("Selu", _simple(nn.SELU))
register_torch_op("Softplus", _simple(nn.Softplus))
register_torch_op("Gelu", _simple(nn.GELU))
register_torch_op("Mish", _simple(nn.Mish))
for _op, _fn in (
    ("Sign", torch.sign), ("Abs", torch.abs), ("Neg", torch.neg), ("Exp", torch.exp),
    ("Log", torch.log), ("Sqrt", torch.sqrt), ("Reciprocal", torch.reciprocal),
    ("Erf", torch.erf),
):  # fmt: skip
    register_torch_op(_op, _simple(lambda f=_fn: Fn(f)))  # type: ignore[misc]
register_torch_op("Softmax", _softmax(log=False))
register_torch_op("LogSoftmax", _softmax(log=True))
register_torch_op("Add", _eltwise(torch.add))
register_torch_op("Sub", _eltwise(torch.sub))
register_torch_op("Mul", _eltwise(torch.mul))
register_torch_op("Div", _eltwise(torch.div))
register_torch_op("Max", _eltwise(torch.maximum))
register_torch_op("Min", _eltwise(torch.minimum))
register_torch_op("Pow", _eltwise(torch.pow))
register_torch_op("Sum", _eltwise(lambda *xs: torch.stack(xs).sum(0)))
register_torch_op("Mean", _eltwise(lambda *xs: torch.stack(xs).mean(0)))
register_torch_op("Concat", _concat)
register_torch_op("LayerNormalization", _layernorm)
register_torch_op("Gather", _gather)
register_torch_op(
    "Split",
    lambda ly: Fn(
        lambda x: torch.split(x, list(ly.attrs["split"]), dim=int(ly.attrs.get("axis", 0)))
    ),
)
register_torch_op("Transpose", lambda ly: Fn(lambda x: x.permute(*ly.attrs["perm"])))
for _op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze"):
    register_torch_op(_op, _reshape_to_output)
register_torch_op("Expand", lambda ly: Fn(lambda x: x.expand(*ly.output_shape)))
register_torch_op("Pad", _pad)
register_torch_op("Slice", _slice)
register_torch_op("Resize", _resize)
register_torch_op("Upsample", _resize)
for _op in ("Identity", "Dropout", "Cast"):
    register_torch_op(_op, _simple(nn.Identity))


class GraphModule(nn.Module):
    """Runs the layers of a graph in topological order (eager PyTorch)."""

    def __init__(self, graph: NetworkGraph, layers: nn.ModuleList) -> None:
        super().__init__()
        self.input_names = list(graph.inputs)
        self.output_names = list(graph.outputs)
        self.plan = [(layer.inputs, layer.outputs) for layer in graph.layers]
        self.ops = layers

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        env: dict[str, torch.Tensor] = dict(zip(self.input_names, inputs, strict=True))
        for (ins, outs), op in zip(self.plan, self.ops, strict=True):
            result = op(*(env[t] for t in ins))
            if len(outs) == 1:
                env[outs[0]] = result
            else:
                env.update(zip(outs, result, strict=True))
        results = tuple(env[t] for t in self.output_names)
        return results[0] if len(results) == 1 else results


def to_torch(graph: NetworkGraph, seed: int = 0) -> nn.Module:
    """An eager ``nn.Module`` computing ``graph`` with seeded random weights (eval mode).

    Raises :class:`FeatureError` naming the first op the torch backend cannot run.
    """
    torch.manual_seed(seed)
    modules = []
    for layer in graph.layers:
        factory = TORCH_OPS.get(layer.op)
        if factory is None:
            raise FeatureError(
                f"the torch backend cannot run op {layer.op!r} (layer {layer.name!r} of "
                f"{graph.reference})"
            )
        modules.append(factory(layer))
    return GraphModule(graph, nn.ModuleList(modules)).eval()
