"""Build a :class:`NetworkGraph` directly, layer by layer, without ONNX or torch.

Search spaces, the zoo and micro-benchmarks are written against :class:`NetBuilder`. Building
the IR directly is what makes sampling thousands of networks fast; the same IR is exported to
ONNX (:mod:`latlab.encoders.onnx_export`) when a network has to be run, so there is one
definition of every generated network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from latlab.encoders.ir import Layer, NetworkGraph, Shape
from latlab.encoders.ops import apply_cost, infer_shapes


def _tuple(v: int | Sequence[int], n: int = 2) -> tuple[int, ...]:
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
    ) -> None:
        self.name = name
        self.input = input_name
        self.shapes: dict[str, Shape] = {input_name: tuple(int(d) for d in input_shape)}
        self.layers: list[Layer] = []
        self.meta = dict(meta or {})
        self.act_bits = act_bits
        self.weight_bits = weight_bits
        self._count = 0

    def shape(self, tensor: str) -> Shape:
        """Shape of an existing tensor."""
        return self.shapes[tensor]

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
        k = _tuple(kernel)
        d = _tuple(dilation)
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
            "stride": _tuple(stride),
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

    # ------------------------------------------------------------------ normalisation, activations

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
        k = _tuple(kernel)
        attrs = {
            "kernel": k,
            "stride": _tuple(stride or kernel),
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
        k = _tuple(kernel)
        attrs = {
            "kernel": k,
            "stride": _tuple(stride or kernel),
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
