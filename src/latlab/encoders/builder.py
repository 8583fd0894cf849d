"""Build a :class:`NetworkGraph` directly, layer by layer, without ONNX or torch.

Search spaces, the zoo and micro-benchmarks are written against :class:`NetBuilder`. Building
the IR directly is what makes sampling thousands of networks fast; the same IR is exported to
ONNX (:mod:`latlab.encoders.onnx_export`) when a network has to be run, so there is one
definition of every generated network.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from latlab.encoders.ir import Layer, NetworkGraph, Shape
from latlab.encoders.ops import apply_cost, infer_shapes


def int_tuple(v: int | Sequence[int], n: int = 2) -> tuple[int, ...]:
    """``v`` as a tuple of ints: an int repeated ``n`` times (a square kernel), else each item."""
    return (int(v),) * n if isinstance(v, int) else tuple(int(x) for x in v)


def same_pads(kernel: Sequence[int], dilation: Sequence[int] = (1, 1)) -> tuple[int, ...]:
    """Symmetric pads (begins then ends) that keep the size at stride 1 for odd kernels."""
    begins = tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation, strict=True))
    ends = tuple(d * (k - 1) - b for k, d, b in zip(kernel, dilation, begins, strict=True))
    return begins + ends


class NetBuilder:
    """Append layers to a network under construction; every method returns the output tensor.

    >>> b = NetBuilder("tiny", (1, 3, 32, 32))
    >>> y = b.relu(b.conv(b.input, 16, 3))
    >>> b.build().totals.macs
    442368
    """

    def __init__(
        self,
        name: str,
        input_shape: Sequence[int],
        *,
        input_name: str = "input",
        meta: dict[str, Any] | None = None,
        act_bits: int = 32,
        weight_bits: int = 32,
        input_dtype: str = "float32",
    ) -> None:
        self.name = name
        self.input = input_name
        self.shapes: dict[str, Shape] = {input_name: tuple(int(d) for d in input_shape)}
        self.layers: list[Layer] = []
        self.meta = dict(meta or {})
        if input_dtype != "float32":
            # Token ids (int64) and other non-float inputs: exported with this element type
            # (``meta["input_dtypes"]``, read by ``NetworkGraph.input_dtype``).
            self.meta.setdefault("input_dtypes", {})[input_name] = input_dtype
        self.act_bits = act_bits
        self.weight_bits = weight_bits
        self._count = 0
        self._shared: dict[str, list[Layer]] = {}
        self._sharing: tuple[str, int] | None = None

    def shape(self, tensor: str) -> Shape:
        """Shape of an existing tensor."""
        return self.shapes[tensor]

    @contextmanager
    def shared(self, key: str) -> Iterator[None]:
        """Layers built inside share their weights with those of the first block of ``key``.

        The first ``with b.shared("layer"):`` block records its weighted layers; in every later
        block of the same key, the i-th weighted layer reads the i-th recorded layer's weights
        (``attrs["weight_of"]``: no parameters of its own; exported as the same initializers),
        as ALBERT's repeated encoder layer does. The blocks must build the same layers.
        """
        if self._sharing is not None:
            raise ValueError("shared() blocks do not nest")
        first = key not in self._shared
        self._shared.setdefault(key, [])
        self._sharing = (key, -1 if first else 0)
        try:
            yield
        finally:
            self._sharing = None

    # ------------------------------------------------------------------ generic

    def add_layer(
        self,
        op: str,
        inputs: Sequence[str],
        attrs: dict[str, Any] | None = None,
        weight_shapes: Sequence[Shape] = (),
        *,
        n_outputs: int = 1,
        output_shapes: Sequence[Shape] | None = None,
        name: str | None = None,
        weight_bits: int | None = None,
        act_bits: int | None = None,
    ) -> tuple[str, ...]:
        """Append one layer of any op type; returns its output tensor names."""
        attrs = dict(attrs or {})
        if self._sharing is not None and weight_shapes:
            key, pos = self._sharing
            if pos < 0:  # the first block: record
                pending_record = True
            else:
                recorded = self._shared[key]
                if pos >= len(recorded):
                    raise ValueError(
                        f"shared block {key!r}: more weighted layers than its first block's "
                        f"{len(recorded)}"
                    )
                source = recorded[pos]
                if source.op != op or source.weight_shapes != tuple(
                    tuple(int(d) for d in w) for w in weight_shapes
                ):
                    raise ValueError(
                        f"shared block {key!r}: layer {pos} ({op}) differs from {source.name}"
                    )
                attrs["weight_of"] = source.name
                self._sharing = (key, pos + 1)
                pending_record = False
        else:
            pending_record = False
        ins = tuple(inputs)
        in_shapes = tuple(self.shapes[t] for t in ins)
        wshapes = tuple(tuple(int(d) for d in w) for w in weight_shapes)
        if output_shapes is None:
            out_shapes = infer_shapes(op, in_shapes, attrs, wshapes)
        else:
            out_shapes = tuple(tuple(int(d) for d in s) for s in output_shapes)
        self._count += 1
        lname = name or f"{op.lower()}_{self._count}"
        n_out = len(out_shapes) if output_shapes is not None or n_outputs == 1 else n_outputs
        outs = (lname,) if n_out == 1 else tuple(f"{lname}:{i}" for i in range(n_out))
        layer = Layer(
            name=lname,
            op=op,
            inputs=ins,
            outputs=outs,
            input_shapes=in_shapes,
            output_shapes=out_shapes,
            attrs=attrs,
            weight_shapes=wshapes,
            weight_bits=self.weight_bits if weight_bits is None else weight_bits,
            act_bits=self.act_bits if act_bits is None else act_bits,
        )
        apply_cost(layer)
        if pending_record and self._sharing is not None:
            self._shared[self._sharing[0]].append(layer)
        self.layers.append(layer)
        for t, s in zip(outs, out_shapes, strict=True):
            self.shapes[t] = s
        return outs

    def _one(
        self,
        op: str,
        x: str | Sequence[str],
        attrs: dict[str, Any] | None = None,
        weight_shapes: Sequence[Shape] = (),
        **kw: Any,
    ) -> str:
        inputs = [x] if isinstance(x, str) else list(x)
        return self.add_layer(op, inputs, attrs, weight_shapes, **kw)[0]

    # ------------------------------------------------------------------ compute layers

    def conv(
        self,
        x: str,
        out_channels: int,
        kernel: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = "same",
        groups: int = 1,
        dilation: int | Sequence[int] = 1,
        bias: bool = False,
        **kw: Any,
    ) -> str:
        """2-D convolution; ``padding="same"`` pads symmetrically by (k-1)/2 (PyTorch style)."""
        k = int_tuple(kernel)
        d = int_tuple(dilation)
        if padding == "same":
            pads = same_pads(k, d)
        elif isinstance(padding, int):
            pads = (padding,) * 4
        else:
            p = tuple(int(v) for v in padding)  # type: ignore[union-attr]
            pads = p + p if len(p) == 2 else p
        cin = self.shapes[x][1]
        if cin % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in ({cin}) and out ({out_channels}) channels"
            )
        weights: list[Shape] = [(out_channels, cin // groups, *k)]
        if bias:
            weights.append((out_channels,))
        attrs = {
            "kernel": k,
            "stride": int_tuple(stride),
            "pads": pads,
            "dilation": d,
            "groups": groups,
        }
        return self._one("Conv", x, attrs, weights, **kw)

    def dwconv(self, x: str, kernel: int = 3, stride: int = 1, **kw: Any) -> str:
        """Depthwise convolution (groups = channels)."""
        c = self.shapes[x][1]
        return self.conv(x, c, kernel, stride, groups=c, **kw)

    def gemm(self, x: str, out_features: int, bias: bool = True, **kw: Any) -> str:
        """Fully connected layer ``y = x·Wᵀ + b`` on a 2-D input (ONNX Gemm, transB=1)."""
        in_features = self.shapes[x][-1]
        weights: list[Shape] = [(out_features, in_features)]
        if bias:
            weights.append((out_features,))
        return self._one("Gemm", x, {"transB": 1}, weights, **kw)

    def matmul(self, x: str, out_features: int, **kw: Any) -> str:
        """MatMul by a constant weight matrix (K, N)."""
        return self._one("MatMul", x, {}, [(self.shapes[x][-1], out_features)], **kw)

    def linear(self, x: str, out_features: int, bias: bool = True, **kw: Any) -> str:
        """``nn.Linear`` as PyTorch exports it: ``Gemm`` on a 2-D input, otherwise ``MatMul``
        by a (K, N) weight followed by an ``Add`` of the bias (N,)."""
        if len(self.shapes[x]) == 2:
            return self.gemm(x, out_features, bias=bias, **kw)
        y = self.matmul(x, out_features, **kw)
        return self.add_weight(y, (out_features,)) if bias else y

    def batched_matmul(self, a: str, b: str) -> str:
        """MatMul of two activations, batched over the leading dimensions (attention's
        ``Q·Kᵀ`` and ``P·V``): no weights, MACs = output elements x inner dimension."""
        return self._one("MatMul", [a, b])

    def add_weight(
        self,
        x: str,
        shape: Sequence[int],
        *,
        stored_params: int | None = None,
        op: str = "Add",
    ) -> str:
        """``x (op) W`` with a weight ``W`` of ``shape`` broadcast against ``x``: a bias, a
        position embedding, an attention mask or rotary table (``stored_params=0``: a constant
        buffer, no learnable values), the rows of a longer position table a sequence reads
        (``stored_params`` = the whole table)."""
        attrs: dict[str, Any] = {}
        if stored_params is not None:
            attrs["stored_params"] = int(stored_params)
        return self._one(op, x, attrs, [tuple(int(d) for d in shape)])

    def embedding(self, ids: str, vocab: int, dim: int, **kw: Any) -> str:
        """Token embedding: ``Gather`` of rows of a (vocab, dim) weight table by the integer
        ids in ``ids`` (ONNX ``Gather(table, ids)``; ``attrs["vocab"]`` bounds valid ids)."""
        return self._one("Gather", ids, {"axis": 0, "vocab": int(vocab)}, [(vocab, dim)], **kw)

    def gather(self, x: str, index: int | Sequence[int], axis: int = 0) -> str:
        """Select constant ``index`` along ``axis`` (``qkv[0]``; the class token)."""
        idx: int | tuple[int, ...] = index if isinstance(index, int) else tuple(index)
        return self._one("Gather", x, {"axis": axis, "indices": idx})

    def neg(self, x: str) -> str:
        return self._one("Neg", x)

    # ------------------------------------------------------------------ normalisation, activations

    def layernorm(self, x: str, eps: float = 1e-5, axis: int = -1) -> str:
        """ONNX ``LayerNormalization`` (opset 17) over the last axis, scale and bias (D,) each
        (onnxruntime fuses a residual ``Add`` before it into ``SkipLayerNormalization``)."""
        d = self.shapes[x][-1]
        return self._one("LayerNormalization", x, {"axis": axis, "epsilon": eps}, [(d,), (d,)])

    def rmsnorm(self, x: str, eps: float = 1e-6) -> str:
        """RMSNorm as primitive ops: ``x / sqrt(mean(x^2) + eps) * w`` (Pow, ReduceMean, Add,
        Sqrt, Div, Mul), the form onnxruntime fuses into ``SimplifiedLayerNormalization``
        (with ``Reciprocal`` + ``Mul`` in place of ``Div`` it does not)."""
        d = self.shapes[x][-1]
        p = self._one("Pow", x, {"scalar_inputs": ((1, 2.0),)})
        m = self.reduce_mean(p, (len(self.shapes[x]) - 1,), keepdims=True)
        v = self._one("Add", m, {"scalar_inputs": ((1, float(eps)),)})
        r = self._one("Sqrt", v)
        y = self._one("Div", [x, r])
        return self.add_weight(y, (d,), op="Mul")

    def gelu(self, x: str, approximate: str = "none") -> str:
        """GELU as PyTorch exports it at opset 17.

        ``approximate="none"``: the erf form ``0.5·x·(1 + erf(x/√2))`` (Div, Erf, Add, Mul,
        Mul), which onnxruntime fuses into its ``Gelu`` kernel as it does ONNX's opset-20
        ``Gelu`` op (the file stays at opset 17). ``"tanh"``: GPT-2's ``gelu_new``,
        ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`` (Mul, Pow, Mul, Add, Mul, Tanh, Add,
        Mul), which onnxruntime fuses into ``FastGelu``.
        """
        if approximate == "tanh":
            half = self.scale(x, 0.5)
            cube = self.scale(self._one("Pow", x, {"scalar_inputs": ((1, 3.0),)}), 0.044715)
            inner = self.scale(self.add(x, cube), math.sqrt(2.0 / math.pi))
            t = self._one("Add", self._one("Tanh", inner), {"scalar_inputs": ((1, 1.0),)})
            return self.mul(half, t)
        if approximate != "none":
            raise ValueError(f"unknown GELU approximation {approximate!r}")
        d = self._one("Div", x, {"scalar_inputs": ((1, 1.4142135381698608),)})
        e = self._one("Erf", d)
        e1 = self._one("Add", e, {"scalar_inputs": ((1, 1.0),)})
        g = self.mul(x, e1)
        return self.scale(g, 0.5)

    def rotary(self, x: str) -> str:
        """Rotary position embedding of ``x`` (B, heads, S, head_dim), as Llama's exported
        ``x·cos + rotate_half(x)·sin``: two Slices, Neg, Concat, two Muls by constant (S,
        head_dim) tables (buffers, no parameters) and an Add."""
        *_, s, hd = self.shapes[x]
        half = hd // 2
        x1 = self.slice(x, [0], [half], [-1])
        x2 = self.slice(x, [half], [hd], [-1])
        rot = self.concat([self.neg(x2), x1], axis=-1)
        cos = self.add_weight(x, (s, hd), stored_params=0, op="Mul")
        sin = self.add_weight(rot, (s, hd), stored_params=0, op="Mul")
        return self.add(cos, sin)

    def bn(self, x: str, **kw: Any) -> str:
        c = self.shapes[x][1]
        return self._one("BatchNormalization", x, {"epsilon": 1e-5}, [(c,)] * 4, **kw)

    def lrn(
        self, x: str, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0
    ) -> str:
        return self._one("LRN", x, {"size": size, "alpha": alpha, "beta": beta, "bias": bias})

    def act(self, x: str, op: str, **attrs: Any) -> str:
        """Any element-wise activation by ONNX name (Relu, Sigmoid, HardSwish, Clip, ...)."""
        return self._one(op, x, attrs)

    def relu(self, x: str) -> str:
        return self._one("Relu", x)

    def relu6(self, x: str) -> str:
        return self._one("Clip", x, {"min": 0.0, "max": 6.0})

    def sigmoid(self, x: str) -> str:
        return self._one("Sigmoid", x)

    def hardswish(self, x: str) -> str:
        return self._one("HardSwish", x)

    def hardsigmoid(self, x: str) -> str:
        # PyTorch's Hardsigmoid is relu6(x + 3) / 6, i.e. ONNX HardSigmoid with alpha=1/6.
        return self._one("HardSigmoid", x, {"alpha": 1.0 / 6.0, "beta": 0.5})

    def swish(self, x: str) -> str:
        """x·sigmoid(x) as two ops, as exporters emit it."""
        return self.mul(x, self.sigmoid(x))

    def softmax(self, x: str, axis: int = -1) -> str:
        return self._one("Softmax", x, {"axis": axis})

    # ------------------------------------------------------------------ pooling

    def maxpool(
        self,
        x: str,
        kernel: int = 2,
        stride: int | None = None,
        padding: int = 0,
        ceil_mode: bool = False,
    ) -> str:
        k = int_tuple(kernel)
        attrs = {
            "kernel": k,
            "stride": int_tuple(stride or kernel),
            "pads": (padding,) * 4,
            "ceil_mode": int(ceil_mode),
        }
        return self._one("MaxPool", x, attrs)

    def avgpool(
        self,
        x: str,
        kernel: int = 2,
        stride: int | None = None,
        padding: int = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = False,
    ) -> str:
        k = int_tuple(kernel)
        attrs = {
            "kernel": k,
            "stride": int_tuple(stride or kernel),
            "pads": (padding,) * 4,
            "ceil_mode": int(ceil_mode),
            "count_include_pad": int(count_include_pad),
        }
        return self._one("AveragePool", x, attrs)

    def global_avgpool(self, x: str) -> str:
        return self._one("GlobalAveragePool", x)

    def global_maxpool(self, x: str) -> str:
        return self._one("GlobalMaxPool", x)

    # ------------------------------------------------------------------ element-wise, structure

    def add(self, a: str, b: str) -> str:
        return self._one("Add", [a, b])

    def mul(self, a: str, b: str) -> str:
        return self._one("Mul", [a, b])

    def scale(self, x: str, value: float) -> str:
        """Multiply by a constant scalar: ``Mul`` whose second operand is recorded in
        ``attrs["scalar_inputs"]`` as ``((1, value),)`` (the ONNX importer's convention).

        The scalar is a constant, not a learnable weight, so it adds no parameters.
        """
        return self._one("Mul", x, {"scalar_inputs": ((1, float(value)),)})

    def reduce_mean(self, x: str, axes: Sequence[int] = (2, 3), keepdims: bool = False) -> str:
        """Mean over ``axes`` (what ``x.mean([2, 3])`` in PyTorch exports to)."""
        attrs = {"axes": tuple(int(a) for a in axes), "keepdims": int(keepdims)}
        return self._one("ReduceMean", x, attrs)

    def concat(self, xs: Sequence[str], axis: int = 1) -> str:
        return self._one("Concat", list(xs), {"axis": axis})

    def prepend_token(self, x: str, count: int = 1) -> str:
        """Concat ``count`` learned tokens (1, count, D) before the tokens of ``x`` (B, N, D)
        along axis 1 (ViT's class token)."""
        b, _, d = self.shapes[x]
        # The tokens expanded to the batch, as exported; their parameters are stored once.
        attrs = {"axis": 1, "weights_first": 1, "stored_params": count * d}
        return self._one("Concat", x, attrs, [(b, count, d)])

    def flatten(self, x: str, axis: int = 1) -> str:
        return self._one("Flatten", x, {"axis": axis})

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self._one("Reshape", x, {"shape": tuple(int(d) for d in shape)})

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self._one("Transpose", x, {"perm": tuple(int(p) for p in perm)})

    def split(self, x: str, sizes: Sequence[int], axis: int = 1) -> tuple[str, ...]:
        attrs = {"split": tuple(int(s) for s in sizes), "axis": axis}
        return self.add_layer("Split", [x], attrs, n_outputs=len(sizes))

    def slice(
        self,
        x: str,
        starts: Sequence[int],
        ends: Sequence[int],
        axes: Sequence[int],
        steps: Sequence[int] | None = None,
    ) -> str:
        attrs = {
            "starts": tuple(starts),
            "ends": tuple(ends),
            "axes": tuple(axes),
            "steps": tuple(steps) if steps else tuple(1 for _ in axes),
        }
        return self._one("Slice", x, attrs)

    def pad(self, x: str, pads: Sequence[int], mode: str = "constant") -> str:
        return self._one("Pad", x, {"pads": tuple(int(p) for p in pads), "mode": mode})

    def resize(self, x: str, scale: float, mode: str = "nearest") -> str:
        s = self.shapes[x]
        scales = (1.0, 1.0, *([float(scale)] * (len(s) - 2)))
        return self._one("Resize", x, {"scales": scales, "mode": mode})

    def channel_shuffle(self, x: str, groups: int) -> str:
        """ShuffleNet channel shuffle: reshape, transpose, reshape back."""
        n, c, h, w = self.shapes[x]
        y = self.reshape(x, (n, groups, c // groups, h, w))
        y = self.transpose(y, (0, 2, 1, 3, 4))
        return self.reshape(y, (n, c, h, w))

    # ------------------------------------------------------------------ result

    def build(self, outputs: Sequence[str] | None = None) -> NetworkGraph:
        """The finished graph; by default the last layer's output is the network output."""
        outs = list(outputs) if outputs is not None else [self.layers[-1].outputs[0]]
        return NetworkGraph(
            self.name,
            {self.input: self.shapes[self.input]},
            outs,
            self.layers,
            meta={"reference": self.name, **self.meta},
        )
