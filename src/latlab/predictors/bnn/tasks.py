"""The forward and inverse tasks of Shakkouf & Gromov on the LXNOROP model.

*Forward*: the inference rate of model ``M`` on target ``T`` and whether ``M`` fits in
``Memory_T``. *Inverse*: every target of a catalog that reaches a required rate ``R`` and
holds ``M``, sorted by rate margin ``R_T/R − 1`` (largest first).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latlab.datasets.references import resolve
from latlab.encoders.ir import NetworkGraph
from latlab.errors import DataError
from latlab.predictors.bnn.model import (
    BnnCounts,
    CostBreakdown,
    MemoryBreakdown,
    cost_of,
    count_network,
    layer_costs,
    model_memory,
)
from latlab.predictors.bnn.targets import Target, check_bus, get_target, load_catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwardResult:
    """The forward task's answer for one network on one target."""

    network: str
    target: str
    bus_width: int
    cp_hz: float
    fps: float
    latency_ms: float
    xnorops: int
    lxnorops: float
    clocks_xnorop: float
    clocks_lxnorop: float
    counts: BnnCounts
    clocks: CostBreakdown
    memory: MemoryBreakdown
    memory_limit_bytes: int
    storage_limit_bytes: int | None
    fits: bool
    warnings: tuple[str, ...] = field(default_factory=tuple)
    layers: tuple[dict[str, Any], ...] = ()

    @property
    def memory_bytes(self) -> int:
        return self.memory.total_bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the CLI's ``--json``)."""
        return {
            "network": self.network,
            "target": self.target,
            "bus_width": self.bus_width,
            "cp_hz": self.cp_hz,
            "fps": self.fps,
            "latency_ms": self.latency_ms,
            "xnorops": self.xnorops,
            "lxnorops": self.lxnorops,
            "clocks_xnorop": self.clocks_xnorop,
            "clocks_lxnorop": self.clocks_lxnorop,
            "memory_bytes": self.memory_bytes,
            "memory": self.memory.as_dict(),
            "memory_limit_bytes": self.memory_limit_bytes,
            "storage_limit_bytes": self.storage_limit_bytes,
            "fits": self.fits,
            "counts": self.counts.as_dict(),
            "clocks": self.clocks.as_dict(),
            "layers": list(self.layers),
            "warnings": list(self.warnings),
        }


def fits_in(memory: MemoryBreakdown, target: Target) -> bool:
    """Whether ``Memory_M`` fits ``Memory_T`` (weights may live in read-only storage)."""
    if target.storage_bytes is None:
        return memory.total_bytes <= target.memory_bytes
    return (
        memory.weights_bytes <= target.storage_bytes
        and memory.activations_bytes + memory.other_bytes <= target.memory_bytes
    )


def no_binary_warning(network: str) -> str:
    return (
        f"network {network!r} has no binary layers: its layers are costed as FLOPs "
        "(the XNOROP model has nothing binary to count)"
    )


def forward(
    network: str | NetworkGraph,
    target: str | Target,
    *,
    bus_width: int | None = None,
    catalog: str | Path | None = None,
    warn: bool = True,
) -> ForwardResult:
    """Rate of ``network`` on ``target`` (a :class:`Target`, ``host``, a catalog name or file).

    ``bus_width`` overrides the target's bus width (one of 8, 16, 32, 64, 128, 256). A network
    without binary layers is costed as FLOPs, with a warning (logged when ``warn``, and always
    listed in ``warnings``).
    """
    t = get_target(target, catalog)
    if bus_width is not None:
        t = t.with_bus(check_bus(bus_width, f"target {t.name!r}"))
    graph = resolve(network)
    counts = count_network(graph, t.bus_width)
    memory = model_memory(graph)
    clocks = cost_of(counts, t)
    warnings: list[str] = []
    if counts.binary_layers == 0:
        warnings.append(no_binary_warning(graph.reference))
        if warn:
            log.warning(warnings[-1])
    total = clocks.total
    seconds = total / t.cp_hz
    return ForwardResult(
        network=graph.reference,
        target=t.name,
        bus_width=t.bus_width,
        cp_hz=t.cp_hz,
        fps=1.0 / seconds if seconds > 0 else math.inf,
        latency_ms=seconds * 1e3,
        xnorops=counts.xnorops,
        lxnorops=total / t.lxnorop_for(counts.weights_bytes),
        clocks_xnorop=t.clocks_xnorop,
        clocks_lxnorop=t.lxnorop_for(counts.weights_bytes),
        counts=counts,
        clocks=clocks,
        memory=memory,
        memory_limit_bytes=t.memory_bytes,
        storage_limit_bytes=t.storage_bytes,
        fits=fits_in(memory, t),
        warnings=tuple(warnings),
        layers=tuple(layer_costs(graph, t)),
    )


