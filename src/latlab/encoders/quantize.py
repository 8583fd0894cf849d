"""Static INT8 quantisation of any network's ONNX model, and what the quantiser left in float.

Precision is part of a device configuration (``fp32``, the default; ``int8``; ``bf16``). An
INT8 network is the network's ONNX export turned into a statically quantised QDQ model by
onnxruntime's own tooling (:func:`onnxruntime.quantization.quantize_static`, ``QuantFormat.QDQ``,
per-channel int8 weights, uint8 activations -- the U8S8 format onnxruntime's x86 kernels take),
calibrated (MinMax) on a few batches of *generated* inputs: latency does not depend on the
values, only on which kernels run, so no dataset is needed. onnxruntime then fuses each
``DequantizeLinear -> op -> QuantizeLinear`` group into a quantised kernel (``QLinearConv``,
``QGemm``, ``QLinearMatMul``, ...).

**Mixed precision is reported, never hidden.** The quantiser leaves ops it has no QDQ rule for
in float, and the runtime may leave a QDQ group unfused (it then runs DQ -> float op -> Q).
:func:`qdq_report` reads the quantised graph: a compute op (Conv, ConvTranspose, MatMul, Gemm)
is int8 when its data inputs all come from ``DequantizeLinear``; the report gives the fraction
of MACs at int8 and the ops left in float, and labels the model ``int8`` only when every MAC is
quantised (``mixed`` otherwise, ``fp32`` when none is). The runtime-level check (which kernels
onnxruntime actually executes) is in :mod:`latlab.datasets.bench.kernels_quant`.

Quantised models are cached by content: the SHA-1 of the float model's bytes and the
quantisation settings, in memory and on disk under ``$LATLAB_CACHE_DIR/quantized`` (default
``~/.cache/latlab``), so that a campaign, the bench suites and a predictor quantise each network
once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latlab.errors import LatlabError, first_line

log = logging.getLogger(__name__)

#: Precisions of a device configuration; ``fp32`` is the default and never named.
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "bf16")
#: Bytes per element of weights/activations at each precision (the IR's bit widths / 8).
BYTES: dict[str, int] = {"fp32": 4, "int8": 1, "bf16": 2}
#: Bump when the quantisation recipe changes: cached models of the old recipe are not reused.
RECIPE = "qdq-u8s8-perchannel-minmax-v1"
#: Ops whose cost is MACs (the ones the report weighs).
MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: Ops that only move or reshape data: left in float they cost nothing worth reporting, and
#: between a DequantizeLinear and a QuantizeLinear onnxruntime drops the pair and moves the
#: int8 tensor itself (its QDQ "drop" rule), so they move 1 byte an element.
MOVE_OPS = frozenset({
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Gather", "Concat",
    "Split", "Slice", "Identity", "Constant", "ConstantOfShape", "Expand", "Cast", "Range",
})  # fmt: skip
#: Ops onnxruntime's CPU provider fuses with the DequantizeLinear / QuantizeLinear around them
#: into one int8 kernel (QLinearConv, QGemm, QLinearMatMul, QLinearAdd, ...; see
#: ``latlab.datasets.bench.kernels_quant``): their activations are int8. Ops not listed
#: (LayerNormalization, Erf, Div, ConvTranspose, ...) run in float between their Q/DQ pairs.
INT8_KERNEL_OPS = frozenset({
    "Conv", "MatMul", "Gemm", "Add", "Mul", "Softmax", "Sigmoid", "LeakyRelu",
    "GlobalAveragePool", "AveragePool", "MaxPool",
})  # fmt: skip


class PrecisionError(LatlabError, ValueError):
    """An unknown precision, or a precision a backend cannot run."""


def check_precision(precision: str) -> str:
    """``precision`` if known, else a one-line error naming it and the known ones."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
    return precision


