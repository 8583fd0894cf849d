"""The kernels onnxruntime runs for a network, with the cost features the kernel models use.

The kernel-level predictor (``kernel``) predicts over what the runtime *executes*, not over
ONNX nodes: after its graph optimisations (the measurement protocol's session options,
``ORT_ENABLE_ALL``) onnxruntime has folded BatchNorm into convolutions, fused activations and
residual adds (``FusedConv``, NCHWc ``Conv`` with a *Sum* input), turned 3-D ``MatMul + Add``
into ``Gemm`` between reshapes, scaled/transposed matmuls into ``FusedMatMul``, the Erf form of
GELU into ``Gelu``, and inserted layout reorders. Each executed node becomes a
:class:`RuntimeKernel`: its qualified op (``domain.op``), a *family* (the unit one regressor
models: the op, split where one op hides kernels of different behaviour -- depthwise and
grouped convolutions, matmuls whose second operand is an activation) and numeric features
(shapes, M/N/K and batch count, h/w/c/f/k/stride/groups, MACs, FLOPs, bytes in/out, weight
bytes).

Shapes of the optimised graph: the optimised model (written by onnxruntime itself, weights
kept out of the file) gives initializer and graph-input shapes and every node's attributes;
intermediate tensors of contrib ops have no ONNX shape inference, so their shapes come from
the profiler's ``output_type_shape`` of one run (a profiled run with random inputs; no timing
is used). :func:`runtime_kernels` does this for any network latlab can run;
:func:`kernels_from_profile` reuses the events of a profile that is taken anyway (the bench
suites store every kernel's features with its profiled time).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latlab.errors import MeasurementError, first_line

Shape = tuple[int, ...]

_CONV = ("Conv", "FusedConv", "ConvTranspose")
_MATMUL = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "MatMulInteger", "QLinearMatMul")
_POOL = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool")
_ACT_CODES = {"": 0, "Relu": 1, "Clip": 2, "HardSigmoid": 3, "Sigmoid": 4, "Tanh": 5,
              "LeakyRelu": 6}  # fmt: skip

#: Feature names of every kernel (0 where a feature does not apply), in a fixed order.
FEATURES: tuple[str, ...] = (
    "out_elems", "in_elems", "w_elems", "n_inputs", "macs", "flops", "bytes_in", "bytes_out",
    "bytes_w", "last_in", "last_out", "rows", "rank", "broadcast",
    "n", "c", "h", "w", "f", "ho", "wo", "kh", "kw", "stride", "groups", "cg", "act",
    "has_sum", "blocked", "m", "k", "nn", "batch", "b_weight",
)  # fmt: skip


@dataclass
class RuntimeKernel:
    """One node onnxruntime executes, with its cost features."""

    index: int
    name: str
    op: str  # qualified: "Conv", "com.microsoft.nchwc.Conv", "com.microsoft.FusedMatMul"
    family: str
    features: dict[str, float]
    input_shapes: list[Shape] = field(default_factory=list)
    output_shapes: list[Shape] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "op": self.op,
            "family": self.family,
            "features": self.features,
            "input_shapes": [list(s) for s in self.input_shapes],
            "output_shapes": [list(s) for s in self.output_shapes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuntimeKernel:
        return cls(
            int(d["index"]),
            str(d.get("name", "")),
            str(d["op"]),
            str(d["family"]),
            {k: float(v) for k, v in d["features"].items()},
            [tuple(s) for s in d.get("input_shapes", [])],
            [tuple(s) for s in d.get("output_shapes", [])],
        )


def qualified_op(domain: str, op: str) -> str:
    return f"{domain}.{op}" if domain and domain != "ai.onnx" else op


def _numel(s: Shape | None) -> int:
    return math.prod(s) if s else 1


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _spatial(s: Shape) -> tuple[int, int, int, int, bool]:
    """(n, channels, h, w, blocked) of an NCHW or NCHWc activation."""
    if len(s) == 5:
        return s[0], s[1] * s[4], s[2], s[3], True
    if len(s) == 4:
        return s[0], s[1], s[2], s[3], False
    if len(s) == 3:
        return s[0], s[1], 1, s[2], False
    return (s[0] if s else 1), (s[1] if len(s) > 1 else 1), 1, 1, False


def kernel_features(
    op: str,
    attrs: dict[str, Any],
    inputs: Sequence[Shape | None],
    outputs: Sequence[Shape | None],
    weight: Sequence[bool],
) -> tuple[str, dict[str, float]]:
    """(family, features) of one executed node; ``weight[i]``: input ``i`` is an initializer."""
    base = op.rsplit(".", 1)[-1]
    f: dict[str, float] = dict.fromkeys(FEATURES, 0.0)
    ins = [s if s is not None else () for s in inputs]
    outs = [s if s is not None else () for s in outputs]
    acts = [s for s, w in zip(ins, weight, strict=False) if not w]
    wts = [s for s, w in zip(ins, weight, strict=False) if w]
    f["out_elems"] = float(sum(_numel(s) for s in outs))
    f["in_elems"] = float(sum(_numel(s) for s in acts))
    f["w_elems"] = float(sum(_numel(s) for s in wts))
    f["n_inputs"] = float(len(acts))
    f["bytes_in"], f["bytes_out"], f["bytes_w"] = (
        4 * f["in_elems"], 4 * f["out_elems"], 4 * f["w_elems"]
    )  # fmt: skip
    first_in = acts[0] if acts else (ins[0] if ins else ())
    first_out = outs[0] if outs else ()
    f["last_in"] = float(first_in[-1]) if first_in else 1.0
    f["last_out"] = float(first_out[-1]) if first_out else 1.0
    f["rows"] = f["out_elems"] / max(f["last_out"], 1.0)
    f["rank"] = float(len(first_out))
    f["broadcast"] = float(len({_numel(s) for s in acts}) > 1)
    family = op
    macs = 0.0
    if base in _CONV and len(first_in) >= 3:
        n, c, h, w, blocked = _spatial(first_in)
        _, fo, ho, wo, _ = _spatial(first_out) if first_out else (1, 1, 1, 1, False)
        wshape = ins[1] if len(ins) > 1 and ins[1] else ()
        kernel = list(attrs.get("kernel_shape") or (wshape[2:] if len(wshape) >= 4 else [1, 1]))
        kh, kw = ([*kernel, 1, 1])[:2] if len(kernel) >= 2 else (kernel[0], 1)
        groups = int(attrs.get("group", 1))
        strides = list(attrs.get("strides") or [1])
        f.update(n=n, c=c, h=h, w=w, f=fo, ho=ho, wo=wo, kh=kh, kw=kw, stride=strides[0],
                 groups=groups, cg=c / groups, blocked=float(blocked))  # fmt: skip
        f["act"] = float(_ACT_CODES.get(str(attrs.get("activation", "")), 7))
        f["has_sum"] = float(len(inputs) >= 4 and bool(inputs[3]))
        if base == "ConvTranspose":
            macs = n * c * h * w * (fo / groups) * kh * kw
        else:
            macs = n * fo * ho * wo * (c / groups) * kh * kw
        if groups > 1 and groups >= c:
            family = f"{op}/dw"
        elif groups > 1:
            family = f"{op}/grouped"
    elif base in _MATMUL and len(ins) >= 2:
        a, b = ins[0], ins[1]
        ta = int(attrs.get("transA", 0))
        tb = int(attrs.get("transB", 0))
        if len(a) >= 2:
            m, k = (a[-1], a[-2]) if ta else (a[-2], a[-1])
        else:
            m, k = 1, (a[0] if a else 1)
        if len(b) >= 2:
            nn = b[-2] if tb else b[-1]
        else:
            nn = 1
        batch = f["out_elems"] / max(m * nn, 1)
        b_weight = bool(len(weight) > 1 and weight[1])
        f.update(m=m, k=k, nn=nn, batch=batch, b_weight=float(b_weight))
        f["act"] = float(_ACT_CODES.get(str(attrs.get("activation", "")), 7))
        macs = batch * m * nn * k
        if not b_weight and base != "Gemm":
            family = f"{op}/act"
    elif base in _POOL and first_in:
        n, c, h, w, blocked = _spatial(first_in)
        kernel = list(attrs.get("kernel_shape") or ([h, w] if "Global" in base else [1, 1]))
        kh, kw = ([*kernel, 1, 1])[:2]
        _, _, ho, wo, _ = _spatial(first_out) if first_out else (1, 1, 1, 1, False)
        strides = list(attrs.get("strides") or [1])
        f.update(n=n, c=c, h=h, w=w, f=c, ho=ho, wo=wo, kh=kh, kw=kw, stride=strides[0],
                 blocked=float(blocked))  # fmt: skip
        macs = f["out_elems"] * kh * kw
    f["macs"] = float(macs)
    f["flops"] = float(2 * macs) if macs else f["out_elems"] + f["in_elems"]
    return family, f


# --------------------------------------------------------------------------- the optimised graph


def _tensor_shapes(model: Any) -> tuple[dict[str, Shape], set[str]]:
    shapes: dict[str, Shape] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    inits = set()
    for t in model.graph.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
        inits.add(t.name)
    return shapes, inits


def event_output_shapes(events: list[dict[str, Any]], model: Any) -> dict[int, list[Shape]]:
    """Node index (in ``model``) -> output shapes, from the first profiled run's events.

    Events are matched to nodes by (name, op type), unnamed nodes by their ``Op_<n>`` names in
    order, as :func:`latlab.datasets.bench.profile._parse_profile` does.
    """
    import re

    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, n in enumerate(model.graph.node):
        by_key[(n.name, n.op_type)].append(i)
    seen: dict[tuple[str, str], int] = defaultdict(int)
    out: dict[int, list[Shape]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(e["name"])[: -len("_kernel_time")]
        args = e.get("args", {})
        op = str(args.get("op_name", ""))
        key = (name, op)
        if key not in by_key and re.fullmatch(rf"{re.escape(op)}_\d+", name):
            key = ("", op)
        idx = by_key.get(key)
        if not idx:
            continue
        k = seen[key]
        seen[key] += 1
        node = idx[k % len(idx)]
        if node in out:
            continue
        shapes = []
        for entry in args.get("output_type_shape", []):
            dims = next(iter(entry.values())) if isinstance(entry, dict) and entry else []
            shapes.append(tuple(int(d) for d in dims))
        out[node] = shapes
    return out


def kernels_from_model(model: Any, output_shapes: dict[int, list[Shape]]) -> list[RuntimeKernel]:
    """One :class:`RuntimeKernel` per node of the optimised ``model`` (see the module doc);
    quantised kernels take their features from :mod:`.kernels_quant`."""
    from latlab.datasets.bench.kernels_quant import quant_kernel_features

    shapes, inits = _tensor_shapes(model)
    for i, node in enumerate(model.graph.node):
        for name, s in zip(node.output, output_shapes.get(i, []), strict=False):
            shapes[name] = s
    out: list[RuntimeKernel] = []
    for i, node in enumerate(model.graph.node):
        op = qualified_op(node.domain, node.op_type)
        ins = [shapes.get(t) if t else None for t in node.input]
        outs = [shapes.get(t) for t in node.output]
        weight = [bool(t) and t in inits for t in node.input]
        attrs = _attrs(node)
        family, feats = quant_kernel_features(op, attrs, ins, outs, weight) or kernel_features(
            op, attrs, ins, outs, weight
        )
        out.append(
            RuntimeKernel(
                i,
                node.name,
                op,
                family,
                feats,
                [s or () for s in ins if s is not None],
                [s or () for s in outs],
            )
        )
    return out


def kernels_from_profile(model: Any, events: list[dict[str, Any]]) -> list[RuntimeKernel]:
    """Kernels of an optimised model whose profiler events are at hand."""
    return kernels_from_model(model, event_output_shapes(events, model))


# --------------------------------------------------------------------------- any network

_CACHE: OrderedDict[str, list[RuntimeKernel]] = OrderedDict()
_CACHE_SIZE = 512


def runtime_kernels(
    network: Any, *, threads: int = 1, precision: str = "fp32"
) -> list[RuntimeKernel]:
    """The kernels onnxruntime (CPU, the protocol's session options) runs for ``network``.

    One session with all graph optimisations and one profiled run with the protocol's
    random inputs (for the shapes of contrib-op tensors). Results are cached by model
    content; ``precision="int8"`` runs the network's quantised QDQ model
    (:func:`latlab.datasets.references.onnx_model`). Raises :class:`MeasurementError`
    naming the network when onnxruntime cannot run it (callers then fall back to
    :func:`ir_kernels`).
    """
    import onnx
    import onnxruntime as ort

    from latlab.datasets.bench.trace import optimising_options
    from latlab.datasets.measure.inputs import fixed_inputs
    from latlab.datasets.references import onnx_model, reference_of

    ref = reference_of(network)
    try:
        model = onnx_model(network, precision=precision)
        data = model.SerializeToString()
    except MeasurementError:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise MeasurementError(f"cannot export {ref!r} to ONNX: {first}") from exc
    key = hashlib.sha1(data).hexdigest() + f"/{threads}"
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    try:
        feeds = fixed_inputs(network, model, 1, None, seed=0)
        with tempfile.TemporaryDirectory(prefix="latlab-kern-") as tmp:
            folder = Path(tmp)
            so, _ = optimising_options(threads, "ORT_ENABLE_ALL", folder, "optimised", profile=True)
            session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
            session.run(None, feeds)
            events = json.loads(Path(session.end_profiling()).read_text())
            opt = onnx.load(so.optimized_model_filepath, load_external_data=False)
    except MeasurementError:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise MeasurementError(f"onnxruntime cannot run {ref!r}: {first}") from exc
    kernels = kernels_from_profile(opt, events)
    _CACHE[key] = kernels
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return kernels


#: IR op -> the op the runtime runs it as, for the IR fallback (no runtime at hand).
_IR_OPS = {"Gemm": "Gemm", "MatMul": "MatMul"}


def _group_op(layers: Sequence[Any], members: Sequence[int]) -> tuple[int, str]:
    """(head layer, the op onnxruntime runs a group of IR layers as) for the IR fallback.

    The head is the first conv/matmul of the group, else the layer naming a fused kernel; the
    op follows onnxruntime's transformer fusions (the ones :mod:`.trace` observes): MatMul by a
    weight + bias Add -> ``Gemm``, MatMul of two activations + a scaling -> ``FusedMatMul``,
    the erf GELU chain -> ``Gelu``, residual Add + LayerNorm -> ``SkipLayerNormalization``,
    RMSNorm's primitives -> ``SimplifiedLayerNormalization``; other groups keep the head's op.
    """
    ops = [layers[i].op for i in members]
    head = next((i for i in members if layers[i].op in (*_CONV, *_MATMUL)), None)
    if head is not None:
        la = layers[head]
        if la.op == "MatMul" and la.weight_shapes and "Add" in ops:
            return head, "Gemm"
        if la.op == "MatMul" and not la.weight_shapes and ({"Div", "Mul"} & set(ops)):
            return head, "com.microsoft.FusedMatMul"
        return head, _IR_OPS.get(la.op, la.op)
    if "Gelu" in ops:
        return members[ops.index("Gelu")], "Gelu"
    if "Erf" in ops and {"Mul", "Add"} <= set(ops):  # the erf form's chain, not a lone Erf
        return members[ops.index("Erf")], "com.microsoft.Gelu"
    if "LayerNormalization" in ops:
        ln = members[ops.index("LayerNormalization")]
        skip = "Add" in ops
        return ln, "com.microsoft.SkipLayerNormalization" if skip else "LayerNormalization"
    if "ReduceMean" in ops and "Sqrt" in ops:
        return members[ops.index("ReduceMean")], "SimplifiedLayerNormalization"
    return members[0], layers[members[0]].op


def ir_kernels(graph: Any, groups: Sequence[Sequence[int]] | None = None) -> list[RuntimeKernel]:
    """Kernels predicted from the IR when onnxruntime cannot be run: one per mapped layer.

    ``groups`` (IR layer index lists, e.g. from the layer-wise mapping model) say which
    layers run as one kernel; by default every layer is its own kernel. The kernel takes the
    op the runtime runs the group as (:func:`_group_op`), the shapes of its head layer for
    convolutions and matmuls (a ``Gemm`` over all tokens as onnxruntime reshapes it: 2-D),
    else the group's inputs from outside it and its weights, and the last layer's outputs.
    """
    layers = graph.layers
    index = {t: s for la in layers for t, s in zip(la.outputs, la.output_shapes, strict=False)}
    index.update(graph.inputs)
    out: list[RuntimeKernel] = []
    for members in groups or [[i] for i in range(len(layers))]:
        head, op = _group_op(layers, members)
        la = layers[head]
        last = layers[members[-1]]
        outs = list(last.output_shapes)
        if la.op in (*_CONV, *_MATMUL):
            ins = [index.get(t) for t in la.inputs]
            ins += [tuple(w) for w in la.weight_shapes]
            weight = [False] * len(la.inputs) + [True] * len(la.weight_shapes)
            if la.op in ("MatMul", "Gemm") and len(la.inputs) == 1 and la.weight_shapes:
                ins = [ins[0], tuple(la.weight_shapes[0]), *ins[2:]]
                weight = [False, True, *weight[2:]]
            if op == "Gemm" and ins[0] is not None and len(ins[0]) > 2:
                a = ins[0]
                ins[0] = (math.prod(a[:-1]), a[-1])
                outs = [(math.prod(s[:-1]), s[-1]) for s in outs]
                if la.op == "MatMul":  # the bias Add's vector is the Gemm's C
                    bias = next((w for i in members if layers[i].op == "Add"
                                 for w in layers[i].weight_shapes), None)  # fmt: skip
                    if bias is not None:
                        ins.append(tuple(bias))
                        weight.append(True)
        else:
            inside = {t for i in members for t in layers[i].outputs}
            ins, weight = [], []
            for i in members:
                for t in layers[i].inputs:
                    if t not in inside and index.get(t) is not None:
                        ins.append(index[t])
                        weight.append(False)
            for i in members:
                for w in layers[i].weight_shapes:
                    ins.append(tuple(w))
                    weight.append(True)
        attrs = dict(la.attrs)
        if "kernel" in attrs:
            attrs["kernel_shape"] = list(attrs["kernel"])
        if "groups" in attrs:
            attrs["group"] = attrs["groups"]
        family, feats = kernel_features(op, attrs, ins, outs, weight)
        around = op == "Gemm" and len(last.output_shapes[0]) > 2
        if around:  # onnxruntime runs a Gemm over tokens between two Reshapes
            a3, a2 = index.get(la.inputs[0]), ins[0]
            out.append(_reshape_kernel(len(out), la.name, a3, a2))
        out.append(RuntimeKernel(len(out), la.name, op, family, feats,
                                 [s for s in ins if s], outs))  # fmt: skip
        if around:
            out.append(_reshape_kernel(len(out), la.name, outs[0], last.output_shapes[0]))
    return out


def _reshape_kernel(i: int, name: str, x: Shape | None, y: Shape | None) -> RuntimeKernel:
    """A Reshape kernel from ``x`` to ``y`` (its target shape a constant input)."""
    ins = [x or (), (len(y or ()),)]
    family, feats = kernel_features("Reshape", {}, ins, [y or ()], [False, True])
    return RuntimeKernel(i, name, "Reshape", family, feats, [s for s in ins if s], [y or ()])
