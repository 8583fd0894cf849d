"""Generated multi-layer blocks (``block:``): the in-context training networks of ``kernel``.

The kernel-level predictor learns kernel times *inside networks*, so its training data are
generated networks whose kernels look like those of real CNNs and transformers, built here as
ONNX graphs with the op patterns PyTorch's exporter writes (a 3-D ``Linear`` is MatMul + Add,
attention is Reshape/Transpose/MatMul/Softmax, GELU is the Erf form, RMSNorm is
Pow/ReduceMean/Add/Sqrt/Div/Mul, ...), so that onnxruntime applies the same fusions to them as
to exported real networks. A reference names one block family and its parameters::

    block:transformer?d=256&h=4&s=128&ff=4&n=1&act=gelu&norm=ln&causal=0
    block:mbconv?h=28&c=40&e=6&k=5&s=1&se=1&act=hswish&n=2
    block:bottleneck?h=56&c=256&m=64&g=32&s=1&n=2

Families (keys and defaults in :data:`FAMILIES`): ``transformer`` (encoder/decoder layers:
pre/post-norm, LayerNorm or RMSNorm, GELU/tanh-GELU/ReLU/SiLU/SwiGLU feed-forward, causal
mask, rotary embeddings, token embedding, classifier head, ``roll=1``: Swin's cyclic token
shift before and after each layer as Slice/Slice/Concat, ``qkv=1``: one Q/K/V projection
split, ``qkv=2``: timm's reshape to (B, N, 3, heads, head_dim) indexed by Gathers), ``vit``
(patch embedding convolution + transformer layers; ``pm=1``: Swin's patch merging first, four
strided Slices, Concat, LayerNorm, Linear), ``basic`` and ``bottleneck`` residual blocks
(grouped convolutions when ``g > 1``; sampled with ResNeXt's and RegNet's group widths),
``mbconv`` (inverted residual, depthwise, squeeze-excitation),
``convnext`` (7x7 depthwise, channel LayerNorm via transposes, MLP), ``dense`` (DenseNet
concatenation), ``shuffle`` (channel shuffle: Split/Reshape/Transpose/Concat) and ``unet``
(pooling down, Resize or ConvTranspose up, Concat skip). References are canonical (sorted
keys, defaults dropped). :func:`sample_blocks` draws references with a cost cap; the
``blocks`` search space registers it.

Weights are seeded random values (only shapes matter for latency); the reference is the
network's identity in the store.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from latlab.datasets.references import ResolveOptions, Scheme
from latlab.datasets.spaces.base import SearchSpace
from latlab.encoders.ir import NetworkGraph
from latlab.errors import NetworkReferenceError

OPSET = 17

#: Family -> default parameters (every key a family accepts; values are ints or strings).
FAMILIES: dict[str, dict[str, Any]] = {
    "transformer": {
        "d": 256, "h": 4, "s": 128, "ff": 4, "n": 1, "act": "gelu", "norm": "ln", "causal": 0,
        "pre": 1, "qkv": 0, "bias": 1, "rope": 0, "embed": 0, "head": 0, "b": 1, "roll": 0,
    },
    "vit": {"img": 224, "p": 16, "d": 384, "h": 6, "ff": 4, "n": 1, "act": "gelu", "head": 0,
            "pm": 0},
    "basic": {"h": 56, "c": 64, "f": 0, "s": 1, "k": 3, "n": 1, "act": "relu"},
    "bottleneck": {"h": 56, "c": 256, "m": 64, "g": 1, "s": 1, "n": 1, "se": 0},
    "mbconv": {"h": 28, "c": 40, "f": 0, "e": 6, "k": 3, "s": 1, "se": 0, "act": "relu6", "n": 1},
    "convnext": {"h": 56, "c": 96, "k": 7, "n": 1, "down": 0},
    "dense": {"h": 28, "c": 64, "gr": 32, "n": 4},
    "shuffle": {"h": 28, "c": 116, "s": 1, "n": 1},
    "unet": {"h": 64, "c": 32, "up": "resize", "levels": 2},
    "plain": {"h": 56, "c": 64, "f": 0, "n": 2, "k": 3, "pool": 1, "head": 0, "fc": 0,
              "gpool": "gap"},
}  # fmt: skip

_STRINGS = {"act", "norm", "up", "gpool"}
_ACTS = ("relu", "relu6", "hswish", "silu", "sigmoid", "gelu", "gelu_tanh", "swiglu")


def parse_block(body: str) -> tuple[str, dict[str, Any]]:
    """``FAMILY?k=v&...`` -> (family, full parameters); raises naming a bad key or value."""
    family, _, query = body.partition("?")
    if family not in FAMILIES:
        raise NetworkReferenceError(
            f"unknown block family {family!r} in block:{body} (known: {', '.join(FAMILIES)})"
        )
    params = dict(FAMILIES[family])
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in params:
            raise NetworkReferenceError(
                f"unknown key {key!r} for block:{family} (keys: {', '.join(params)})"
            )
        if key in _STRINGS:
            params[key] = value
        else:
            try:
                params[key] = int(value)
            except ValueError:
                raise NetworkReferenceError(
                    f"block:{body}: {key}={value!r} is not an integer"
                ) from None
            if params[key] < 0:
                raise NetworkReferenceError(f"block:{body}: {key} must be >= 0")
    if params.get("act", "relu") not in _ACTS:
        raise NetworkReferenceError(f"block:{body}: act must be one of {', '.join(_ACTS)}")
    _check(family, params, body)
    return family, params


def _check(family: str, p: dict[str, Any], body: str) -> None:
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise NetworkReferenceError(f"block:{body}: {what}")

    if family == "transformer":
        need(p["d"] >= 8 and p["h"] >= 1 and p["d"] % p["h"] == 0, "d must be a multiple of h")
        need(p["s"] >= 1 and p["n"] >= 1 and p["ff"] >= 1, "s, n and ff must be >= 1")
        need(p["norm"] in ("ln", "rms"), "norm must be ln or rms")
        need(not p["rope"] or (p["d"] // p["h"]) % 2 == 0, "rope needs an even head size")
        need(p["qkv"] in (0, 1, 2), "qkv must be 0, 1 (Split) or 2 (timm's indexed reshape)")
    elif family == "vit":
        need(p["img"] % p["p"] == 0 and p["d"] % p["h"] == 0, "img % p and d % h must be 0")
        need(not p["pm"] or (p["img"] // p["p"]) % 2 == 0, "pm needs an even patch grid")
    elif family == "unet":
        need(p["up"] in ("resize", "convt"), "up must be resize or convt")
        need(p["h"] % (1 << p["levels"]) == 0, "h must be divisible by 2**levels")
    elif family == "bottleneck":
        need(p["g"] >= 1 and p["m"] % p["g"] == 0, "m must be a multiple of g")
    elif family == "shuffle":
        need(p["c"] % 2 == 0, "c must be even")
    elif family == "plain":
        need(p["gpool"] in ("gap", "mean", "flatten"), "gpool must be gap, mean or flatten")
    for key in ("h", "c", "n", "k", "s", "e", "m", "gr"):
        if key in p and key != "f":
            need(p[key] >= 1, f"{key} must be >= 1")


def format_block(family: str, params: dict[str, Any]) -> str:
    """The canonical reference: keys sorted, defaults dropped."""
    full = dict(FAMILIES[family])
    full.update(params)
    diff = {k: v for k, v in sorted(full.items()) if FAMILIES[family][k] != v}
    query = "&".join(f"{k}={v}" for k, v in diff.items())
    return f"block:{family}" + (f"?{query}" if query else "")


# --------------------------------------------------------------------------- graph building


class _G:
    """A small ONNX graph writer (names, seeded initializers, node helpers)."""

    def __init__(self, seed: int, weights: bool = True) -> None:
        self.rng = np.random.default_rng(seed)
        self.weights = weights
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def weight(self, shape: tuple[int, ...], scale: float = 0.05) -> str:
        from onnx import numpy_helper

        name = self.name("w")
        if not self.weights:  # shapes only (the IR): a typed initializer without data
            from onnx import TensorProto

            t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
            self.inits.append(t)
            return name
        arr = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> Any:
        from onnx import helper

        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=outs[0] + "_node", **attrs))
        return outs[0] if n_out == 1 else outs

    # -- layers ------------------------------------------------------------------------------

    def conv(
        self, x: str, c: int, f: int, k: int = 1, s: int = 1, g: int = 1, bias: bool = True
    ) -> str:
        ins = [x, self.weight((f, c // g, k, k), math.sqrt(2 / (c // g * k * k)))]
        if bias:
            ins.append(self.weight((f,), 0.01))
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4,
                       group=g)  # fmt: skip

    def act(self, x: str, kind: str) -> str:
        if kind == "relu":
            return self.op("Relu", [x])
        if kind == "relu6":
            return self.op("Clip", [x, self.const(0.0), self.const(6.0)])
        if kind == "hswish":
            return self.op("HardSwish", [x])
        if kind == "sigmoid":
            return self.op("Sigmoid", [x])
        if kind in ("silu", "swiglu"):
            return self.op("Mul", [x, self.op("Sigmoid", [x])])
        if kind == "gelu":
            e = self.op("Erf", [self.op("Div", [x, self.const(math.sqrt(2.0))])])
            return self.op("Mul", [self.op("Mul", [x, self.op("Add", [e, self.const(1.0)])]),
                                   self.const(0.5)])  # fmt: skip
        if kind == "gelu_tanh":
            cube = self.op("Mul", [self.op("Pow", [x, self.const(3.0)]), self.const(0.044715)])
            inner = self.op("Mul", [self.op("Add", [x, cube]), self.const(math.sqrt(2 / math.pi))])
            t = self.op("Add", [self.op("Tanh", [inner]), self.const(1.0)])
            return self.op("Mul", [self.op("Mul", [x, self.const(0.5)]), t])
        raise NetworkReferenceError(f"unknown activation {kind!r}")

    def linear(self, x: str, c: int, f: int, bias: bool = True) -> str:
        y = self.op("MatMul", [x, self.weight((c, f), 1 / math.sqrt(c))])
        return self.op("Add", [y, self.weight((f,), 0.01)]) if bias else y

    def norm(self, x: str, d: int, kind: str) -> str:
        if kind == "ln":
            return self.op("LayerNormalization", [x, self.weight((d,), 1.0), self.weight((d,))],
                           axis=-1, epsilon=1e-5)  # fmt: skip
        ms = self.op("ReduceMean", [self.op("Pow", [x, self.const(2.0)])], axes=[-1], keepdims=1)
        r = self.op("Sqrt", [self.op("Add", [ms, self.const(1e-6)])])
        return self.op("Mul", [self.op("Div", [x, r]), self.weight((d,), 1.0)])

    def reshape(self, x: str, shape: list[int]) -> str:
        return self.op("Reshape", [x, self.const(shape, np.int64)])

    def se(self, x: str, c: int, r: int = 4) -> str:
        p = self.op("GlobalAveragePool", [x])
        m = max(8, c // r)
        z = self.act(self.conv(p, c, m), "relu")
        return self.op("Mul", [x, self.op("HardSigmoid", [self.conv(z, m, c)])])


def _rope(g: _G, x: str, b: int, heads: int, s: int, hd: int) -> str:
    """Rotary embedding as exported: rotate halves with Slice/Neg/Concat, Mul cos/sin, Add."""
    half = hd // 2
    cos = g.weight((s, hd), 1.0)
    sin = g.weight((s, hd), 1.0)
    x1 = g.op("Slice", [x, g.const([0], np.int64), g.const([half], np.int64),
                        g.const([3], np.int64)])  # fmt: skip
    x2 = g.op("Slice", [x, g.const([half], np.int64), g.const([hd], np.int64),
                        g.const([3], np.int64)])  # fmt: skip
    rot = g.op("Concat", [g.op("Neg", [x2]), x1], axis=-1)
    return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rot, sin])])


def _attention(g: _G, x: str, p: dict[str, Any], b: int, s: int, d: int) -> str:
    h = p["h"]
    hd = d // h
    bias = bool(p["bias"])
    if p["qkv"] == 2:  # timm's qkv.reshape(B, N, 3, h, hd) indexed by three Gathers (which
        # onnxruntime turns into a Split and three Squeezes), heads merged back for the rest
        qkv = g.reshape(g.linear(x, d, 3 * d, bias), [b, s, 3, h, hd])
        q, k, v = (g.reshape(g.op("Gather", [qkv, g.const(i, np.int64)], axis=2), [b, s, d])
                   for i in range(3))  # fmt: skip
    elif p["qkv"]:
        qkv = g.linear(x, d, 3 * d, bias)
        q, k, v = g.op("Split", [qkv, g.const([d, d, d], np.int64)], n_out=3, axis=-1)
    else:
        q, k, v = (g.linear(x, d, d, bias) for _ in range(3))
    q = g.op("Transpose", [g.reshape(q, [b, s, h, hd])], perm=[0, 2, 1, 3])
    v = g.op("Transpose", [g.reshape(v, [b, s, h, hd])], perm=[0, 2, 1, 3])
    if p.get("rope"):
        k = g.op("Transpose", [g.reshape(k, [b, s, h, hd])], perm=[0, 2, 1, 3])
        q = _rope(g, q, b, h, s, hd)
        k = g.op("Transpose", [_rope(g, k, b, h, s, hd)], perm=[0, 1, 3, 2])
    else:
        k = g.op("Transpose", [g.reshape(k, [b, s, h, hd])], perm=[0, 2, 3, 1])
    scores = g.op("Div", [g.op("MatMul", [q, k]), g.const(math.sqrt(hd))])
    if p.get("causal"):
        mask = np.triu(np.full((s, s), -1e4, dtype=np.float32), 1)
        scores = g.op("Add", [scores, g.const(mask)])
    att = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    out = g.reshape(g.op("Transpose", [att], perm=[0, 2, 1, 3]), [b, s, d])
    return g.linear(out, d, d, bias)


def _mlp(g: _G, x: str, d: int, ff: int, act: str, bias: bool) -> str:
    if act == "swiglu":
        gate = g.act(g.linear(x, d, ff, False), "silu")
        return g.linear(g.op("Mul", [gate, g.linear(x, d, ff, False)]), ff, d, False)
    return g.linear(g.act(g.linear(x, d, ff, bias), act), ff, d, bias)


def _encoder_layer(g: _G, x: str, p: dict[str, Any], b: int, s: int, d: int) -> str:
    ff = d * p["ff"]
    norm = p.get("norm", "ln")
    bias = bool(p.get("bias", 1))
    if p.get("pre", 1):
        x = g.op("Add", [x, _attention(g, g.norm(x, d, norm), p, b, s, d)])
        return g.op("Add", [x, _mlp(g, g.norm(x, d, norm), d, ff, p["act"], bias)])
    x = g.norm(g.op("Add", [x, _attention(g, x, p, b, s, d)]), d, norm)
    return g.norm(g.op("Add", [x, _mlp(g, x, d, ff, p["act"], bias)]), d, norm)


def _roll(g: _G, x: str, n: int, shift: int) -> str:
    """``torch.roll(x, shift, 1)`` over ``n`` tokens as exported: two Slices and a Concat."""
    k = shift % n
    if k == 0:
        return x
    i64 = np.int64
    head = g.op("Slice", [x, g.const([n - k], i64), g.const([n], i64), g.const([1], i64)])
    tail = g.op("Slice", [x, g.const([0], i64), g.const([n - k], i64), g.const([1], i64)])
    return g.op("Concat", [head, tail], axis=1)


def _transformer(g: _G, p: dict[str, Any]) -> tuple[list[Any], str]:
    from onnx import TensorProto, helper

    b, s, d = p["b"], p["s"], p["d"]
    if p["embed"]:
        inp = helper.make_tensor_value_info("input", TensorProto.INT64, [b, s])
        x = g.op("Gather", [g.weight((p["embed"], d)), "input"], axis=0)
        x = g.op("Add", [x, g.weight((s, d))])
    else:
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [b, s, d])
        x = "input"
    for _ in range(p["n"]):
        if p["roll"]:  # Swin's cyclic shift of the tokens and back (Slice, Slice, Concat)
            x = _roll(g, _encoder_layer(g, _roll(g, x, s, s // 2), p, b, s, d), s, s - s // 2)
        else:
            x = _encoder_layer(g, x, p, b, s, d)
    if p["head"]:
        x = g.norm(x, d, p["norm"])
        x = g.linear(g.op("ReduceMean", [x], axes=[1], keepdims=0), d, p["head"])
    return [inp], x


def _vit(g: _G, p: dict[str, Any]) -> tuple[list[Any], str]:
    from onnx import TensorProto, helper

    n_patch = (p["img"] // p["p"]) ** 2
    d = p["d"]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, p["img"], p["img"]])
    x = g.op("Conv", ["input", g.weight((d, 3, p["p"], p["p"])), g.weight((d,))],
             kernel_shape=[p["p"]] * 2, strides=[p["p"]] * 2)  # fmt: skip
    x = g.op("Transpose", [g.reshape(x, [1, d, n_patch])], perm=[0, 2, 1])
    if p["pm"]:  # Swin's patch merging: x[:, 0::2, 0::2], ... concatenated, LN, 4d -> d
        side = p["img"] // p["p"]
        grid = g.reshape(x, [1, side, side, d])
        i64 = np.int64
        parts = [g.op("Slice", [grid, g.const([r, c], i64), g.const([side, side], i64),
                                g.const([1, 2], i64), g.const([2, 2], i64)])
                 for r, c in ((0, 0), (1, 0), (0, 1), (1, 1))]  # fmt: skip
        n_patch //= 4
        x = g.reshape(g.op("Concat", parts, axis=-1), [1, n_patch, 4 * d])
        x = g.linear(g.norm(x, 4 * d, "ln"), 4 * d, d, False)
    x = g.op("Concat", [g.weight((1, 1, d)), x], axis=1)
    s = n_patch + 1
    x = g.op("Add", [x, g.weight((1, s, d))])
    q = {"h": p["h"], "ff": p["ff"], "act": p["act"], "qkv": 1, "bias": 1, "pre": 1}
    for _ in range(p["n"]):
        x = _encoder_layer(g, x, q, 1, s, d)
    if p["head"]:
        x = g.norm(x, d, "ln")
        cls = g.op("Gather", [x, g.const(0, np.int64)], axis=1)
        x = g.op("Gemm", [cls, g.weight((p["head"], d)), g.weight((p["head"],))], transB=1)
    return [inp], x


def _image(g: _G, p: dict[str, Any], c: int) -> tuple[Any, str]:
    """An RGB input and a stem convolution to ``c`` channels, as networks start: the block
    then runs inside onnxruntime's blocked layout (a graph input is plain NCHW, and a residual
    Add of a plain tensor is not fused into a convolution)."""
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, p["h"], p["h"]])
    return inp, g.act(g.conv("input", 3, c, 3), "relu")


def _basic(g: _G, p: dict[str, Any]) -> tuple[list[Any], str]:
    inp, x = _image(g, p, p["c"])
    c = p["c"]
    for i in range(p["n"]):
        f = p["f"] or c
        s = p["s"] if i == 0 else 1
        y = g.act(g.conv(x, c, f, p["k"], s), p["act"])
        y = g.conv(y, f, f, p["k"])
        short = x if (s == 1 and f == c) else g.conv(x, c, f, 1, s)
        x = g.act(g.op("Add", [y, short]), p["act"])
        c = f
    return [inp], x


def _bottleneck(g: _G, p: dict[str, Any]) -> tuple[list[Any], str]:
    inp, x = _image(g, p, p["c"])
    c, m = p["c"], p["m"]
    for i in range(p["n"]):
        s = p["s"] if i == 0 else 1
        y = g.act(g.conv(x, c, m), "relu")
        y = g.act(g.conv(y, m, m, 3, s, p["g"]), "relu")
        y = g.conv(y, m, c)
        if p["se"]:
            y = g.se(y, c)
        short = x if s == 1 else g.conv(x, c, c, 1, s)
        x = g.act(g.op("Add", [y, short]), "relu")
    return [inp], x


def _mbconv(g: _G, p: dict[str, Any]) -> tuple[list[Any], str]:
    inp, x = _image(g, p, p["c"])
    c = p["c"]
    for i in range(p["n"]):
        f = p["f"] or c
        s = p["s"] if i == 0 else 1
        m = c * p["e"]
        y = g.act(g.conv(x, c, m), p["act"]) if p["e"] > 1 else x
        y = g.act(g.conv(y, m, m, p["k"], s, m), p["act"])
        if p["se"]:
            y = g.se(y, m)
        y = g.conv(y, m, f)
        x = g.op("Add", [y, x]) if (s == 1 and f == c) else y
        c = f
    return [inp], x


def _convnext(g: _G, p: dict[str, Any]) -> tuple[list[Any], str]:
    inp, x = _image(g, p, p["c"])
    c, h = p["c"], p["h"]
    if p["down"]:
        x = g.op("Transpose", [g.norm(g.op("Transpose", [x], perm=[0, 2, 3, 1]), c, "ln")],
                 perm=[0, 3, 1, 2])  # fmt: skip
        x = g.conv(x, c, 2 * c, 2, 2)
        c, h = 2 * c, h // 2
    for _ in range(p["n"]):
        y = g.conv(x, c, c, p["k"], 1, c)
        y = g.norm(g.op("Transpose", [y], perm=[0, 2, 3, 1]), c, "ln")
        y = g.linear(g.act(g.linear(y, c, 4 * c), "gelu"), 4 * c, c)
        y = g.op("Mul", [y, g.weight((c,), 1.0)])
        x = g.op("Add", [x, g.op("Transpose", [y], perm=[0, 3, 1, 2])])
    return [inp], x


def _dense(g: _G, p: dict[str, Any]) -> tuple[list[Any], str]:
    inp, x = _image(g, p, p["c"])
    c = p["c"]
    for _ in range(p["n"]):
        y = g.conv(g.act(x, "relu"), c, 4 * p["gr"])
        y = g.conv(g.act(y, "relu"), 4 * p["gr"], p["gr"], 3)
        x = g.op("Concat", [x, y], axis=1)
        c += p["gr"]
    x = g.op("AveragePool", [g.conv(g.act(x, "relu"), c, c // 2)], kernel_shape=[2, 2],
             strides=[2, 2])  # fmt: skip
    return [inp], x


def _shuffle(g: _G, p: dict[str, Any]) -> tuple[list[Any], str]:
    inp, x = _image(g, p, p["c"])
    c, h = p["c"], p["h"]
    half = c // 2
    for i in range(p["n"]):
        s = p["s"] if i == 0 else 1
        if s == 1:
            a, b = g.op("Split", [x, g.const([half, half], np.int64)], n_out=2, axis=1)
            left = a
        else:
            left = g.conv(g.conv(x, c, c, 3, 2, c), c, half)
            b = x
            h = (h + 1) // 2
        cb = half if s == 1 else c
        y = g.act(g.conv(b, cb, half), "relu")
        y = g.act(g.conv(g.conv(y, half, half, 3, s, half), half, half), "relu")
        x = g.op("Concat", [left, y], axis=1)
        x = g.reshape(g.op("Transpose", [g.reshape(x, [1, 2, half, h, h])], perm=[0, 2, 1, 3, 4]),
                      [1, c, h, h])  # fmt: skip
    return [inp], x


def _unet(g: _G, p: dict[str, Any]) -> tuple[list[Any], str]:
    inp, x = _image(g, p, p["c"])
    c = p["c"]
    skips = []
    for _ in range(p["levels"]):
        x = g.act(g.conv(x, c, c, 3), "relu")
        skips.append((x, c))
        x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        x = g.act(g.conv(x, c, 2 * c, 3), "relu")
        c *= 2
    for skip, cs in reversed(skips):
        if p["up"] == "resize":
            x = g.op("Resize", [x, "", g.const([1.0, 1.0, 2.0, 2.0])], mode="nearest")
            x = g.conv(x, c, cs)
        else:
            x = g.op("ConvTranspose", [x, g.weight((c, cs, 2, 2)), g.weight((cs,))],
                     kernel_shape=[2, 2], strides=[2, 2])  # fmt: skip
        x = g.act(g.conv(g.op("Concat", [x, skip], axis=1), 2 * cs, cs, 3), "relu")
        c = cs
    return [inp], x


def _plain(g: _G, p: dict[str, Any]) -> tuple[list[Any], str]:
    """VGG/AlexNet-style: conv-ReLU chain, max pooling, and a classifier head (global average
    pooling, ReduceMean or flattening, then fully connected layers with ReLU in between)."""
    inp, x = _image(g, p, p["c"])
    c, h = p["c"], p["h"]
    f = p["f"] or c
    for _ in range(p["n"]):
        x = g.act(g.conv(x, c, f, p["k"]), "relu")
        c = f
    if p["pool"]:
        x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        h //= 2
    if p["head"]:
        if p["gpool"] == "gap":
            x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
            width = c
        elif p["gpool"] == "mean":
            x = g.op("ReduceMean", [x], axes=[2, 3], keepdims=0)
            width = c
        else:
            x = g.op("Flatten", [x])
            width = c * h * h
        if p["fc"]:
            x = g.act(g.op("Gemm", [x, g.weight((p["fc"], width)), g.weight((p["fc"],))],
                           transB=1), "relu")  # fmt: skip
            width = p["fc"]
        x = g.op("Gemm", [x, g.weight((p["head"], width)), g.weight((p["head"],))], transB=1)
    return [inp], x


_BUILDERS: dict[str, Callable[[_G, dict[str, Any]], tuple[list[Any], str]]] = {
    "transformer": _transformer,
    "vit": _vit,
    "basic": _basic,
    "bottleneck": _bottleneck,
    "mbconv": _mbconv,
    "convnext": _convnext,
    "dense": _dense,
    "shuffle": _shuffle,
    "unet": _unet,
    "plain": _plain,
}


def block_model(body: str, seed: int = 0, *, weights: bool = True) -> Any:
    """The ``onnx.ModelProto`` of ``block:BODY`` (seeded weights, static shapes).

    ``weights=False`` leaves the weight initializers without data (shapes only): what the IR
    import needs, a hundred times faster for wide blocks than drawing the weights.
    """
    import onnx
    from onnx import TensorProto, helper

    family, params = parse_block(body)
    g = _G(seed, weights)
    inputs, out = _BUILDERS[family](g, params)
    output = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    graph = helper.make_graph(g.nodes, family, inputs, [output], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    return model


def _resolve(body: str, opts: ResolveOptions) -> NetworkGraph:
    from latlab.encoders.onnx_import import from_onnx

    family, params = parse_block(body)
    ref = format_block(family, params)
    return from_onnx(
        block_model(body, weights=False),
        name=ref,
        meta={"reference": ref, "family": f"block-{family}", "generated": True},
    )


def _model(body: str, opts: ResolveOptions) -> Any:
    return block_model(body)


def _validate(body: str) -> None:
    parse_block(body)


#: The ``block:`` reference scheme (registered in ``references.BUILTIN_SCHEMES``).
SCHEME = Scheme(
    "block",
    _resolve,
    validate=_validate,
    canonical=lambda body: format_block(*parse_block(body)),
    help="a generated CNN or transformer block: block:FAMILY?key=value&...",
    model=_model,
)


# --------------------------------------------------------------------------- sampling


def _affordable(ref: str, max_macs: float) -> bool:
    """Whether a block stays within ``max_macs`` and :data:`MAX_PARAMS`."""
    from latlab.datasets.references import resolve

    totals = resolve(ref).totals
    return float(totals.macs) <= max_macs and float(totals.params) <= MAX_PARAMS


def _pick(rng: np.random.Generator, values: tuple[Any, ...]) -> Any:
    return values[int(rng.integers(len(values)))]


def _log_int(rng: np.random.Generator, lo: int, hi: int, mult: int = 1) -> int:
    v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return max(mult, round(v / mult) * mult)


def random_params(family: str, rng: np.random.Generator) -> dict[str, Any]:
    """One random configuration of ``family`` (shapes of real networks; see module doc)."""
    if family == "transformer":
        h = _pick(rng, (1, 2, 4, 6, 8, 12, 16, 32))
        hd = _pick(rng, (32, 64, 64, 64, 128))
        d = min(4096, max(64, h * hd))
        h = d // hd if d % hd == 0 else h
        act = _pick(rng, ("gelu", "gelu", "gelu_tanh", "relu", "silu", "swiglu"))
        llama = act == "swiglu"
        return {
            "d": d, "h": h, "s": _log_int(rng, 16, 1024, 8), "ff": _pick(rng, (2, 3, 4, 4)),
            "n": 1, "act": act, "norm": "rms" if llama or rng.random() < 0.15 else "ln",
            "causal": int(llama or rng.random() < 0.35), "pre": int(llama or rng.random() < 0.7),
            "qkv": _pick(rng, (0, 0, 0, 0, 1, 1, 2)), "bias": int(not llama), "rope": int(llama),
            "embed": _pick(rng, (0, 0, 0, 1000, 8000)), "head": _pick(rng, (0, 0, 0, 1000)),
            "roll": int(rng.random() < 0.15),
        }  # fmt: skip
    if family == "vit":
        h = _pick(rng, (3, 4, 6, 8, 12, 16))
        return {"img": _pick(rng, (96, 128, 160, 224)), "p": _pick(rng, (8, 16, 16, 32)),
                "d": h * 64, "h": h, "ff": 4, "head": _pick(rng, (0, 1000, 1000)),
                "pm": int(rng.random() < 0.3)}  # fmt: skip
    h = _pick(rng, (7, 14, 14, 28, 28, 56, 56, 112))
    ch = (16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 256, 320, 384, 512)
    if family == "basic":
        c = _pick(rng, ch)
        return {"h": h, "c": c, "f": _pick(rng, (0, 0, 2 * c)), "s": _pick(rng, (1, 1, 2)),
                "n": _pick(rng, (1, 2)), "k": _pick(rng, (3, 3, 5))}  # fmt: skip
    if family == "bottleneck":
        # grouped 3x3 convolutions as ResNeXt (32 groups of 4-8) and RegNet (group widths
        # 8-64, 24 off the SIMD block: onnxruntime keeps those out of its NCHWc layout) have
        if rng.random() < 0.3:
            g, m = 1, _pick(rng, (32, 64, 128, 256, 512))
        else:
            width = _pick(rng, (4, 8, 16, 24, 32, 48, 64))
            g = _pick(rng, (2, 4, 8, 16, 32, 64))
            m = min(1024, g * width)
            g = m // width
        return {"h": h, "c": _pick(rng, (128, 256, 512, 1024, 2048)), "m": m, "g": g,
                "s": _pick(rng, (1, 1, 2)), "se": int(rng.random() < 0.3),
                "n": _pick(rng, (1, 1, 2))}  # fmt: skip
    if family == "mbconv":
        return {"h": h, "c": _pick(rng, ch[:10]), "e": _pick(rng, (1, 3, 4, 6, 6)),
                "k": _pick(rng, (3, 3, 5, 7)), "s": _pick(rng, (1, 1, 2)),
                "se": int(rng.random() < 0.5), "act": _pick(rng, ("relu", "relu6", "hswish",
                                                                  "silu")),
                "n": _pick(rng, (1, 2))}  # fmt: skip
    if family == "convnext":
        return {"h": _pick(rng, (7, 14, 28, 56)), "c": _pick(rng, (48, 96, 192, 384, 768)),
                "down": int(rng.random() < 0.25)}  # fmt: skip
    if family == "dense":
        return {"h": _pick(rng, (7, 14, 28, 56)), "c": _pick(rng, (64, 128, 256, 512)),
                "gr": _pick(rng, (12, 32, 48)), "n": _pick(rng, (2, 4))}  # fmt: skip
    if family == "shuffle":
        return {"h": _pick(rng, (7, 14, 28, 56)), "c": _pick(rng, (58, 116, 176, 232, 244, 488)),
                "s": _pick(rng, (1, 1, 2))}  # fmt: skip
    if family == "plain":
        big = rng.random() < 0.5
        c = _pick(rng, (32, 64, 64, 128) if big else (128, 256, 384, 512))
        head = _pick(rng, (0, 0, 10, 1000))
        return {"h": _pick(rng, (112, 224) if big else (7, 14, 28, 56)), "c": c,
                "f": _pick(rng, (0, 0, 2 * c)), "n": _pick(rng, (1, 2, 3)),
                "k": _pick(rng, (3, 3, 5, 1)), "pool": int(rng.random() < 0.7), "head": head,
                "fc": _pick(rng, (0, 0, 1024, 4096)) if head else 0,
                "gpool": _pick(rng, ("gap", "mean", "flatten")) if head else "gap"}  # fmt: skip
    return {"h": _pick(rng, (32, 64, 128)), "c": _pick(rng, (16, 32, 64)),
            "up": _pick(rng, ("resize", "convt")), "levels": _pick(rng, (1, 2, 3))}  # fmt: skip


#: Family -> share of :func:`sample_blocks` draws (transformers get the most: most of their
#: kernel families appear only there).
SHARES: dict[str, float] = {
    "transformer": 0.40, "vit": 0.06, "basic": 0.08, "bottleneck": 0.10, "mbconv": 0.12,
    "convnext": 0.07, "dense": 0.06, "shuffle": 0.05, "unet": 0.08, "plain": 0.10,
}  # fmt: skip
#: Families allowed a larger cost (VGG-sized convolutions at 224x224 and wide classifiers).
BIG_FAMILIES = {"plain": 3.0}

#: Default cap on a sampled block's multiply-accumulates (about 40 ms on one core here).
MAX_MACS = 1.5e9
#: Cap on a sampled block's parameters (VGG-16 has 138 M): a flattened 224x224 map into a wide
#: classifier passes the MAC cap but carries billions of weights (3.3 G, 13 GB in fp32), which
#: the default ``latlab bench`` once drew and which exhausted a 24 GB machine.
MAX_PARAMS = 150e6


def sample_blocks(
    count: int,
    seed: int = 0,
    *,
    families: tuple[str, ...] | None = None,
    max_macs: float = MAX_MACS,
) -> list[str]:
    """``count`` distinct block references (seeded), families by :data:`SHARES`.

    Configurations above ``max_macs`` or :data:`MAX_PARAMS` are redrawn, so a suite's cost
    and memory per network are bounded (a rejected draw only drops out: the draws after it
    are the ones they were).
    """
    rng = np.random.default_rng(seed + 104729)
    fams = list(families or SHARES)
    w = np.array([SHARES.get(f, 0.05) for f in fams])
    w /= w.sum()
    out: dict[str, None] = {}
    tries = 0
    while len(out) < count and tries < 60 * count + 100:
        tries += 1
        fam = fams[int(rng.choice(len(fams), p=w))]
        try:
            ref = format_block(fam, random_params(fam, rng))
            parse_block(ref.partition(":")[2])
        except NetworkReferenceError:
            continue
        if ref in out or not _affordable(ref, max_macs * BIG_FAMILIES.get(fam, 1.0)):
            continue
        out[ref] = None
    return list(out)


#: The blocks space (registered in :mod:`latlab.datasets.spaces`).
SPACE = SearchSpace(
    "blocks",
    sample_blocks,
    "generated CNN and transformer blocks (block:), the kernel predictor's training space",
)
