"""Micro-kernel benchmark networks: ``kernel:`` references (ANNETTE's benchmark networks).

A layer benchmark is a tiny network named by a reference, so that the store, the tables and
the predictors treat it like any other network. Grammar::

    kernel:PART[+PART...][?KEY=VALUE[&KEY=VALUE...]]
    PART := OP | OP(KEY=VALUE[,KEY=VALUE...])

The parts are applied in order to one input tensor ``(N, c, h, w)`` (``(N, c)`` when the first
part other than ``padding`` is ``fc`` and ``h`` is not given). Global keys (the query) set
every part's parameters; a part's own arguments override them for that part only, e.g. a
depthwise-separable block::

    kernel:dwconv(k=3)+bn+relu+conv(k=1,f=128)?c=64&h=56&w=56

Keys (integers): ``h`` input height (default 1), ``w`` width (default ``h``), ``c`` input
channels (required), ``f`` output channels of conv/fc (default: the current channels), ``k``
window of conv/dwconv/pooling (default 1), ``s`` stride (default 1), ``g`` groups of ``conv``
(default 1), ``c2`` channels of the second operand of ``concat`` (default: the current
channels), ``b`` = 1 makes the second operand of ``add``/``mul`` a per-channel ``(N, C, 1, 1)``
vector (squeeze-and-excitation style), ``t`` tokens, ``e`` heads of ``heads``/``reshape``
(default 1), ``v`` vocabulary of ``embed``, ``r`` = N makes the second operand of ``add``,
``mul`` or ``concat`` the output of the N-th part of the chain (counted from 1; 0, the
default: the rule below), e.g. a pre-norm residual whose sum also feeds a LayerNorm:
``padding+add+ln+linear+add(r=2)+padding``.

Ops: ``conv`` (Conv, "same" padding ``(k-1)//2``), ``dwconv`` (depthwise Conv), ``fc`` (Gemm,
preceded by a Flatten when the tensor is not 2-D), ``maxpool``/``avgpool`` (window ``k``, stride
``s``, padding ``(k-1)//2``), ``gpool``/``gmaxpool`` (global average/max pooling), ``add``,
``mul``, ``concat`` (along channels), ``bn`` (BatchNormalization), activations ``relu``,
``relu6`` (Clip 0..6), ``sigmoid``, ``tanh``, ``hardswish``, ``hardsigmoid``, ``flatten``, and
``padding``: the smart-padding layer (MaxPool 1x1 stride 1 on 4-D tensors, which onnxruntime
runs in the same blocked NCHWc layout as convolutions and never fuses with a neighbour; Abs on
2-D tensors, which no CPU fusion absorbs).

Transformer parts work on **token tensors**: with the key ``t`` (tokens) the input is
``(N, t, c)`` (``c`` = the width), or the per-head tensor ``(N, h, t, c)`` when ``h`` (heads)
is given as well (``c`` = the head dimension); ``w`` is then meaningless. They are built with
the network builder's methods, exactly as the zoo's transformers are: ``linear`` (``nn.Linear``
on a token tensor: MatMul by a ``(c, f)`` weight + bias Add, which onnxruntime runs as
Reshape-Gemm-Reshape), ``bmm`` (MatMul of two activations batched over the leading axes, as
attention's ``Q·Kᵀ`` and ``P·V``: the second operand is ``(..., c, f)``, ``f`` defaulting to the
tokens, i.e. the square score matrix), ``ln`` (LayerNormalization over the last axis),
``skipln`` (a residual Add + LayerNorm, which onnxruntime runs as one SkipLayerNormalization --
ten times slower than LayerNormalization on this CPU),
``rmsnorm`` (the primitive RMSNorm chain onnxruntime fuses into SimplifiedLayerNormalization),
``softmax`` (over the last axis), ``gelu`` (the erf form PyTorch exports, fused into one
``Gelu`` kernel), ``embed`` (Gather of ``t`` rows of a ``(v, c)`` table by int64 token ids;
must be the first part: the input is the ids ``(N, t)``; ``v`` defaults to 30522),
``heads`` (``(N, t, c) -> (N, e, t, c/e)``: Reshape + Transpose, attention's split into ``e``
heads), ``reshape`` (the Reshape alone), ``merge`` (``(N, h, t, d) -> (N, t, h·d)``: Transpose +
Reshape), ``transpose`` (swap the last two axes, ``Kᵀ``) and ``scale`` (Div by the constant
``√c``, attention's score scaling, which onnxruntime folds into the MatMul before it).
E.g. the scores of 12 heads over 128 tokens, and a BERT-base feed-forward expansion::

    kernel:bmm?h=12&t=128&c=64
    kernel:linear+gelu?t=128&c=768&f=3072

Binary ops take their second operand from the chain's input (the tensor entering the first
part that is not ``padding``) when it has the needed shape and is not the current tensor
(``conv+add`` is a residual connection), otherwise from a second graph input named ``input2``
(single-layer ``add`` benchmarks read two tensors, as in a network).

References are canonical (:func:`kernel_reference` sorts keys and drops defaults), so equal
benchmarks have equal references and a resumed campaign recognises them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from latlab.datasets.references import ResolveOptions, Scheme
from latlab.encoders.builder import NetBuilder
from latlab.encoders.ir import Layer, NetworkGraph, Shape
from latlab.errors import NetworkReferenceError

SCHEME = "kernel"

#: Ops of the grammar and the parameter keys each one reads.
OPS: dict[str, tuple[str, ...]] = {
    "conv": ("f", "k", "s", "g"),
    "dwconv": ("k", "s"),
    "fc": ("f",),
    "maxpool": ("k", "s"),
    "avgpool": ("k", "s"),
    "gpool": (),
    "gmaxpool": (),
    "add": ("b", "r"),
    "mul": ("b", "r"),
    "concat": ("c2", "r"),
    "bn": (),
    "relu": (),
    "relu6": (),
    "sigmoid": (),
    "tanh": (),
    "hardswish": (),
    "hardsigmoid": (),
    "flatten": (),
    "padding": (),
    # transformer parts (token tensors, see the module docstring)
    "linear": ("f",),
    "bmm": ("f",),
    "ln": (),
    "skipln": ("r",),
    "rmsnorm": (),
    "softmax": (),
    "gelu": (),
    "embed": ("v",),
    "heads": ("e",),
    "reshape": ("e",),
    "merge": (),
    "transpose": (),
    "scale": (),
}
#: Keys of the query (the input shape plus every op key).
KEYS = ("h", "w", "t", "c", "f", "k", "s", "g", "c2", "b", "e", "v", "r")
_DEFAULTS = {"k": 1, "s": 1, "g": 1, "b": 0, "r": 0}
#: Parts that read token tensors ``(N, t, c)`` or per-head tensors ``(N, h, t, c)``.
TOKEN_OPS = ("linear", "bmm", "ln", "skipln", "rmsnorm", "softmax", "gelu", "embed", "heads",
             "reshape", "merge", "transpose", "scale")  # fmt: skip
#: Default vocabulary of ``embed`` (BERT's WordPiece vocabulary).
DEFAULT_VOCAB = 30522
#: Largest value a key may take (guards against typos building gigantic networks).
MAX_VALUE = 1 << 16
ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh", "hardswish", "hardsigmoid")

_PART = re.compile(r"(?P<op>[a-z0-9]+)(?:\((?P<args>[^()]*)\))?")


@dataclass(frozen=True)
class Part:
    """One op of a kernel chain with its own parameter overrides."""

    op: str
    args: tuple[tuple[str, int], ...] = ()

    def text(self) -> str:
        if not self.args:
            return self.op
        return f"{self.op}(" + ",".join(f"{k}={v}" for k, v in self.args) + ")"


@dataclass(frozen=True)
class KernelSpec:
    """A parsed ``kernel:`` reference: the chain of parts and the global parameters."""

    parts: tuple[Part, ...]
    params: tuple[tuple[str, int], ...] = field(default=())

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(p.op for p in self.parts)

    def param(self, key: str, part: Part | None = None) -> int | None:
        """Value of ``key`` for ``part`` (its override, else the global value, else None)."""
        if part is not None:
            for k, v in part.args:
                if k == key:
                    return v
        for k, v in self.params:
            if k == key:
                return v
        return None

    @property
    def reference(self) -> str:
        return format_kernel(self)


def _bad(body: str, why: str) -> NetworkReferenceError:
    return NetworkReferenceError(f"malformed reference '{SCHEME}:{body}': {why}")


def _parse_pairs(text: str, sep: str, body: str) -> dict[str, int]:
    out: dict[str, int] = {}
    if not text:
        return out
    for item in text.split(sep):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in KEYS:
            raise _bad(body, f"unknown or malformed parameter {item!r} (keys: {', '.join(KEYS)})")
        try:
            v = int(value)
        except ValueError:
            raise _bad(body, f"parameter {key} must be an integer, got {value!r}") from None
        if not 0 <= v <= MAX_VALUE or (v == 0 and key not in ("b", "r")):
            raise _bad(body, f"parameter {key}={v} out of range 1..{MAX_VALUE}")
        if key in out:
            raise _bad(body, f"parameter {key} given twice")
        out[key] = v
    return out


def parse_kernel(body: str) -> KernelSpec:
    """Parse a ``kernel:`` reference body; raises :class:`NetworkReferenceError` naming it."""
    chain, _, query = body.strip().partition("?")
    if not chain:
        raise _bad(body, "no op before '?'")
    parts: list[Part] = []
    for raw in chain.split("+"):
        m = _PART.fullmatch(raw.strip())
        if m is None:
            raise _bad(body, f"cannot parse part {raw!r} (expected OP or OP(KEY=VALUE,...))")
        op = m["op"]
        if op not in OPS:
            raise _bad(body, f"unknown op {op!r} (known: {', '.join(OPS)})")
        args = _parse_pairs(m["args"] or "", ",", body)
        parts.append(Part(op, tuple(sorted(args.items()))))
    params = _parse_pairs(query, "&", body)
    if "c" not in params:
        raise _bad(body, "the input channels c are required (e.g. ?c=64&h=56)")
    spec = KernelSpec(tuple(parts), tuple(sorted(params.items())))
    try:
        build_kernel(spec)  # checks shapes (stride larger than the map, bad groups, ...)
    except NetworkReferenceError:
        raise
    except (ValueError, KeyError, IndexError) as exc:
        raise _bad(body, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return spec


def format_kernel(spec: KernelSpec) -> str:
    """The canonical reference of ``spec``: sorted keys, defaults dropped, ``w`` only if != h."""
    params = dict(spec.params)
    for k, v in _DEFAULTS.items():
        if params.get(k) == v:
            params.pop(k)
    if params.get("w") is not None and params.get("w") == params.get("h", 1):
        params.pop("w")
    first = next((p.op for p in spec.parts if p.op != "padding"), "padding")
    if params.get("h") == 1 and "w" not in params and first != "fc" and "t" not in params:
        params.pop("h")
    query = "&".join(f"{k}={params[k]}" for k in KEYS if k in params)
    chain = "+".join(p.text() for p in spec.parts)
    return f"{SCHEME}:{chain}?{query}"


def kernel_reference(ops: str | Sequence[str | Part], **params: int) -> str:
    """Canonical reference for a chain (``"conv+bn+relu"`` or parts) and global parameters.

    >>> kernel_reference("conv", c=64, h=56, f=128, k=3)
    'kernel:conv?h=56&c=64&f=128&k=3'
    """
    if isinstance(ops, str):
        body = ops
    else:
        body = "+".join(p.text() if isinstance(p, Part) else p for p in ops)
    query = "&".join(f"{k}={int(v)}" for k, v in params.items() if v is not None)
    return format_kernel(parse_kernel(f"{body}?{query}"))


# --------------------------------------------------------------------------- building


class _Chain:
    """Applies parts to a NetBuilder, creating second graph inputs on demand."""

    def __init__(self, b: NetBuilder, spec_c: int = 1) -> None:
        self.b = b
        self.spec_c = spec_c  # the global c (the embedding width of ``embed``)
        self.start = b.input  # the tensor entering the first part that is not padding
        self.extra_inputs: dict[str, Shape] = {}
        self.part_outputs: list[str] = []  # output tensor of each part so far

    def residual(self, x: str, r: int, shape: Shape) -> str | None:
        """The output of part ``r`` (counted from 1) as a second operand of ``shape``."""
        if r == 0:
            return None
        if r > len(self.part_outputs):
            raise ValueError(f"r={r} names a part that does not come before this one")
        t = self.part_outputs[r - 1]
        if self.b.shape(t) != shape or t == x:
            raise ValueError(f"part {r}'s output {self.b.shape(t)} is not a {shape} operand")
        return t

    def operand(self, x: str, shape: Shape) -> str:
        """A tensor of ``shape`` other than ``x``: the chain input if it fits, else a new input."""
        b = self.b
        if self.start != x and b.shape(self.start) == shape:
            return self.start
        name = f"input{len(self.extra_inputs) + 2}"
        b.shapes[name] = shape
        self.extra_inputs[name] = shape
        return name


def _padding(b: NetBuilder, x: str) -> str:
    if len(b.shape(x)) == 4:
        return b.maxpool(x, 1, 1)
    return b.act(x, "Abs")


def _apply(chain: _Chain, spec: KernelSpec, part: Part, x: str) -> str:
    b = chain.b
    op = part.op
    shape = b.shape(x)
    channels = shape[1]

    def get(key: str, default: int | None = None) -> int:
        v = spec.param(key, part)
        if v is None:
            v = _DEFAULTS.get(key, default)
        if v is None:
            raise ValueError(f"{op} needs parameter {key}")
        return int(v)

    if op in ("conv", "dwconv", "maxpool", "avgpool") and len(shape) != 4:
        raise ValueError(f"{op} needs a 4-D input, got shape {shape}")
    if op == "conv":
        f = get("f", channels)
        k = get("k")
        return b.conv(x, f, k, get("s"), groups=get("g"))
    if op == "dwconv":
        return b.dwconv(x, get("k"), get("s"))
    if op == "fc":
        if len(shape) != 2:
            x = b.flatten(x)
        return b.gemm(x, get("f", b.shape(x)[1]))
    if op in ("maxpool", "avgpool"):
        k = get("k")
        s = get("s")
        if k > shape[2] + 2 * ((k - 1) // 2) or k > shape[3] + 2 * ((k - 1) // 2):
            raise ValueError(f"{op} window {k} is larger than the map {shape[2:]}")
        fn = b.maxpool if op == "maxpool" else b.avgpool
        return fn(x, k, s, padding=(k - 1) // 2)
    if op == "gpool":
        return b.global_avgpool(x)
    if op == "gmaxpool":
        return b.global_maxpool(x)
    if op in ("add", "mul"):
        other_shape = (shape[0], channels, 1, 1) if get("b") and len(shape) == 4 else shape
        other = chain.residual(x, get("r"), other_shape) or chain.operand(x, other_shape)
        return b.add(x, other) if op == "add" else b.mul(x, other)
    if op == "concat":
        c2 = get("c2", channels)
        cat_shape = (shape[0], c2, *shape[2:])
        other = chain.residual(x, get("r"), cat_shape) or chain.operand(x, cat_shape)
        return b.concat([x, other])
    if op == "bn":
        return b.bn(x)
    if op == "relu":
        return b.relu(x)
    if op == "relu6":
        return b.relu6(x)
    if op == "sigmoid":
        return b.sigmoid(x)
    if op == "tanh":
        return b.act(x, "Tanh")
    if op == "hardswish":
        return b.hardswish(x)
    if op == "hardsigmoid":
        return b.hardsigmoid(x)
    if op == "flatten":
        return b.flatten(x)
    if op == "padding":
        return _padding(b, x)
    return _apply_token(chain, op, get, x)


def _apply_token(chain: _Chain, op: str, get: Any, x: str) -> str:
    """The transformer parts (token tensors ``(N, t, c)``, per-head tensors ``(N, h, t, c)``),
    built with the network builder's own methods, as the zoo's transformers are."""
    b = chain.b
    shape = b.shape(x)
    if op == "embed":
        if x != b.input or len(shape) != 2:
            raise ValueError("embed must be the first part (it reads the token ids)")
        return b.embedding(x, get("v", DEFAULT_VOCAB), int(chain.spec_c))
    if len(shape) < 3:
        raise ValueError(f"{op} needs a token tensor (give t), got shape {shape}")
    if op == "linear":
        return b.linear(x, get("f", shape[-1]))
    if op == "bmm":
        other = chain.operand(x, (*shape[:-2], shape[-1], get("f", shape[-2])))
        return b.batched_matmul(x, other)
    if op == "ln":
        return b.layernorm(x)
    if op == "skipln":  # residual Add + LayerNorm: onnxruntime's SkipLayerNormalization
        other = chain.residual(x, get("r"), shape) or chain.operand(x, shape)
        return b.layernorm(b.add(x, other))
    if op == "rmsnorm":
        return b.rmsnorm(x)
    if op == "softmax":
        return b.softmax(x, axis=-1)
    if op == "gelu":
        return b.gelu(x)
    if op == "scale":  # attention's scores / sqrt(head_dim), a Div by a constant
        return b.add_layer("Div", [x], {"scalar_inputs": ((1, math.sqrt(shape[-1])),)})[0]
    if op == "transpose":
        perm = list(range(len(shape)))
        perm[-2:] = perm[-1], perm[-2]
        return b.transpose(x, perm)
    if op == "merge":
        if len(shape) != 4:
            raise ValueError(f"merge needs a per-head tensor (N, h, t, c), got shape {shape}")
        n, heads, t, hd = shape
        return b.reshape(b.transpose(x, (0, 2, 1, 3)), (n, t, heads * hd))
    if op in ("heads", "reshape"):
        if len(shape) != 3:
            raise ValueError(f"{op} needs a token tensor (N, t, c), got shape {shape}")
        n, t, d = shape
        e = get("e", 1)
        if d % e:
            raise ValueError(f"{op}: heads e={e} must divide the width c={d}")
        y = b.reshape(x, (n, t, e, d // e))
        return y if op == "reshape" else b.transpose(y, (0, 2, 1, 3))
    raise ValueError(f"unknown op {op!r}")  # unreachable: parse_kernel checks ops


def build_kernel(spec: KernelSpec, batch: int = 1, name: str | None = None) -> NetworkGraph:
    """The IR of a kernel benchmark; layer names are ``p{i}_{op}`` after the chain position."""
    params = dict(spec.params)
    c = params["c"]
    h = params.get("h", 1)
    w = params.get("w", h)
    first = next((p.op for p in spec.parts if p.op != "padding"), "padding")
    dtype = "float32"
    if "t" in params:
        if "w" in params:
            raise ValueError("w has no meaning for token tensors (t given)")
        t = params["t"]
        if first == "embed":
            in_shape: Shape = (batch, t)
            dtype = "int64"
        else:
            in_shape = (batch, params["h"], t, c) if "h" in params else (batch, t, c)
    elif first in TOKEN_OPS:
        raise ValueError(f"{first} reads token tensors: give the tokens t")
    elif first == "fc" and "h" not in params:
        in_shape = (batch, c)
    else:
        in_shape = (batch, c, h, w)
    ref = name or format_kernel(spec)
    meta = {"family": SCHEME, "kernel_ops": list(spec.ops), "kernel_params": params}
    b = NetBuilder(ref, in_shape, meta=meta, input_dtype=dtype)
    chain = _Chain(b, c)
    x = b.input
    for i, part in enumerate(spec.parts):
        if part.op != "padding" and all(p.op == "padding" for p in spec.parts[:i]):
            chain.start = x
        before = len(b.layers)
        _apply(chain, spec, part, x)
        new = b.layers[before:]
        for j, layer in enumerate(new):
            _rename(b, layer, f"p{i}_{part.op}" + ("" if j == len(new) - 1 else f"_{j}"))
        x = b.layers[-1].outputs[0]
        chain.part_outputs.append(x)
    for layer in b.layers:
        if min(layer.output_shape) < 1:
            raise ValueError(f"layer {layer.name} has an empty output {layer.output_shape}")
    graph = b.build([x])
    graph.inputs.update(chain.extra_inputs)
    return graph


def _rename(b: NetBuilder, layer: Layer, new: str) -> None:
    """Rename a layer and its single output tensor (names say which part a layer is)."""
    old_out = layer.outputs
    layer.name = new
    if len(old_out) == 1:
        layer.outputs = (new,)
        b.shapes[new] = b.shapes.pop(old_out[0])
        for other in b.layers:
            if old_out[0] in other.inputs:
                other.inputs = tuple(new if t == old_out[0] else t for t in other.inputs)


def part_layers(graph: NetworkGraph) -> dict[int, list[int]]:
    """Chain position -> indices of the IR layers it built (``p{i}_...`` names)."""
    out: dict[int, list[int]] = {}
    for li, layer in enumerate(graph.layers):
        m = re.match(r"p(\d+)_", layer.name)
        if m:
            out.setdefault(int(m.group(1)), []).append(li)
    return out


def _resolve(body: str, opts: ResolveOptions) -> NetworkGraph:
    spec = parse_kernel(body)
    return build_kernel(spec, batch=opts.batch)


def resolve_kernel(reference: str, batch: int = 1) -> tuple[KernelSpec, NetworkGraph]:
    """Parse and build a ``kernel:`` reference (raises naming it)."""
    if not reference.startswith(SCHEME + ":"):
        raise NetworkReferenceError(f"{reference!r} is not a {SCHEME}: reference")
    spec = parse_kernel(reference[len(SCHEME) + 1 :])
    return spec, build_kernel(spec, batch=batch, name=format_kernel(spec))


def canonical(reference: str) -> str:
    """The canonical form of a ``kernel:`` reference (other references pass through)."""
    if not is_kernel(reference):
        return reference
    return format_kernel(parse_kernel(reference[len(SCHEME) + 1 :]))


def is_kernel(reference: Any) -> bool:
    return isinstance(reference, str) and reference.startswith(SCHEME + ":")


def shape_params(shape: Shape) -> Mapping[str, int]:
    """Global parameters describing a tensor shape: ``c`` (rank 2), ``t, c`` (rank 3, a token
    tensor) or ``c, h, w`` (rank 4; a per-head tensor has the same elements and layout)."""
    if len(shape) == 2:
        return {"c": int(shape[1])}
    if len(shape) == 3:
        return {"t": int(shape[1]), "c": int(shape[2])}
    if len(shape) == 4:
        return {"c": int(shape[1]), "h": int(shape[2]), "w": int(shape[3])}
    raise ValueError(f"benchmark tensors are 2-D, 3-D or 4-D, got shape {shape}")


#: The ``kernel:`` reference scheme (registered in ``references.BUILTIN_SCHEMES``).
KERNEL_SCHEME = Scheme(
    SCHEME,
    _resolve,
    validate=parse_kernel,
    canonical=lambda body: format_kernel(parse_kernel(body)),
    help="micro-kernel benchmark, e.g. kernel:conv?c=64&h=56&f=64&k=3 or "
    "kernel:conv+bn+relu?c=32&h=28&k=3",
)
