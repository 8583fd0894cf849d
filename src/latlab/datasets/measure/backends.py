"""Measurement backends: how a network is run on this machine.

Backends are registered by name in :data:`BACKENDS`, a :class:`latlab.registry.Registry`:
the built-ins as lazy ``"module:factory"`` entries (so that naming a backend imports none of
the backend modules, and a backend module has no registration side effect), plug-ins through
the ``latlab.backends`` entry-point group. The measurement protocol
(:mod:`latlab.datasets.measure.protocol`) only ever sees the zero-argument callable that
:meth:`Backend.prepare` returns -- one inference on fixed inputs -- so that every backend
(onnxruntime, torch eager, CUDA, the bit-packed binary backend) is timed the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from latlab.encoders.ir import NetworkGraph
from latlab.errors import MeasurementError
from latlab.registry import Registry


class Backend(Protocol):
    """What the protocol needs from a backend."""

    name: str

    def info(self) -> dict[str, Any]:
        """Backend name, library versions, providers/devices: recorded with every measurement."""
        ...

    def prepare(self, network: str | NetworkGraph, batch: int, threads: int) -> Callable[[], None]:
        """Load ``network`` and return a callable running one inference on fixed inputs.

        The callable must block until the result is ready (synchronise GPUs).
        """
        ...


BackendFactory = Callable[[], Backend]

#: The built-in backends: name -> the zero-argument factory, as a lazy ``"module:attr"``.
BUILTIN_BACKENDS: dict[str, str] = {
    "onnxruntime": "latlab.datasets.measure.onnxruntime_backend:OnnxRuntimeBackend",
    "onnxruntime-cuda": "latlab.datasets.measure.onnxruntime_backend:cuda_backend",
    "torch": "latlab.datasets.measure.torch_backend:TorchBackend",
    "torch-cuda": "latlab.datasets.measure.torch_backend:cuda_backend",
    "bitpacked": "latlab.datasets.measure.bitpacked:BitpackedBackend",
}

#: Name -> backend factory (``--backend``); plug-ins: the ``latlab.backends`` entry points.
BACKENDS: Registry[BackendFactory] = Registry(
    "measurement backend", group="latlab.backends", check=callable, entries=BUILTIN_BACKENDS
)


def register_backend(name: str, factory: BackendFactory | str) -> None:
    """Make ``name`` usable as ``--backend`` (``factory`` or ``"module:attr"`` naming it);
    ``factory()`` may raise MeasurementError."""
    BACKENDS.register(name, factory)


def get_backend(name: str) -> Backend:
    """An instance of backend ``name``; raises naming it and the known backends."""
    if name not in BACKENDS:
        raise MeasurementError(BACKENDS.unknown(name))
    return BACKENDS[name]()