@dataclass
class PrecisionReport:
    """What precision a quantised model's compute runs at (see the module docstring)."""

    label: str  # "int8", "mixed" or "fp32"
    int8_mac_fraction: float
    macs: float
    int8_macs: float
    #: Op type -> count of ops left in float (data-movement ops not counted).
    float_ops: dict[str, int] = field(default_factory=dict)
    #: Compute ops (name, op type) left in float, with their MACs.
    float_compute: list[tuple[str, str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["float_compute"] = [list(t) for t in self.float_compute]
        return out

    def summary(self) -> str:
        """One line for logs and the CLI."""
        text = f"{self.label}: {100 * self.int8_mac_fraction:.1f} % of MACs at int8"
        if self.float_compute:
            ops = Counter(op for _, op, _ in self.float_compute)
            text += "; float compute: " + ", ".join(f"{n} {op}" for op, n in ops.items())
        return text


def _shapes(model: Any) -> dict[str, tuple[int, ...]]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shapes only weigh the report; a failure leaves MACs unknown
        inferred = model
    out: dict[str, tuple[int, ...]] = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(int(d.dim_value) for d in dims)
    for t in g.initializer:
        out[t.name] = tuple(int(d) for d in t.dims)
    return out


def _macs(node: Any, shapes: dict[str, tuple[int, ...]]) -> float:
    """MACs of a compute node from its output shape and reduction size (0 when unknown)."""
    out = shapes.get(node.output[0]) if node.output else None
    if not out or len(node.input) < 2:
        return 0.0
    w = shapes.get(node.input[1])
    a = shapes.get(node.input[0])
    n_out = float(np.prod(out))
    if node.op_type == "Conv" and w:
        return n_out * float(np.prod(w[1:]))
    if node.op_type == "ConvTranspose" and w and a:
        return float(np.prod(a)) * float(np.prod(w[1:]))
    if node.op_type in ("MatMul", "Gemm") and a:
        trans_a = any(att.name == "transA" and att.i for att in node.attribute)
        k = a[-2] if trans_a and len(a) >= 2 else a[-1]
        return n_out * float(k)
    return 0.0


def qdq_report(model: Any) -> PrecisionReport:
    """Which compute of a QDQ model is int8 (see the module docstring)."""
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    shapes = _shapes(model)
    total = int8 = 0.0
    float_ops: Counter[str] = Counter()
    float_compute: list[tuple[str, str, float]] = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.op_type in MOVE_OPS:
            continue
        # data inputs: the first two of a compute op (a bias may stay int32/float), all others
        data = [t for t in node.input if t]
        if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
            data = data[:2]
        data = [t for t in data if producer.get(t) or t not in inits]
        quantised = bool(data) and all(producer.get(t) == "DequantizeLinear" for t in data)
        if node.op_type in MAC_OPS:
            macs = _macs(node, shapes)
            total += macs
            if quantised:
                int8 += macs
            else:
                float_compute.append((node.name, node.op_type, macs))
        if not quantised:
            float_ops[node.op_type] += 1
    n_compute = sum(1 for n in model.graph.node if n.op_type in MAC_OPS)
    if total > 0:
        frac = int8 / total
    else:  # MACs unknown (no shapes): count compute ops instead
        frac = (n_compute - len(float_compute)) / n_compute if n_compute else 0.0
    label = "int8" if n_compute and not float_compute else ("fp32" if frac == 0 else "mixed")
    return PrecisionReport(label, float(frac), total, int8, dict(float_ops), float_compute)


class _Reader:
    """The CalibrationDataReader onnxruntime's quantiser pulls calibration batches from."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]]) -> None:
        self._it = iter(list(batches))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - quantize_static reads once
        pass


_MEMORY: OrderedDict[str, bytes] = OrderedDict()
_MEMORY_SIZE = 16


def cache_dir() -> Path:
    """Where quantised models are kept: ``$LATLAB_CACHE_DIR/quantized`` (``~/.cache/latlab``)."""
    root = os.environ.get("LATLAB_CACHE_DIR") or Path.home() / ".cache" / "latlab"
    return Path(root) / "quantized"


def content_key(model_bytes: bytes, per_channel: bool = True) -> str:
    """The cache key of a float model: its content hash and the quantisation recipe."""
    h = hashlib.sha1(model_bytes)
    h.update(f"/{RECIPE}/per_channel={per_channel}".encode())
    return h.hexdigest()


def quantize_model(
    model: Any,
    calibration: Iterable[dict[str, np.ndarray]],
    *,
    per_channel: bool = True,
    cache: bool = True,
) -> Any:
    """The statically quantised QDQ ``onnx.ModelProto`` of a float ``model``.

    ``calibration``: a few input batches (dicts of graph input name -> array) the quantiser
    takes activation ranges from; generated inputs do (see the module docstring). The result
    is cached by content (:func:`content_key`). Raises :class:`PrecisionError` naming the
    quantiser's first error line when onnxruntime cannot quantise the model.
    """
    import onnx

    data = model.SerializeToString()
    key = content_key(data, per_channel)
    if cache and key in _MEMORY:
        _MEMORY.move_to_end(key)
        return onnx.load_from_string(_MEMORY[key])
    path = cache_dir() / f"{key}.onnx"
    if cache and path.is_file():
        blob = path.read_bytes()
        _remember(key, blob)
        return onnx.load_from_string(blob)
    blob = _quantize_bytes(data, calibration, per_channel)
    if cache:
        from latlab.fileio import atomic_write_bytes

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, blob)
        except OSError as exc:  # a read-only home only costs the re-quantisation
            log.warning("cannot cache the quantised model in %s: %s", path.parent, exc)
        _remember(key, blob)
    return onnx.load_from_string(blob)


def _remember(key: str, blob: bytes) -> None:
    _MEMORY[key] = blob
    while len(_MEMORY) > _MEMORY_SIZE:
        _MEMORY.popitem(last=False)


def _quantize_bytes(
    data: bytes, calibration: Iterable[dict[str, np.ndarray]], per_channel: bool
) -> bytes:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="latlab-quant-") as tmp:
        folder = Path(tmp)
        src = folder / "float.onnx"
        src.write_bytes(data)
        pre = folder / "pre.onnx"
        try:  # onnxruntime's recommended pre-processing: shape inference, BN folding
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as exc:
            log.info("quantisation pre-processing skipped: %s", exc)
            pre = src
        out = folder / "int8.onnx"
        quiet = _QuietRoot()
        logging.getLogger().addFilter(quiet)
        try:
            quantize_static(
                str(pre),
                str(out),
                _Reader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        except Exception as exc:
            first = first_line(exc)
            raise PrecisionError(f"onnxruntime cannot quantise the model: {first}") from exc
        finally:
            logging.getLogger().removeFilter(quiet)
        if quiet.dropped:
            log.debug("quantiser: %d warnings, e.g. %s", len(quiet.dropped), quiet.dropped[0])
        return out.read_bytes()


class _QuietRoot(logging.Filter):
    """Keeps the quantiser's per-tensor warnings (it logs on the root logger, e.g. "Axis 1 is
    out-of-range for weight ..." for every LayerNormalization scale it keeps per-tensor) out of
    the user's console; they are counted and logged at debug level instead."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" and record.levelno <= logging.WARNING:
            self.dropped.append(record.getMessage())
            return False
        return True


#: Bit widths of weights and activations at each precision.
BITS: dict[str, int] = {p: 8 * b for p, b in BYTES.items()}


#: The ops of a QDQ model: an IR imported from a file holding them has the file's own bit widths.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def own_precision(layers: Iterable[Any]) -> str:
    """The precision of an imported QDQ model, from the widths its layers were imported at
    (``onnx_import``: int8 between the QDQ pairs of onnxruntime's fused kernels): the
    narrowest width below 32 bits names it, ``int8`` for the U8S8 models :func:`quantize_model`
    writes (an int16 QDQ model is ``int16``, no device precision); ``fp32`` when none is."""
    widths = {b for la in layers for b in (la.weight_bits, la.act_bits) if b < 32}
    if not widths:
        return "fp32"
    return f"int{min(widths)}"


def at_precision(graph: Any, precision: str, report: PrecisionReport | None = None) -> Any:
    """The IR of ``graph`` run at ``precision``: every layer's weight and activation bit
    widths set (int8: 8, bf16: 16) and its bytes recounted, so that bytes read/written,
    weight bytes and every memory term computed from them (the roofline's) are the quantised
    network's; MACs are unchanged (an int8 MAC is still one MAC; what it costs is the device
    configuration's, which every predictor trains per). Layers a quantisation ``report``
    lists as left in float keep 32 bits. ``meta["precision"]`` records the precision.

    A graph imported from an already quantised (QDQ) file (``meta["quantized"]``, set by
    :func:`latlab.encoders.onnx_import.from_onnx`) keeps the widths the file gives each layer
    (float between its QDQ pairs where onnxruntime runs float): at its own precision it is
    returned unchanged (fp32 changes no graph), and another precision than its own is a
    :class:`PrecisionError` naming both, rather than widths the file does not have.
    """
    from dataclasses import replace

    from latlab.encoders.ir import NetworkGraph
    from latlab.encoders.ops import apply_cost

    check_precision(precision)
    if precision == "fp32":
        return graph
    if graph.meta.get("quantized"):
        own = str(graph.meta.get("precision", own_precision(graph.layers)))
        if own == precision:
            return graph
        raise PrecisionError(
            f"{graph.name!r} is an already quantised (QDQ) model at {own}: its bit widths are "
            f"the file's own and cannot be taken at {precision}"
        )
    bits = BITS[precision]
    floats = {name for name, _, _ in report.float_compute} if report is not None else set()
    layers = []
    for la in graph.layers:
        b = 32 if la.name in floats else bits
        layers.append(apply_cost(replace(la, weight_bits=b, act_bits=b)))
    meta = {**graph.meta, "precision": precision}
    return NetworkGraph(graph.name, dict(graph.inputs), list(graph.outputs), layers, meta)
