"""Network references: the strings that name networks everywhere in latlab.

A reference is ``SCHEME:BODY`` -- ``onnx:PATH``, ``nb201:ARCH``, ``fcnn:IN-H1-...-OUT``,
``zoo:NAME[@RES]``, ``bnn-fcnn:...`` and whatever else a module registers. Datasets, CLIs,
bundles and services pass references around; :func:`resolve` turns one into a
:class:`~latlab.encoders.ir.NetworkGraph`.

Each scheme is a :class:`Scheme` (a resolver, and optionally a cheap validator used by
:func:`parse_reference`) kept as a module attribute of the module that owns it and registered
once in :data:`SCHEMES` (a :class:`latlab.registry.Registry`): the built-ins as lazy
``"module:attr"`` entries in :data:`BUILTIN_SCHEMES` (a scheme's module is imported when a
reference first uses it), plug-ins through the ``latlab.schemes`` entry-point group or as the
``scheme`` of a plug-in search space (:attr:`latlab.datasets.spaces.base.SearchSpace.scheme`).
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from threading import Lock
from typing import Any

from latlab.encoders.ir import NetworkGraph
from latlab.errors import NetworkReferenceError
from latlab.registry import Registry

Resolver = Callable[[str, "ResolveOptions"], NetworkGraph]


@dataclass(frozen=True, slots=True)
class ResolveOptions:
    """How to materialise a reference: batch size and, for dynamic inputs, the input shape."""

    batch: int = 1
    input_shape: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Scheme:
    """A reference scheme: how to validate a body cheaply and how to build its graph."""

    name: str
    resolve: Resolver
    validate: Callable[[str], object] | None = None
    help: str = ""
    #: For schemes whose networks exist as files (``onnx:``): the executable model itself.
    model: Callable[[str, ResolveOptions], Any] | None = None
    #: Whether resolving reads a file on this machine (the body is then its path): a server
    #: accepts such references from clients only inside an allowed folder
    #: (:func:`confine_reference`).
    reads_files: bool = False
    #: For parametric schemes whose bodies can spell one network several ways (``kernel:``,
    #: ``block:``: keys in any order, defaults written out): the canonical reference of a
    #: body, under which the store registers, and a resumed campaign recognises, the network.
    canonical: Callable[[str], str] | None = None


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference."""

    scheme: str
    body: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.body}"


#: The built-in schemes: prefix -> the :class:`Scheme` object, as a lazy ``"module:attr"``.
BUILTIN_SCHEMES: dict[str, str] = {
    "onnx": "latlab.datasets.onnx_files:SCHEME",
    "zoo": "latlab.datasets.zoo:SCHEME",
    "kernel": "latlab.datasets.bench.kernels:KERNEL_SCHEME",
    "block": "latlab.datasets.spaces.blocks:SCHEME",
    "bnn-fcnn": "latlab.datasets.spaces.bnn:FCNN_SCHEME",
    "bnn-cnn": "latlab.datasets.spaces.bnn:CNN_SCHEME",
    "cnn": "latlab.datasets.spaces.cnn:SCHEME",
    "fcnn": "latlab.datasets.spaces.fcnn:SCHEME",
    "fbnet": "latlab.datasets.spaces.fbnet:SCHEME",
    "nb201": "latlab.datasets.spaces.nb201:SCHEME",
    "ofa": "latlab.datasets.spaces.ofa:SCHEME",
}

#: Prefix -> scheme; plug-ins: the ``latlab.schemes`` entry points.
SCHEMES: Registry[Scheme] = Registry(
    "network reference scheme",
    group="latlab.schemes",
    check=lambda obj: isinstance(obj, Scheme),
    entries=BUILTIN_SCHEMES,
)


def register_scheme(scheme: Scheme) -> None:
    """Make ``scheme.name:`` references resolvable (for a scheme made at run time; a module's
    scheme is registered once, as a lazy entry or an entry point)."""
    SCHEMES.register(scheme.name, scheme)


def normalise_reference(ref: str) -> str:
    """The one rule for how a reference may be written: surrounding space is ignored, and a
    bare body a search space serves (a NAS-Bench-201 arch string starting with ``|``) means
    that space's prefix + the body (:func:`latlab.datasets.spaces.bare_reference`).
    Every entry point (resolve, predict, evaluate, tables, serving) goes through it."""
    from latlab.datasets.spaces import bare_reference

    text = ref.strip()
    return bare_reference(text) or text