@dataclass(frozen=True)
class InverseMatch:
    """A catalog target checked against the required rate."""

    target: str
    title: str
    fps: float
    margin: float
    memory_bytes: int
    memory_limit_bytes: int
    fits: bool
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = {
            "target": self.target,
            "title": self.title,
            "fps": self.fps,
            "margin": self.margin,
            "memory_bytes": self.memory_bytes,
            "memory_limit_bytes": self.memory_limit_bytes,
            "fits": self.fits,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class InverseResult:
    """The inverse task's answer: the targets that qualify and why the others do not."""

    network: str
    required_fps: float
    matches: tuple[InverseMatch, ...]
    rejected: tuple[InverseMatch, ...]
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "required_fps": self.required_fps,
            "matches": [m.as_dict() for m in self.matches],
            "rejected": [m.as_dict() for m in self.rejected],
            "warnings": list(self.warnings),
        }


def check_rate(fps: Any) -> float:
    """A required inference rate: a finite number > 0 (frames per second)."""
    try:
        r = float(fps)
    except (TypeError, ValueError):
        raise DataError(f"required inference rate {fps!r} is not a number of frames/s") from None
    if not math.isfinite(r) or r <= 0:
        raise DataError(
            f"required inference rate must be a positive number of frames/s, got {fps!r}"
        )
    return r


def inverse(
    network: str | NetworkGraph,
    fps: float,
    *,
    catalog: str | Path | None = None,
    targets: list[Target] | None = None,
    warn: bool = True,
) -> InverseResult:
    """Every target (of ``targets``, else of the catalog) that reaches ``fps`` and holds ``M``.

    Matches are sorted by rate margin ``R_T/R − 1``, largest first; ``rejected`` says why
    each other target fails (too slow, too little memory, or both).
    """
    required = check_rate(fps)
    pool = targets if targets is not None else load_catalog(catalog)
    graph = resolve(network)
    matches: list[InverseMatch] = []
    rejected: list[InverseMatch] = []
    warnings: tuple[str, ...] = ()
    for t in pool:
        res = forward(graph, t, warn=False)
        if res.warnings and not warnings:
            warnings = res.warnings
            for w in warnings if warn else ():
                log.warning(w)
        margin = res.fps / required - 1.0
        reasons = []
        if res.fps < required:
            reasons.append(f"{res.fps:.4g} fps < {required:.4g}")
        if not res.fits:
            reasons.append(f"needs {res.memory_bytes} B, has {t.memory_bytes} B RAM")
        m = InverseMatch(
            target=t.name,
            title=t.title,
            fps=res.fps,
            margin=margin,
            memory_bytes=res.memory_bytes,
            memory_limit_bytes=t.memory_bytes,
            fits=res.fits,
            reason="; ".join(reasons),
        )
        (rejected if reasons else matches).append(m)
    matches.sort(key=lambda m: -m.margin)
    rejected.sort(key=lambda m: -m.margin)
    return InverseResult(graph.reference, required, tuple(matches), tuple(rejected), warnings)
