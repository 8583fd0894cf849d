"""Measurement backends: how a network is run on this machine.

A backend is registered by name with :func:`register_backend`. The measurement protocol
(:mod:`latlab.datasets.measure.protocol`) only ever sees the zero-argument callable that
:meth:`Backend.prepare` returns -- one inference on fixed inputs -- so that every backend
(onnxruntime, torch eager, CUDA, the bit-packed binary backend) is timed the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from latlab.encoders.ir import NetworkGraph
from latlab.errors import MeasurementError


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
BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``name`` usable as ``--backend``; ``factory()`` may raise MeasurementError."""
    BACKENDS[name] = factory


def get_backend(name: str) -> Backend:
    """An instance of backend ``name``; raises naming it and the known backends."""
    if name not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise MeasurementError(f"unknown measurement backend {name!r} (known: {known})")
    return BACKENDS[name]()