def parse_reference(ref: str) -> Reference:
    """Split and validate a reference; raises :class:`NetworkReferenceError` naming it."""
    if not isinstance(ref, str):
        raise NetworkReferenceError(f"a network reference must be a string, got {ref!r}")
    scheme, sep, body = normalise_reference(ref).partition(":")
    if not sep or not scheme or not body:
        raise NetworkReferenceError(
            f"malformed network reference {ref!r}: expected SCHEME:BODY, e.g. 'zoo:resnet18'"
        )
    first_use = SCHEMES.is_lazy(scheme)
    entry = SCHEMES.get(scheme) or _space_scheme(scheme)
    if first_use:
        _load_space(scheme)
    if entry is None:
        known = ", ".join(sorted(SCHEMES))
        raise NetworkReferenceError(
            f"unknown network reference scheme {scheme!r} in {ref!r} (known: {known})"
        )
    if entry.validate is not None:
        entry.validate(body)
    return Reference(scheme, body)


def canonical_reference(ref: str) -> str:
    """The one spelling of the network ``ref`` names that the store keys it by: the scheme's
    canonical form where it has one (``kernel:conv?c=8&h=8`` and ``kernel:conv?h=8&c=8`` are
    one benchmark), else the normalised reference. Validates ``ref`` (raises
    :class:`NetworkReferenceError` naming it)."""
    parsed = parse_reference(ref)
    entry = SCHEMES.get(parsed.scheme) or _space_scheme(parsed.scheme)
    if entry is not None and entry.canonical is not None:
        return entry.canonical(parsed.body)
    return f"{parsed.scheme}:{parsed.body}"


