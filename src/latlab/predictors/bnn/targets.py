"""Hardware targets of the XNOROP/LXNOROP model: the catalog, target files and the host.

A target is ``T = (Bus_T, Memory_T = (Size_T, Speed_T), CPU_T = (f_T per core, C_T))``
(Shakkouf & Gromov) plus the clock costs the model needs:

* ``clocks.xnor``, ``clocks.popcount``, ``clocks.accumulate``: clocks of the three
  instructions of one XNOROP on a ``Bus_T``-bit word (their sum is ``Clocks_XNOROP``;
  a target file may give the sum directly as ``clocks.xnorop``);
* ``memory.speed_clocks`` (``Speed_T``): clocks to fetch one ``Bus_T``-bit word from the
  memory that holds the operands; ``Clocks_LXNOROP = Clocks_XNOROP + 2·Speed_T`` (a weight
  word and an activation word per XNOROP);
* optional ``memory.cache_bytes`` and ``memory.cache_speed_clocks``: a faster level (a CPU's
  L2 cache) that holds the weights when they all fit in it, in which case ``Speed_T`` is the
  cache's (:meth:`Target.lxnorop_for`); the calibrated host has one, the catalog does not;
* ``clocks.threshold`` (default 3): clocks to compare one binary output with its BN+Sign
  threshold and store the bit;
* ``clocks.mac`` and ``clocks.flop``: clocks per MAC and per other FLOP of the non-binary
  layers (full-precision first/last layers, un-fused BN, pooling);
* optional ``clocks.weight_byte`` (and ``clocks.cache_weight_byte`` for weights held in the
  cache level): clocks per byte of full-precision weights streamed per inference (0 by
  default: the catalog's ``clocks.mac`` already includes the weight load);
* optional ``clocks.pack`` (per operand bit gathered by im2col), ``clocks.layer`` (per
  executed layer) and ``clocks.inference`` (per call): runtime overheads that the paper's
  bare-metal setting does not have and that the host calibration measures (0 by default).

``memory.size_bytes`` is the RAM the model must fit in; ``memory.storage_bytes`` (optional)
is read-only storage (flash) where an MCU keeps the weights: with it, a model fits when its
weights fit in storage and its activations and other data in RAM.

The catalog (``latlab/data/bnn_targets.json``) lists real devices with their datasheet
figures (frequency, cores, memories) and clock costs derived from their instruction sets;
each entry names its sources. ``host`` is this machine, detected (:func:`detect_host`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from latlab.encoders.binary import BUS_WIDTHS
from latlab.errors import TargetError
from latlab.fileio import atomic_write_text

log = logging.getLogger(__name__)

#: Operand words fetched per XNOROP: one weight word and one activation word.
FETCHES_PER_XNOROP = 2
SCHEMA = 1
CATALOG_RESOURCE = "bnn_targets.json"


@dataclass(frozen=True)
class Target:
    """One hardware target (see the module docstring for the meaning of every field)."""

    name: str
    bus_width: int
    memory_bytes: int
    speed_clocks: float
    freq_hz: tuple[float, ...]
    clocks_xnor: float
    clocks_popcount: float
    clocks_accumulate: float
    clocks_mac: float
    clocks_flop: float
    storage_bytes: int | None = None
    clocks_pack: float = 0.0
    clocks_threshold: float = 3.0
    clocks_weight_byte: float = 0.0
    cache_bytes: int | None = None
    cache_speed_clocks: float = 0.0
    clocks_cache_weight_byte: float | None = None
    clocks_layer: float = 0.0
    clocks_inference: float = 0.0
    xnorop_override: float | None = None
    kind: str = "cpu"
    title: str = ""
    source: str = ""
    notes: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def cores(self) -> int:
        """``C_T``: number of cores used."""
        return len(self.freq_hz)

    @property
    def cp_hz(self) -> float:
        """Computation power ``CP = Σ_cores f_i`` (clocks per second)."""
        return float(sum(self.freq_hz))

    @property
    def clocks_xnorop(self) -> float:
        """``Clocks_XNOROP``: XNOR + popcount + accumulate on one word."""
        if self.xnorop_override is not None:
            return self.xnorop_override
        return self.clocks_xnor + self.clocks_popcount + self.clocks_accumulate

    @property
    def clocks_lxnorop(self) -> float:
        """``Clocks_LXNOROP = Clocks_XNOROP + 2·Speed_T``, operands fetched from main memory."""
        return self.clocks_xnorop + FETCHES_PER_XNOROP * self.speed_clocks

    def in_cache(self, weights_bytes: int) -> bool:
        """Whether a model with ``weights_bytes`` of weights runs with them in the cache level."""
        return self.cache_bytes is not None and weights_bytes <= self.cache_bytes

    def lxnorop_for(self, weights_bytes: int) -> float:
        """``Clocks_LXNOROP`` with ``Speed_T`` of the memory that holds the model's weights.

        In steady state (one inference after another) the weights stay in the cache level when
        they all fit there, and stream from main memory otherwise (cyclic access larger than
        an LRU cache hits nothing).
        """
        speed = self.cache_speed_clocks if self.in_cache(weights_bytes) else self.speed_clocks
        return self.clocks_xnorop + FETCHES_PER_XNOROP * speed

    def weight_byte_for(self, weights_bytes: int) -> float:
        """Clocks per full-precision weight byte, from the level that holds the weights."""
        if self.in_cache(weights_bytes) and self.clocks_cache_weight_byte is not None:
            return self.clocks_cache_weight_byte
        return self.clocks_weight_byte

    def with_bus(self, bus_width: int) -> Target:
        """The same target with another bus width (validated)."""
        check_bus(bus_width, self.name)
        return _replace(self, bus_width=int(bus_width))

    def with_cores(self, cores: int) -> Target:
        """The same target using ``cores`` cores at its first core's frequency."""
        if cores < 1:
            raise TargetError(f"target {self.name!r}: cores must be >= 1, got {cores}")
        return _replace(self, freq_hz=(self.freq_hz[0],) * int(cores))

    def to_dict(self) -> dict[str, Any]:
        """The target-file form (round-trips through :func:`target_from_dict`)."""
        freq: float | list[float] = (
            self.freq_hz[0] if len(set(self.freq_hz)) == 1 else list(self.freq_hz)
        )
        clocks: dict[str, float] = {}
        if self.xnorop_override is None:
            clocks["xnor"] = self.clocks_xnor
            clocks["popcount"] = self.clocks_popcount
            clocks["accumulate"] = self.clocks_accumulate
        clocks |= {
            "mac": self.clocks_mac,
            "flop": self.clocks_flop,
            "pack": self.clocks_pack,
            "threshold": self.clocks_threshold,
            "weight_byte": self.clocks_weight_byte,
            "layer": self.clocks_layer,
            "inference": self.clocks_inference,
        }
        if self.xnorop_override is not None:
            clocks["xnorop"] = self.xnorop_override
        if self.clocks_cache_weight_byte is not None:
            clocks["cache_weight_byte"] = self.clocks_cache_weight_byte
        memory: dict[str, Any] = {
            "size_bytes": self.memory_bytes,
            "speed_clocks": self.speed_clocks,
        }
        if self.storage_bytes is not None:
            memory["storage_bytes"] = self.storage_bytes
        if self.cache_bytes is not None:
            memory["cache_bytes"] = self.cache_bytes
            memory["cache_speed_clocks"] = self.cache_speed_clocks
        doc: dict[str, Any] = {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "bus_width": self.bus_width,
            "memory": memory,
            "cpu": {"freq_hz": freq, "cores": self.cores},
            "clocks": clocks,
            "source": self.source,
            "notes": self.notes,
        }
        if self.calibration:
            doc["calibration"] = self.calibration
        return doc


