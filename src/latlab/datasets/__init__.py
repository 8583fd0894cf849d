"""Search spaces, real architectures, measurement, the dataset store and table loaders.

Importing this package registers the built-in network reference schemes. Heavy libraries
(torch, onnxruntime) are imported lazily by the modules that need them.
"""

from latlab.datasets import bench, onnx_files, spaces, zoo
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