class _LRU:
    """A small thread-safe LRU cache of resolved graphs (they are immutable by convention)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[tuple[str, ResolveOptions], NetworkGraph] = OrderedDict()
        self.lock = Lock()

    def get(self, key: tuple[str, ResolveOptions]) -> NetworkGraph | None:
        with self.lock:
            graph = self.data.get(key)
            if graph is not None:
                self.data.move_to_end(key)
            return graph

    def put(self, key: tuple[str, ResolveOptions], graph: NetworkGraph) -> None:
        with self.lock:
            self.data[key] = graph
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


_CACHE = _LRU(32768)  # the whole nb201 space fits: its lazy graphs are small


def resolve(
    ref: str | NetworkGraph,
    *,
    batch: int = 1,
    input_shape: Sequence[int] | None = None,
) -> NetworkGraph:
    """The IR of a reference (graphs pass through unchanged). Results are cached.

    ``onnx:`` files are not cached by path alone: their modification time is part of the key.
    """
    if isinstance(ref, NetworkGraph):
        return ref
    parsed = parse_reference(ref)
    opts = ResolveOptions(batch, tuple(int(d) for d in input_shape) if input_shape else None)
    key_ref = str(parsed)
    if parsed.scheme == "onnx":
        with contextlib.suppress(OSError):  # a missing file is reported by the resolver
            key_ref += f"@{os.stat(parsed.body).st_mtime_ns}"
    cached = _CACHE.get((key_ref, opts))
    if cached is not None:
        return cached
    graph = SCHEMES[parsed.scheme].resolve(parsed.body, opts)
    graph.meta.setdefault("reference", str(parsed))
    graph.meta.setdefault("family", parsed.scheme)
    _CACHE.put((key_ref, opts), graph)
    return graph


def resolve_many(
    refs: Sequence[str | NetworkGraph], *, batch: int = 1, input_shape: Sequence[int] | None = None
) -> list[NetworkGraph]:
    """:func:`resolve` over a sequence."""
    return [resolve(r, batch=batch, input_shape=input_shape) for r in refs]


def invalid_references(refs: Sequence[str]) -> list[tuple[int, str, str]]:
    """``(row, reference, message)`` for every reference that does not parse (its scheme's
    cheap validation; files are not opened), rows counted from 0."""
    bad = []
    for i, ref in enumerate(refs):
        try:
            parse_reference(ref)
        except NetworkReferenceError as exc:
            bad.append((i, str(ref), str(exc)))
    return bad


def reads_files(ref: str) -> bool:
    """Whether resolving ``ref`` reads a file (its scheme's ``reads_files`` flag)."""
    return SCHEMES[parse_reference(ref).scheme].reads_files


def confine_reference(ref: str, allowed_dir: str | os.PathLike[str] | None) -> str:
    """``ref`` as a server may resolve it for a client: unchanged when its scheme reads no
    file; else only when ``allowed_dir`` is given and the path (relative to ``allowed_dir``,
    or absolute inside it) stays inside it after resolving links -- returned with the path
    made absolute. Refusals never say whether a path exists or where ``allowed_dir`` is."""
    parsed = parse_reference(ref)
    if not SCHEMES[parsed.scheme].reads_files:
        return ref
    if allowed_dir is None:
        raise NetworkReferenceError(
            f"{parsed.scheme}: references name files, which this server does not read "
            f"(send an in-memory reference such as nb201:, fcnn: or zoo:)"
        )
    root = os.path.realpath(allowed_dir)
    body = parsed.body.strip()
    target = os.path.realpath(os.path.join(root, body))
    if os.path.commonpath([root, target]) != root or target == root:
        raise NetworkReferenceError(
            f"{parsed.scheme}:{body} is outside the folder this server reads files from "
            "(name a file relative to that folder)"
        )
    return f"{parsed.scheme}:{target}"


def reference_of(network: str | NetworkGraph) -> str:
    """The reference string of a network given as a reference or a graph."""
    return network if isinstance(network, str) else network.reference


def _load_space(prefix: str) -> None:
    """Load the search space named ``prefix``, if there is one, when its scheme is first used
    (the space's module is imported by then): the space's encoders and serving fast path are
    then registered, as they were when the module registered them on import."""
    from latlab.datasets.spaces import SPACES

    SPACES.get(prefix)


def _space_scheme(prefix: str) -> Scheme | None:
    """The scheme of a (plug-in) search space named ``prefix`` that carries one, registered
    now; ``None`` when there is none."""
    from latlab.datasets.spaces import SPACES

    space = SPACES.get(prefix)
    scheme = getattr(space, "scheme", None)
    if scheme is None:
        return None
    SCHEMES.register(prefix, scheme)
    return scheme


def onnx_model(
    network: str | NetworkGraph,
    *,
    batch: int = 1,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
    precision: str = "fp32",
) -> Any:
    """The ``onnx.ModelProto`` to run for a network.

    A scheme with its own executable (an ``onnx:`` file) returns that model; any other network
    is exported from its IR with seeded weights (:func:`latlab.encoders.onnx_export.to_onnx`).
    ``precision="int8"`` returns its statically quantised QDQ model
    (:func:`latlab.encoders.quantize.quantize_model`, calibrated on generated inputs, cached by
    content); ``bf16`` has no ONNX model here (onnxruntime's CPU kernels do not run it: the
    ``torch`` backend does) and raises.
    """
    from latlab.encoders.onnx_export import to_onnx
    from latlab.encoders.quantize import PrecisionError, check_precision

    check_precision(precision)
    if precision == "bf16":
        raise PrecisionError(
            "bf16 has no onnxruntime CPU model: onnxruntime's CPU provider has no bfloat16 "
            "Conv/MatMul/Gemm kernels; measure bf16 with --backend torch"
        )
    model = None
    if isinstance(network, str):
        parsed = parse_reference(network)
        scheme = SCHEMES[parsed.scheme]
        if scheme.model is not None:
            opts = ResolveOptions(
                batch, tuple(int(d) for d in input_shape) if input_shape else None
            )
            model = scheme.model(parsed.body, opts)
    if model is None:
        graph = resolve(network, batch=batch, input_shape=input_shape)
        model = to_onnx(graph, seed=seed)
    if precision == "int8":
        model = _quantized(network, model, batch, input_shape)
    return model


#: Generated batches the int8 quantiser calibrates activation ranges on.
CALIBRATION_BATCHES = 4


def _quantized(
    network: str | NetworkGraph, model: Any, batch: int, input_shape: Sequence[int] | None
) -> Any:
    from latlab.datasets.measure.inputs import fixed_inputs
    from latlab.encoders.quantize import quantize_model

    batches = [
        fixed_inputs(network, model, batch, input_shape, seed=1 + i)
        for i in range(CALIBRATION_BATCHES)
    ]
    return quantize_model(model, batches)