def _replace(t: Target, **changes: Any) -> Target:
    from dataclasses import replace

    return replace(t, **changes)


def check_bus(bus_width: Any, where: str) -> int:
    """Validate a bus width; raises :class:`TargetError` naming ``where`` and the value."""
    ok = ", ".join(map(str, BUS_WIDTHS))
    try:
        bus = int(bus_width)
    except (TypeError, ValueError):
        raise TargetError(f"{where}: bus width {bus_width!r} is not one of {ok}") from None
    if bus not in BUS_WIDTHS or bus != bus_width:
        raise TargetError(f"{where}: bus width {bus_width!r} is not one of {ok}")
    return bus


# --------------------------------------------------------------------------- parsing


_MISSING = object()


def _get(doc: Mapping[str, Any], path: str, where: str, default: Any = _MISSING) -> Any:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            if default is not _MISSING:
                return default
            raise TargetError(f"{where} lacks field {path!r}")
        cur = cur[part]
    return cur


def _number(doc: Mapping[str, Any], path: str, where: str, default: Any = _MISSING, *,
            positive: bool = False) -> Any:  # fmt: skip
    value = _get(doc, path, where, default)
    if value is None or value is default:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TargetError(f"{where}: field {path!r} must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        sign = "> 0" if positive else ">= 0"
        raise TargetError(f"{where}: field {path!r} must be {sign}, got {value!r}")
    return value


def target_from_dict(doc: Any, where: str = "target") -> Target:
    """Build and validate a :class:`Target` from its JSON form; errors name the field."""
    if not isinstance(doc, Mapping):
        raise TargetError(f"{where}: a target must be a JSON object, got {type(doc).__name__}")
    name = _get(doc, "name", where)
    if not isinstance(name, str) or not name:
        raise TargetError(f"{where}: field 'name' must be a non-empty string")
    if repr(name) not in where:
        where = f"{where}: target {name!r}"
    bus = check_bus(_get(doc, "bus_width", where), where)
    freq = _get(doc, "cpu.freq_hz", where)
    cores = _number(doc, "cpu.cores", where, None, positive=True)
    if isinstance(freq, Sequence) and not isinstance(freq, str):
        freqs = tuple(float(_number({"f": f}, "f", where, positive=True)) for f in freq)
        if not freqs:
            raise TargetError(f"{where}: field 'cpu.freq_hz' is an empty list")
        if cores is not None and int(cores) != len(freqs):
            raise TargetError(
                f"{where}: 'cpu.cores' ({cores}) differs from the {len(freqs)} frequencies given"
            )
    else:
        f = float(_number(doc, "cpu.freq_hz", where, positive=True))
        if cores is None:
            raise TargetError(f"{where} lacks field 'cpu.cores'")
        freqs = (f,) * int(cores)
    storage = _number(doc, "memory.storage_bytes", where, None, positive=True)
    target = Target(
        name=name,
        bus_width=bus,
        memory_bytes=int(_number(doc, "memory.size_bytes", where, positive=True)),
        speed_clocks=float(_number(doc, "memory.speed_clocks", where)),
        storage_bytes=int(storage) if storage is not None else None,
        freq_hz=freqs,
        clocks_xnor=float(_number(doc, "clocks.xnor", where, 0.0)),
        clocks_popcount=float(_number(doc, "clocks.popcount", where, 0.0)),
        clocks_accumulate=float(_number(doc, "clocks.accumulate", where, 0.0)),
        xnorop_override=_opt_float(_number(doc, "clocks.xnorop", where, None)),
        cache_bytes=_opt_int(_number(doc, "memory.cache_bytes", where, None, positive=True)),
        cache_speed_clocks=float(_number(doc, "memory.cache_speed_clocks", where, 0.0)),
        clocks_cache_weight_byte=_opt_float(_number(doc, "clocks.cache_weight_byte", where, None)),
        clocks_mac=float(_number(doc, "clocks.mac", where)),
        clocks_flop=float(_number(doc, "clocks.flop", where)),
        clocks_pack=float(_number(doc, "clocks.pack", where, 0.0)),
        clocks_threshold=float(_number(doc, "clocks.threshold", where, 3.0)),
        clocks_weight_byte=float(_number(doc, "clocks.weight_byte", where, 0.0)),
        clocks_layer=float(_number(doc, "clocks.layer", where, 0.0)),
        clocks_inference=float(_number(doc, "clocks.inference", where, 0.0)),
        kind=str(doc.get("kind", "cpu")),
        title=str(doc.get("title", "")),
        source=str(doc.get("source", "")),
        notes=str(doc.get("notes", "")),
        calibration=dict(doc.get("calibration", {}) or {}),
    )
    if target.clocks_xnorop <= 0:
        raise TargetError(
            f"{where} lacks field 'clocks.xnorop' (or clocks.xnor/popcount/accumulate > 0)"
        )
    return target


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


# --------------------------------------------------------------------------- catalog and files


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TargetError(f"{what} {str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise TargetError(f"{what} {str(path)!r} is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise TargetError(f"{what} {str(path)!r} is not a text (JSON) file") from None
    except OSError as exc:
        raise TargetError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None


def load_catalog(path: str | Path | None = None) -> list[Target]:
    """Targets of a catalog file (the shipped catalog by default), validated.

    A catalog is ``{"schema": 1, "targets": [target, ...]}`` (a bare list is accepted); an
    entry with a missing or invalid field raises :class:`TargetError` naming the file, the
    target and the field.
    """
    if path is None:
        text = resources.files("latlab").joinpath("data", CATALOG_RESOURCE).read_text()
        doc = json.loads(text)
        where = "catalog " + CATALOG_RESOURCE
    else:
        doc = _read_json(Path(path), "catalog")
        where = f"catalog {str(path)!r}"
    entries = doc.get("targets") if isinstance(doc, Mapping) else doc
    if not isinstance(entries, list) or not entries:
        raise TargetError(f"{where} has no 'targets' list")
    targets = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        label = entry.get("name") if isinstance(entry, Mapping) else None
        tag = f"{where}: target {label!r}" if label else f"{where}: entry {i}"
        t = target_from_dict(entry, tag)
        if t.name in seen:
            raise TargetError(f"{where}: target {t.name!r} appears twice")
        seen.add(t.name)
        targets.append(t)
    return targets


def load_target_file(path: str | Path) -> Target:
    """A target from a JSON file (as written by :func:`write_target` / ``bnn calibrate``)."""
    doc = _read_json(Path(path), "target file")
    return target_from_dict(doc, f"target file {str(path)!r}")


def write_target(target: Target, path: str | Path) -> Path:
    """Write ``target`` as JSON atomically (temporary file + rename)."""
    return atomic_write_text(path, json.dumps(target.to_dict(), indent=1, allow_nan=False) + "\n")


def get_target(spec: str | Target, catalog: str | Path | None = None) -> Target:
    """Resolve a target given as a :class:`Target`, ``host``, a catalog name or a JSON file."""
    if isinstance(spec, Target):
        return spec
    if spec == "host":
        return detect_host()
    targets = load_catalog(catalog)
    by_name = {t.name: t for t in targets}
    if spec in by_name:
        return by_name[spec]
    p = Path(spec)
    if p.suffix == ".json" or p.exists():
        return load_target_file(p)
    raise TargetError(
        f"unknown target {spec!r}: not 'host', not a target file, and not in the catalog "
        f"(known: {', '.join(sorted(by_name))})"
    )


# --------------------------------------------------------------------------- host detection


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in info:
            info[key.strip()] = value.strip()
    return info


def host_frequency_hz() -> float:
    """Nominal clock of this CPU: cpufreq's maximum, else /proc/cpuinfo, else psutil."""
    try:
        khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()
        return float(khz) * 1e3
    except (OSError, ValueError):
        pass
    mhz = _cpuinfo().get("cpu MHz")
    if mhz:
        try:
            return float(mhz) * 1e6
        except ValueError:
            pass
    import psutil

    freq = psutil.cpu_freq()
    if freq is not None and (freq.max or freq.current):
        return float(freq.max or freq.current) * 1e6
    raise TargetError("cannot detect the host CPU frequency: write a target file instead")


def host_cache_bytes(level: int = 2) -> int | None:
    """Size of this CPU's cache of ``level`` (per core for L2), from sysfs; None if unknown."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for index in sorted(base.glob("index*")):
            if (index / "level").read_text().strip() != str(level):
                continue
            if (index / "type").read_text().strip() not in ("Unified", "Data"):
                continue
            size = (index / "size").read_text().strip().upper()
            mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1:], 1)
            return int(size.rstrip("KMG")) * mult
    except (OSError, ValueError):
        return None
    return None


def detect_host(cores: int | None = None) -> Target:
    """This machine as a target, with instruction-set ("datasheet") clock constants.

    Bus width 64: the ``bitpacked`` backend works on uint64 words. XNOR, POPCNT and the
    accumulating add are one clock each on x86-64 (``popcnt`` flag) and aarch64 scalar code
    uses ``CNT``+``ADDV`` (3 clocks); ``Speed_T`` = 1 clock per word (L1 hit). Float MAC and
    FLOP costs come from the widest SIMD the CPU reports (two FMA units). These are what an
    uncalibrated model knows; ``latlab bnn calibrate`` measures the real constants.
    """
    import psutil

    info = _cpuinfo()
    flags = set(info.get("flags", info.get("Features", "")).split())
    n = int(cores) if cores is not None else (os.cpu_count() or 1)
    freq = host_frequency_hz()
    if "avx512f" in flags:
        lanes = 16
    elif "avx2" in flags or "asimd" in flags:
        lanes = 8 if "avx2" in flags else 4
    else:
        lanes = 4
    popcount = 1.0 if "popcnt" in flags else 3.0
    model = info.get("model name") or platform.processor() or platform.machine()
    return Target(
        name="host",
        title=f"{model} ({n} core{'s' if n > 1 else ''})",
        kind="cpu",
        bus_width=64,
        memory_bytes=int(psutil.virtual_memory().total),
        speed_clocks=1.0,
        freq_hz=(freq,) * n,
        clocks_xnor=1.0,
        clocks_popcount=popcount,
        clocks_accumulate=1.0,
        clocks_mac=1.0 / (2 * lanes),
        clocks_flop=1.0 / lanes,
        source="detected: /proc/cpuinfo, cpufreq, psutil",
        notes=(
            "uncalibrated: instruction-set constants (x86-64 XOR/POPCNT/ADD 1 clock each, "
            f"L1 fetch 1 clock, {lanes}-lane FMA x2 for MACs); run 'latlab bnn calibrate'"
        ),
    )
