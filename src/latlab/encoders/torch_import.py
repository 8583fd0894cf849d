"""Torch modules to the IR, through an in-memory ONNX export.

A torch module has no static graph of its own; exporting it to ONNX gives one, with shapes, and
:func:`latlab.encoders.onnx_import.from_onnx` turns that into the IR, so torch models and ONNX
files share one import path. The legacy TorchScript exporter (``dynamo=False``) is used: about
10 ms per small CNN against ~0.8 s for the dynamo exporter (DESIGN, library notes), and it
needs no onnxscript.

``fold_batchnorm`` chooses between the two forms a deployed network takes: BatchNorm folded
into the preceding convolution (what an inference runtime executes; the export's constant
folding does it) or BatchNorm kept as its own layer. ``training=True`` exports the
training-mode graph (BatchNorm with its running-statistics outputs, Dropout active).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from latlab.encoders.ir import NetworkGraph
from latlab.encoders.onnx_import import from_onnx
from latlab.errors import OnnxImportError

if TYPE_CHECKING:
    import onnx
    import torch

log = logging.getLogger(__name__)

OPSET = 17


def torch_to_onnx(
    module: torch.nn.Module,
    input_shape: Sequence[int] | Sequence[Sequence[int]],
    *,
    fold_batchnorm: bool = True,
    training: bool = False,
    opset: int = OPSET,
    dynamic_batch: bool = False,
) -> onnx.ModelProto:
    """The ONNX model of ``module`` for inputs of ``input_shape`` (one shape or a list of them).

    The module is exported in eval mode (its own mode is restored afterwards) unless
    ``training``. ``dynamic_batch`` marks the first dimension of every input symbolic, as
    deployment exports usually do. Raises :class:`OnnxImportError` naming the module when the
    export fails.
    """
    import onnx
    import torch

    shapes = _shapes(input_shape)
    args = tuple(torch.zeros(*s) for s in shapes)
    names = [f"input{i}" if len(shapes) > 1 else "input" for i in range(len(shapes))]
    dynamic = {n: {0: "batch"} for n in names} if dynamic_batch else None
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    buffer = io.BytesIO()
    was_training = module.training
    try:
        with warnings.catch_warnings():
            # The legacy exporter warns that it is legacy, and about training-mode mutations.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                buffer,  # type: ignore[arg-type]  # the legacy exporter writes to file objects
                dynamo=False,
                opset_version=opset,
                input_names=names,
                dynamic_axes=dynamic,
                training=mode,
                do_constant_folding=fold_batchnorm and not training,
            )
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise OnnxImportError(
            f"torch ONNX export of {type(module).__name__} with input shape "
            f"{shapes if len(shapes) > 1 else shapes[0]} failed: "
            f"{text[0] if text else type(exc).__name__}"
        ) from None
    finally:
        module.train(was_training)
    return onnx.load_model_from_string(buffer.getvalue())


def from_torch(
    module: torch.nn.Module,
    input_shape: Sequence[int] | Sequence[Sequence[int]],
    name: str | None = None,
    *,
    fold_batchnorm: bool = True,
    training: bool = False,
    opset: int = OPSET,
    meta: Mapping[str, Any] | None = None,
) -> NetworkGraph:
    """The IR of a torch module for inputs of ``input_shape`` (batch included).

    ``name`` defaults to the module's class name; ``meta`` adds provenance (``family``,
    ``reference``). See :func:`torch_to_onnx` for the export options and errors.
    """
    shapes = _shapes(input_shape)
    model = torch_to_onnx(
        module, shapes, fold_batchnorm=fold_batchnorm, training=training, opset=opset
    )
    label = name or type(module).__name__
    info: dict[str, Any] = {"family": "torch", "reference": label, "source": "torch"}
    info.update(meta or {})
    return from_onnx(model, name=label, meta=info)


def _shapes(input_shape: Sequence[int] | Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    if not input_shape:
        raise OnnxImportError("from_torch needs an input shape, e.g. (1, 3, 224, 224)")
    first = input_shape[0]
    raw = [input_shape] if isinstance(first, int) else list(input_shape)
    shapes = []
    for s in raw:
        try:
            shape = tuple(int(d) for d in s)  # type: ignore[union-attr,attr-defined]
        except (TypeError, ValueError):
            raise OnnxImportError(f"invalid input shape {input_shape!r}") from None
        if not shape or any(d < 1 for d in shape):
            raise OnnxImportError(f"invalid input shape {input_shape!r}: dims must be positive")
        shapes.append(shape)
    return shapes
