"""Search spaces, real architectures, measurement, the dataset store and table loaders.

Importing this package registers nothing: reference schemes, search spaces and measurement
backends are lazy entries of their registries (:mod:`latlab.registry`), imported on first use.
Heavy libraries (torch, onnxruntime) are imported lazily by the modules that need them.
"""

import importlib
from types import ModuleType

from latlab.datasets.references import (
    Reference,
    Scheme,
    parse_reference,
    register_scheme,
    resolve,
    resolve_many,
)

__all__ = [
    "Reference",
    "Scheme",
    "bench",
    "onnx_files",
    "parse_reference",
    "register_scheme",
    "resolve",
    "resolve_many",
    "spaces",
    "zoo",
]


_SUBPACKAGES = ("bench", "onnx_files", "spaces", "zoo")


def __getattr__(name: str) -> ModuleType:
    """``latlab.datasets.zoo`` and the other sub-packages, imported on first access."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"latlab.datasets.{name}")
    raise AttributeError(f"module 'latlab.datasets' has no attribute {name!r}")
