"""ANNETTE's benchmark tool: micro-kernel and multi-layer benchmarks, smart padding, profiling.

Importing the package registers the ``kernel:`` reference scheme (:mod:`.kernels`). The
measurement side (campaigns, the onnxruntime profiler, fusion labels, the benchmark tables of
the store) lives in its submodules and imports onnxruntime only when it runs.
"""

from latlab.datasets.bench import kernels
from latlab.datasets.bench.kernels import (
    KernelSpec,
    Part,
    build_kernel,
    format_kernel,
    kernel_reference,
    parse_kernel,
)

__all__ = [
    "KernelSpec",
    "Part",
    "build_kernel",
    "format_kernel",
    "kernel_reference",
    "kernels",
    "parse_kernel",
]
