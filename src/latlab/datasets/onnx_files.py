"""The ``onnx:PATH`` reference scheme: any ONNX file as a network.

``resolve("onnx:model.onnx", input_shape=...)`` imports the file's structure (weights are not
read: only shapes matter). ``references.onnx_model("onnx:model.onnx", ...)`` returns the file
itself, with its external weights and its dynamic input dimensions fixed, so that measurement
runs exactly what the user gave rather than a re-export (weights the file does not ship are
filled with seeded random values: latency does not depend on them).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from latlab.datasets.references import ResolveOptions, Scheme
from latlab.encoders.ir import NetworkGraph
from latlab.errors import NetworkReferenceError

log = logging.getLogger(__name__)


def _path(body: str) -> Path:
    path = Path(body).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise NetworkReferenceError(f"network reference 'onnx:{body}' names no file: {path} {what}")
    return path


def _validate(body: str) -> None:
    if not body.strip():
        raise NetworkReferenceError("malformed reference 'onnx:': expected onnx:PATH")


def _resolve(body: str, opts: ResolveOptions) -> NetworkGraph:
    from latlab.encoders.onnx_import import from_onnx

    path = _path(body)
    graph = from_onnx(
        path,
        input_shape=opts.input_shape,
        name=path.stem,
        batch=opts.batch,
        meta={"reference": f"onnx:{body}", "family": "onnx"},
    )
    _check_opset(body, graph.meta.get("opset"))
    return graph


def _check_opset(body: str, opset: Any) -> None:
    """Refuse a file whose default-domain opset is newer than the installed onnx knows: its
    operators' meaning (and latlab's shapes for them) would be guesses."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, int) and opset > newest:
        raise NetworkReferenceError(
            f"network reference 'onnx:{body}' declares opset {opset}, newer than the installed "
            f"onnx knows (up to {newest}): export it at opset {newest} or below"
        )


def _model(body: str, opts: ResolveOptions) -> Any:
    """The runnable ModelProto of the file: external data loaded, dynamic inputs fixed.

    Weights the file does not ship are filled with seeded random values (with a warning):
    see :func:`latlab.encoders.onnx_import.load_runnable`.
    """
    from latlab.encoders.onnx_import import load_runnable

    return load_runnable(_path(body), opts.input_shape, batch=opts.batch)


#: The ``onnx:`` reference scheme (registered in ``references.BUILTIN_SCHEMES``).
SCHEME = Scheme(
    "onnx",
    _resolve,
    validate=_validate,
    help="an ONNX file: onnx:PATH (dynamic input dims need input_shape)",
    model=_model,
    reads_files=True,
)
